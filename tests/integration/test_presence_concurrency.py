"""Presence channels (Pusher dialect) under simultaneous joins: the member cap and the member
events are exact.

The app's ``$default`` handler (:func:`chalicelib.dialects.pusher.socket.on_message`) runs in
threads against a moto server that answers one request at a time (``serial_registry``: each
DynamoDB request atomic, as on DynamoDB); every frame the handler posts reaches a real HTTP
management API stand-in on 127.0.0.1 (``management_api``), which records it per connection.
"""
from __future__ import annotations

import json
import threading

import pytest

from chalicelib import settings
from chalicelib.dialects.pusher import socket
from chalicelib.protocol import pusher
from chalicelib.registry import connections, listing, presence, subscriptions, table
from tests.support.events import ttl_remove
from tests.support.websocket import aws_env, management_api, serial_registry  # noqa: F401

SECRET = "app-secret"


@pytest.fixture
def socket_layer(serial_registry, management_api, monkeypatch):
    monkeypatch.setenv("PUSHER_DIALECT", "true")
    settings.reset()
    return management_api


def register(connection_id):
    connections.register(connection_id, None, dialect="pusher")
    return connection_id


def subscribe_frame(connection_id, channel, user_id):
    socket_id = pusher.socket_id_for(connection_id)
    channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id}})
    auth = pusher.channel_signature(SECRET, socket_id, channel, channel_data)
    return {"requestContext": {"connectionId": connection_id, "routeKey": "$default"},
            "body": json.dumps({"event": "pusher:subscribe", "data": {
                "channel": channel, "auth": f"app-key:{auth}", "channel_data": channel_data}})}


def join_together(frames):
    """Run ``on_message`` for every frame at once (threads released by one barrier)."""
    barrier = threading.Barrier(len(frames))
    failures = []

    def run(raw):
        try:
            barrier.wait(timeout=30)
            socket.on_message(raw)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(raw,)) for raw in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures and not any(t.is_alive() for t in threads), failures


def data_of(frame):
    return json.loads(frame["data"])


def test_simultaneous_new_members_never_pass_the_cap(socket_layer, monkeypatch):
    monkeypatch.setenv("PUSHER_PRESENCE_MAX_MEMBERS", "5")
    settings.reset()
    room = "presence-capped"
    ids = [register(f"cap-{n:02d}=") for n in range(12)]
    join_together([subscribe_frame(cid, room, f"user-{n:02d}") for n, cid in enumerate(ids)])
    answers = {cid: socket_layer.frames(cid)[0] for cid in ids}
    admitted = [cid for cid, f in answers.items()
                if f["event"] == "pusher_internal:subscription_succeeded"]
    refused = [cid for cid, f in answers.items() if f["event"] == "pusher:subscription_error"]
    assert len(admitted) == 5 and len(refused) == 7, answers
    for cid in refused:
        error = data_of(answers[cid])
        assert (error["type"], error["status"]) == ("LimitReached", 4100), error
    assert len(presence.presence_members(room)) == 5
    assert presence.presence_count(room) == 5
    # the refused ones are not subscribed either
    assert sorted(subscriptions.subscribers_of_channel(room)) == sorted(admitted)


@pytest.mark.parametrize("names", [["u0", "u1"], ["u0", "u1", "u2", "u3"],
                                   ["u0", "u1", "u0", "u1", "u2"]],
                         ids=["two", "four", "two-connections-per-user"])
def test_each_of_simultaneous_joiners_learns_of_each_other_exactly_once(socket_layer, names):
    for round_ in range(3):
        room = f"presence-race-{len(names)}-{round_}"
        ids = [register(f"race{len(names)}-{round_}-{n}=") for n in range(len(names))]
        users = dict(zip(ids, names))
        join_together([subscribe_frame(cid, room, users[cid]) for cid in ids])
        for cid in ids:
            frames = socket_layer.frames(cid)
            assert frames[0]["event"] == "pusher_internal:subscription_succeeded", frames
            present = data_of(frames[0])["presence"]
            listed = set(present["ids"])
            assert users[cid] in listed and present["count"] == len(listed)
            added = [data_of(f)["user_id"] for f in frames[1:]
                     if f["event"] == "pusher_internal:member_added"]
            assert len(added) == len(set(added)), frames
            assert users[cid] not in added  # never told of its own user
            for other in ids:
                if users[other] == users[cid]:
                    continue
                heard = users[other] in added
                assert (users[other] in listed) != heard, (
                    f"round {round_}: {users[cid]} listed {sorted(listed)}, heard {added}, "
                    f"about {users[other]}")


def test_a_missed_decrement_never_locks_the_channel(socket_layer, monkeypatch):
    monkeypatch.setenv("PUSHER_PRESENCE_MAX_MEMBERS", "3")
    settings.reset()
    room = "presence-drift"
    first = register("drift-1=")
    socket.on_message(subscribe_frame(first, room, "one"))
    assert presence.presence_count(room) == 1
    # two decrements lost (a leave that died between its writes, a stream record dropped)
    table.call("update_item", TableName=table.name(),
                      Key={"connection_id": {"S": f"presence#{room}"}, "sk": {"S": "roster"}},
                      UpdateExpression="SET members = :n",
                      ExpressionAttributeValues={":n": {"N": "3"}})
    second = register("drift-2=")
    socket.on_message(subscribe_frame(second, room, "two"))
    answer = socket_layer.frames(second)[0]
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    assert sorted(data_of(answer)["presence"]["ids"]) == ["one", "two"]
    assert presence.presence_count(room) == 2


def test_a_count_too_low_is_corrected_by_the_next_join(socket_layer):
    room = "presence-low"
    for n in range(2):
        socket.on_message(subscribe_frame(register(f"low-{n}="), room, f"m{n}"))
    table.call("update_item", TableName=table.name(),
                      Key={"connection_id": {"S": f"presence#{room}"}, "sk": {"S": "roster"}},
                      UpdateExpression="SET members = :n",
                      ExpressionAttributeValues={":n": {"N": "0"}})
    socket.on_message(subscribe_frame(register("low-2="), room, "m2"))
    assert presence.presence_count(room) == 3


def test_a_ttl_delete_of_a_member_through_the_stream_lowers_the_count(socket_layer):
    room = "presence-ttl-count"
    for n in range(3):
        socket.on_message(subscribe_frame(register(f"ttl-{n}="), room, f"t{n}"))
    assert presence.presence_count(room) == 3
    key = {"connection_id": {"S": f"presence#{room}"}, "sk": {"S": "member#t1"}}
    old = table.call("delete_item", TableName=table.name(), Key=key,
                            ReturnValues="ALL_OLD")["Attributes"]  # what TTL does
    record = ttl_remove(old)
    assert socket.on_registry_stream({"Records": [record]}) == {"batchItemFailures": []}
    assert presence.presence_count(room) == 2
    # a record delivered twice counts once
    socket.on_registry_stream({"Records": [record]})
    assert presence.presence_count(room) == 2
    # the roster item itself expiring is no member
    roster = {"connection_id": {"S": f"presence#{room}"}, "sk": {"S": "roster"},
              "seq": {"N": "3"}, "members": {"N": "2"}}
    socket.on_registry_stream({"Records": [ttl_remove(roster)]})
    assert sorted(presence.presence_members(room)) == ["t0", "t2"]


def test_the_roster_is_never_listed_as_a_member(socket_layer):
    room = "presence-roster"
    socket.on_message(subscribe_frame(register("roster-1="), room, "solo"))
    assert presence.presence_members(room) == {"solo": {"name": "solo"}}
    assert listing.channel_user_ids(room) == ["solo"]


def test_leaving_lowers_the_count_with_the_members_last_connection(socket_layer):
    room = "presence-leave"
    first, second = register("leave-1="), register("leave-2=")
    for cid in (first, second):
        socket.on_message(subscribe_frame(cid, room, "same"))
    socket.on_message(subscribe_frame(register("leave-3="), room, "other"))
    assert presence.presence_count(room) == 2

    def unsubscribe(cid):
        socket.on_message({"requestContext": {"connectionId": cid},
                                  "body": json.dumps({"event": "pusher:unsubscribe",
                                                      "data": {"channel": room}})})

    unsubscribe(first)
    assert presence.presence_count(room) == 2
    assert sorted(presence.presence_members(room)) == ["other", "same"]
    unsubscribe(second)
    assert presence.presence_count(room) == 1
    assert sorted(presence.presence_members(room)) == ["other"]
    removed = [data_of(f) for f in socket_layer.frames("leave-3=")
               if f["event"] == "pusher_internal:member_removed"]
    assert removed == [{"user_id": "same"}]
    unsubscribe(second)  # again: nothing left to leave
    assert presence.presence_count(room) == 1


def test_member_added_waits_for_the_earlier_connections_answer(socket_layer):
    """pusher-js resets its member list on subscription_succeeded, so a member_added that
    overtakes the answer is lost: an unanswered earlier connection gets it queued, and takes
    it when its answer is marked — or directly when the mark came first."""
    room = "presence-queue"
    a, b, c = (connections.register(f"queue-{n}=", None, dialect="pusher") for n in "abc")
    first = presence.presence_enter(room, "ua", {"n": "a"}, a)
    second = presence.presence_enter(room, "ub", {"n": "b"}, b)
    assert (first.first, first.seq, second.seq) == (True, 1, 2)
    assert list(second.members) == ["ua", "ub"] and list(first.members) == ["ua"]
    assert second.announce_to == () and second.hold_for == (("ua", "queue-a="),)
    assert presence.presence_hold(room, "ub", second.hold_for) == []  # a: not answered
    assert presence.presence_answered(room, "ua", "queue-a=") == {"ub": {"n": "b"}}
    assert presence.presence_answered(room, "ua", "queue-a=") == {}  # taken once
    third = presence.presence_enter(room, "uc", {"n": "c"}, c)
    assert third.announce_to == ("queue-a=",) and third.hold_for == (("ub", "queue-b="),)
    assert presence.presence_answered(room, "ub", "queue-b=") == {}  # b answers first
    assert presence.presence_hold(room, "uc", third.hold_for) == ["queue-b="]
    # a connection that left is no longer queued for
    d = connections.register("queue-d=", None, dialect="pusher")
    fourth = presence.presence_enter(room, "ud", {}, d)
    assert ("uc", "queue-c=") in fourth.hold_for
    assert presence.presence_leave(room, "uc", "queue-c=") is True
    assert presence.presence_hold(room, "ud", fourth.hold_for) == []
    assert presence.presence_count(room) == 3


def test_leaves_and_joins_at_once_keep_the_count_exact(socket_layer, monkeypatch):
    monkeypatch.setenv("PUSHER_PRESENCE_MAX_MEMBERS", "3")
    settings.reset()
    room = "presence-churn"
    staying = [register(f"churn-{n}=") for n in range(3)]
    for n, cid in enumerate(staying):
        socket.on_message(subscribe_frame(cid, room, f"old{n}"))
    leave = {"requestContext": {"connectionId": staying[0]},
             "body": json.dumps({"event": "pusher:unsubscribe", "data": {"channel": room}})}
    joiners = [register(f"churn-new-{n}=") for n in range(4)]
    join_together([leave] + [subscribe_frame(cid, room, f"new{n}")
                             for n, cid in enumerate(joiners)])
    admitted = [cid for cid in joiners if socket_layer.frames(cid)[0]["event"]
                == "pusher_internal:subscription_succeeded"]
    members = presence.presence_members(room)
    assert len(admitted) <= 1 and "old0" not in members
    assert len(members) == 2 + len(admitted) == presence.presence_count(room)

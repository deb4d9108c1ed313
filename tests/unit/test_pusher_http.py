"""Pusher's HTTP API (chalicelib.dialects.pusher.http_api) through Chalice's test client: requests signed
by the real Python ``pusher`` library, a moto registry and a real management API on 127.0.0.1
that records what each connection receives. Closing connections (terminate_connections) is
tested against the local gateway in tests/integration/test_pusher_http_gateway.py and end to
end with ``chalice local`` in tests/e2e/test_pusher_http_e2e.py."""
from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace

import pusher
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from chalicelib.dialects.pusher import http_api
from chalicelib.protocol import pusher as pusher_protocol
from chalicelib.registry import connections, listing, occupancy, subscriptions, table
from chalicelib.auth.principal import Principal
from tests.conftest import PUSHER_ENV
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

APP_ID, KEY, SECRET = PUSHER_ENV["PUSHER_APP_ID"], PUSHER_ENV["PUSHER_KEY"], \
    PUSHER_ENV["PUSHER_SECRET"]
ALICE = Principal(sub="alice", issuer="https://issuer.example")
BOB = Principal(sub="bob", issuer="https://issuer.example")


def library(secret=SECRET, key=KEY, app_id=APP_ID):
    """The real pusher library; its requests are built (and signed) but sent by the test."""
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=9,
                         ssl=False)


def send(client, request, *, path=None, query=None, body=None, headers=None):
    """Send a ``pusher.http.Request`` through Chalice's test client (optionally altered)."""
    url = f"{path or request.path}?{request.query_string if query is None else query}"
    answer = client.http.request(request.method, url,
                                 headers=headers if headers is not None else request.headers,
                                 body=request.body if body is None else body)
    return answer.status_code, (json.loads(answer.body) if answer.body else None)


def call(client, method, *args, lib=None, **kwargs):
    request = getattr((lib or library())._pusher_client, method).make_request(*args, **kwargs)
    return send(client, request)


@pytest.fixture
def api(registry, management_api, client):
    return client, management_api


def pusher_connection(connection_id, *channels, user=None):
    connection = connections.register(connection_id, user, dialect=connections.PUSHER)
    for name in channels:
        subscriptions.subscribe(connection, name)
        connection = connections.get_connection(connection_id)
    return connection


def native_connection(connection_id, principal, *channels):
    connection = connections.register(connection_id, principal)
    for name in channels:
        subscriptions.subscribe(connection, name)
        connection = connections.get_connection(connection_id)
    return connection


# --- signature checks (pure) ------------------------------------------------------------------

def signed_query(method="POST", path="/apps/100001/events", body=b'{"a":1}', now=1700000000,
                 secret=SECRET, **extra):
    query = {"auth_key": KEY, "auth_timestamp": str(now), "auth_version": "1.0",
             "body_md5": hashlib.md5(body).hexdigest(), **extra}
    query["auth_signature"] = http_api.sign(
        secret, http_api.string_to_sign(method, path, query))
    return query


def verify(query, *, method="POST", paths=("/apps/100001/events",), body=b'{"a":1}',
           now=1700000000):
    http_api.verify_request(method, paths, query, body, KEY, SECRET, now=now)


def test_the_libraries_signature_is_accepted():
    request = library()._pusher_client.trigger.make_request(["news"], "greet", {"n": 1})
    query = dict(request.query_params)
    http_api.verify_request("POST", [request.path], query, request.body, KEY, SECRET)


def test_pushers_published_example_signature():
    # Pusher docs, "Server API: authenticating requests": the worked example
    query = {"auth_key": "278d425bdf160c739803", "auth_timestamp": "1353088179",
             "auth_version": "1.0", "body_md5": "ec365a775a4cd0599faeb73354201b6f",
             "auth_signature":
                 "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"}
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    http_api.verify_request("POST", ["/apps/3/events"], query, body,
                               "278d425bdf160c739803", "7ad3773142a6692b25b8", now=1353088179)


@pytest.mark.parametrize("change, reason", [
    ({"auth_key": "other"}, "Unknown auth_key"),
    ({"auth_timestamp": str(1700000000 - 601)}, "Timestamp expired"),
    ({"auth_timestamp": str(1700000000 + 601)}, "Timestamp expired"),
    ({"auth_timestamp": "soon"}, "epoch seconds"),
    ({"auth_version": "2.0"}, "auth_version"),
    ({"body_md5": hashlib.md5(b"other").hexdigest()}, "body_md5"),
])
def test_each_part_of_the_signature_is_checked(change, reason):
    query = signed_query(**change)  # signed after the change: only the named rule fails
    with pytest.raises(http_api.SignatureRefused, match=reason):
        verify(query)


@pytest.mark.parametrize("missing", ["auth_key", "auth_timestamp", "auth_version",
                                     "auth_signature", "body_md5"])
def test_missing_parameters_are_refused(missing):
    query = signed_query()
    del query[missing]
    with pytest.raises(http_api.SignatureRefused, match="Missing"):
        verify(query)


def test_the_timestamp_window_is_600_seconds_both_ways():
    for skew in (-600, 600):
        verify(signed_query(now=1700000000 + skew))


@pytest.mark.parametrize("tamper", ["method", "path", "query", "body", "secret"])
def test_any_change_after_signing_breaks_the_signature(tamper):
    query = signed_query(secret="another-secret" if tamper == "secret" else SECRET)
    kwargs = {}
    if tamper == "method":
        kwargs["method"] = "GET"
    elif tamper == "path":
        kwargs["paths"] = ("/apps/100001/batch_events",)
    elif tamper == "query":
        query["info"] = "subscription_count"
    elif tamper == "body":
        kwargs["body"] = b'{"a":2}'
        query["body_md5"] = hashlib.md5(b'{"a":2}').hexdigest()
    with pytest.raises(http_api.SignatureRefused, match="Invalid signature"):
        verify(query, **kwargs)


def test_query_keys_are_lowercased_before_signing():
    query = signed_query(extra="x")
    query["EXTRA"] = query.pop("extra")
    verify(http_api.single_values({k: [v] for k, v in query.items()}))


def test_repeated_query_parameters_are_a_400():
    from chalicelib.errors import BadRequest

    with pytest.raises(BadRequest):
        http_api.single_values({"info": ["a", "b"]})
    with pytest.raises(BadRequest):
        http_api.single_values({"Info": ["a"], "info": ["b"]})


def test_a_stage_prefixed_path_and_the_route_path_both_verify():
    """On the execute-api URL the path carries the stage (/prod/apps/...); a client may sign
    it (it sent it) or the bare /apps/... path (it knows nothing of the prefix)."""
    request = SimpleNamespace(
        context={"path": "/prod/apps/100001/channels/news",
                 "resourcePath": "/apps/{app_id}/channels/{channel_name}"},
        uri_params={"app_id": "100001", "channel_name": "news"})
    paths = http_api.request_paths(request)
    assert paths == ["/prod/apps/100001/channels/news", "/apps/100001/channels/news"]
    for signed_path in paths:
        verify(signed_query(method="GET", path=signed_path, body=b""), method="GET",
               paths=paths, body=b"")
    with pytest.raises(http_api.SignatureRefused):
        verify(signed_query(method="GET", path="/dev/apps/100001/channels/news", body=b""),
               method="GET", paths=paths, body=b"")


# --- routes: signatures and errors ------------------------------------------------------------

def test_a_bad_signature_is_a_401_naming_the_reason(api):
    client, _ = api
    status, body = call(client, "trigger", ["news"], "greet", "x", lib=library(secret="wrong"))
    assert status == 401
    assert body["error"] == "unauthorized" and "Invalid signature" in body["message"]
    assert "wrong" not in body["message"] and SECRET not in body["message"]


def test_another_app_id_is_a_404(api):
    client, _ = api
    status, body = call(client, "trigger", ["news"], "greet", "x", lib=library(app_id="7"))
    assert status == 404 and "7" in body["message"]


def test_an_unsigned_request_is_a_401(api):
    client, _ = api
    answer = client.http.post(f"/apps/{APP_ID}/events",
                              headers={"Content-Type": "application/json"},
                              body=json.dumps({"name": "e", "data": "x", "channels": ["a"]}))
    assert answer.status_code == 401 and "Missing" in json.loads(answer.body)["message"]


@pytest.mark.parametrize("body, status, words", [
    ({"name": "e", "data": "x"}, 400, "channels"),
    ({"name": "e", "data": "x", "channels": []}, 400, "channels"),
    ({"name": "e", "data": "x", "channels": [f"c{i}" for i in range(101)]}, 400, "100"),
    ({"name": "e", "data": "x", "channels": ["bad channel"]}, 400, "channel"),
    ({"name": "e" * 201, "data": "x", "channels": ["a"]}, 400, "200"),
    ({"name": "", "data": "x", "channels": ["a"]}, 400, "name"),
    ({"name": "e", "data": {"an": "object"}, "channels": ["a"]}, 400, "string"),
    ({"name": "e", "data": "x", "channels": ["a"], "socket_id": "abc"}, 400, "socket_id"),
    ({"name": "e", "data": "x", "channels": ["a"], "info": "colour"}, 400, "info"),
    ({"name": "e", "data": "x", "channel": "a", "channels": ["b"]}, 400, "not both"),
    ({"name": "e", "data": "x" * 140000, "channels": ["a"]}, 413, "bytes"),
    ([1, 2], 400, "object"),
])
def test_bad_events_get_pushers_statuses(api, body, status, words):
    client, _ = api
    request = library()._pusher_client.trigger.make_request(["a"], "e", "x")
    raw = json.dumps(body).encode()
    request.params, request.body, request.query_params = body, raw, {}
    request._generate_auth()  # re-sign the altered body, as a buggy library would
    got, answer = send(client, request)
    assert got == status, answer
    assert words in answer["message"]


def test_a_body_that_is_not_strict_json_is_a_400(api):
    client, _ = api
    request = library()._pusher_client.trigger.make_request(["a"], "e", "x")
    request.body, request.query_params = b'{"name": NaN}', {}
    request._generate_auth()
    status, answer = send(client, request)
    assert status == 400 and "JSON" in answer["message"]


def test_registry_down_is_a_503_not_a_500(api, monkeypatch):
    client, _ = api
    monkeypatch.setenv("CONNECTIONS_TABLE", "no-such-table")
    from chalicelib import settings

    settings.reset()
    status, answer = call(client, "trigger", ["news"], "greet", "x")
    assert status == 503 and answer["error"] == "registry_unavailable"


# --- events -----------------------------------------------------------------------------------

def test_trigger_reaches_both_dialects(api):
    client, mgmt = api
    pusher_connection("p1=", "news")
    native_connection("n1=", ALICE, "news")
    status, body = call(client, "trigger", ["news"], "greet", {"n": 1})
    assert (status, body) == (200, {})
    assert mgmt.frames("p1=") == [{"event": "greet", "channel": "news", "data": '{"n": 1}'}]
    assert mgmt.frames("n1=") == [{"type": "event", "channel": "news", "event": "greet",
                                   "data": '{"n": 1}', "id": 1}]


def test_trigger_to_several_channels_and_socket_id_exclusion(api):
    client, mgmt = api
    pusher_connection("p1=", "a", "b")
    pusher_connection("p2=", "b")
    sender = pusher_protocol.socket_id_for("p1=")
    status, _ = call(client, "trigger", ["a", "b"], "greet", "hi", socket_id=sender)
    assert status == 200
    assert mgmt.frames("p1=") == []
    assert mgmt.frames("p2=") == [{"event": "greet", "channel": "b", "data": "hi"}]


def test_a_foreign_socket_id_excludes_nobody(api):
    client, mgmt = api
    pusher_connection("p1=", "a")
    status, _ = call(client, "trigger", ["a"], "greet", "hi", socket_id="123.456")
    assert status == 200 and len(mgmt.frames("p1=")) == 1


def test_trigger_info_gives_counts_per_channel(api):
    client, _ = api
    native_connection("n1=", ALICE, "presence-room", "news")
    native_connection("n2=", ALICE, "presence-room")
    native_connection("n3=", BOB, "presence-room")
    request = library()._pusher_client.trigger.make_request(["presence-room", "news"], "e",
                                                            "x")
    body = dict(request.params, info="subscription_count,user_count")
    request.body, request.query_params = json.dumps(body).encode(), {}
    request._generate_auth()
    status, answer = send(client, request)
    assert status == 200
    assert answer == {"channels": {"presence-room": {"subscription_count": 3, "user_count": 2},
                                   "news": {"subscription_count": 1}}}


def test_send_to_user_reaches_every_connection_of_the_user(api):
    client, mgmt = api
    native_connection("n1=", ALICE)
    native_connection("n2=", BOB)
    status, _ = library_call_send_to_user(client, "alice", "note", {"x": 1})
    assert status == 200
    assert mgmt.frames("n1=") == [{"type": "event", "event": "note", "data": '{"x": 1}',
                                   "id": 1}]
    assert mgmt.frames("n2=") == []


def library_call_send_to_user(client, user_id, event, data):
    lib = library()
    request = lib._pusher_client.trigger.make_request([f"#server-to-user-{user_id}"], event,
                                                      data)
    return send(client, request)


def test_private_encrypted_payloads_are_relayed_as_they_are(api):
    client, mgmt = api
    pusher_connection("p1=", "private-encrypted-vault")
    lib = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host="127.0.0.1", port=9,
                        ssl=False, encryption_master_key_base64="MDEyMzQ1Njc4OTAxMjM0NTY3"
                                                                "ODkwMTIzNDU2Nzg5MDE=")
    request = lib._pusher_client.trigger.make_request(["private-encrypted-vault"], "e",
                                                      {"secret": 1})
    sent = json.loads(request.body)["data"]
    assert send(client, request)[0] == 200
    (frame,) = mgmt.frames("p1=")
    assert frame["data"] == sent and "ciphertext" in json.loads(sent)


def test_batch_events(api):
    client, mgmt = api
    pusher_connection("p1=", "a")
    pusher_connection("p2=", "b")
    status, body = call(client, "trigger_batch", [
        {"channel": "a", "name": "one", "data": "1"},
        {"channel": "b", "name": "two", "data": {"n": 2},
         "socket_id": pusher_protocol.socket_id_for("p1=")}])
    assert (status, body) == (200, {})
    assert mgmt.frames("p1=") == [{"event": "one", "channel": "a", "data": "1"}]
    assert mgmt.frames("p2=") == [{"event": "two", "channel": "b", "data": '{"n": 2}'}]


def test_batch_info_and_limits(api):
    client, mgmt = api
    pusher_connection("p1=", "a")
    status, body = call(client, "trigger_batch", [
        {"channel": "a", "name": "one", "data": "1", "info": "subscription_count"},
        {"channel": "b", "name": "two", "data": "2"}])
    assert (status, body) == (200, {"batch": [{"subscription_count": 1}, {}]})
    status, body = call(client, "trigger_batch",
                        [{"channel": "a", "name": "e", "data": "x"}] * 11)
    assert status == 400 and "10" in body["message"]
    # one bad event refuses the batch before anything is sent
    before = len(mgmt.frames("p1="))
    status, body = call(client, "trigger_batch", [
        {"channel": "a", "name": "ok", "data": "1"},
        {"channel": "a", "name": "e" * 201, "data": "1"}], already_encoded=True)
    assert status == 400 and len(mgmt.frames("p1=")) == before


# --- channel queries --------------------------------------------------------------------------

def test_channel_info(api):
    client, _ = api
    native_connection("n1=", ALICE, "presence-room")
    native_connection("n2=", ALICE, "presence-room")
    pusher_connection("p1=", "news")
    assert call(client, "channel_info", "news") == (200, {"occupied": True})
    assert call(client, "channel_info", "empty", ["subscription_count"]) == \
        (200, {"occupied": False, "subscription_count": 0})
    assert call(client, "channel_info", "presence-room",
                ["subscription_count", "user_count"]) == \
        (200, {"occupied": True, "subscription_count": 2, "user_count": 1})
    status, body = call(client, "channel_info", "news", ["user_count"])
    assert status == 400 and "presence" in body["message"]


def test_users_of_a_presence_channel(api):
    client, _ = api
    native_connection("n1=", ALICE, "presence-room")
    native_connection("n2=", BOB, "presence-room")
    native_connection("n3=", BOB, "presence-room")
    assert call(client, "users_info", "presence-room") == \
        (200, {"users": [{"id": "alice"}, {"id": "bob"}]})
    status, body = call(client, "users_info", "news")
    assert status == 400 and "presence" in body["message"]


def test_channels_lists_occupied_channels_only(api):
    client, _ = api
    native_connection("n1=", ALICE, "presence-room", "news")
    pusher_connection("p1=", "news", "sports")
    assert call(client, "channels_info") == \
        (200, {"channels": {"news": {}, "presence-room": {}, "sports": {}}})
    subscriptions.unsubscribe("p1=", "sports")
    connections.remove_connection("n1=")
    assert call(client, "channels_info", None, ["subscription_count"]) == \
        (200, {"channels": {"news": {"subscription_count": 1}}})
    connections.remove_connection("p1=")
    assert call(client, "channels_info") == (200, {"channels": {}})


def test_channels_filter_by_prefix_and_user_count(api):
    client, _ = api
    native_connection("n1=", ALICE, "presence-a", "presence-b", "private-x")
    native_connection("n2=", BOB, "presence-a")
    assert call(client, "channels_info", "presence-", ["user_count"]) == \
        (200, {"channels": {"presence-a": {"user_count": 2}, "presence-b": {"user_count": 1}}})
    assert call(client, "channels_info", "private-") == (200, {"channels": {"private-x": {}}})
    status, body = call(client, "channels_info", None, ["user_count"])
    assert status == 400 and "presence" in body["message"]


def test_occupancy_items_leave_with_the_last_subscriber(api):
    native_connection("n1=", ALICE, "news")
    native_connection("n2=", BOB, "news", "sports")
    assert listing.occupied_channels() == ["news", "sports"]
    connections.remove_connection("n1=")
    assert listing.occupied_channels() == ["news", "sports"]
    subscriptions.unsubscribe("n2=", "news")
    assert listing.occupied_channels() == ["sports"]
    connections.remove_connection("n2=")
    assert listing.occupied_channels() == []
    assert table.dynamodb().scan(TableName=table.name())["Items"] == []


def test_a_stale_occupancy_item_is_never_listed(api):
    """An occupancy item left behind (a failure between two writes) lists nothing."""
    client, _ = api
    occupancy.mark_occupied("ghost")
    assert listing.occupied_channels() == ["ghost"]
    assert call(client, "channels_info") == (200, {"channels": {}})


def test_expired_subscriptions_do_not_count(api):
    native_connection("n1=", ALICE, "news")
    later = time.time() + table.MAX_CONNECTION_SECONDS + table.TTL_MARGIN_SECONDS + 5
    assert listing.count_subscribers("news") == 1
    assert listing.count_subscribers("news", now=later) == 0
    assert listing.occupied_channels(now=later) == []


# --- never a 5xx ------------------------------------------------------------------------------


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
_event_like = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.text(max_size=30), _json_values),
    "data": st.one_of(st.text(max_size=30), _json_values),
    "channels": st.one_of(st.lists(st.text(max_size=12), max_size=4), _json_values),
    "channel": st.one_of(st.text(max_size=12), _json_values),
    "socket_id": st.one_of(st.text(max_size=12), _json_values),
    "info": st.one_of(st.text(max_size=30), _json_values)})


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_event_like, st.fixed_dictionaries({"batch": st.lists(_event_like,
                                                                             max_size=3)}),
                      _json_values),
       batch=st.booleans())
def test_signed_bodies_of_any_shape_never_get_a_5xx(api, body, batch):
    client, _ = api
    method = "trigger_batch" if batch else "trigger"
    request = getattr(library()._pusher_client, method).make_request(
        *([[]] if batch else [["a"], "e", "x"]))
    request.body, request.query_params = json.dumps(body).encode(), {}
    request._generate_auth()
    status, answer = send(client, request)
    assert status in (200, 400, 413), answer
    if status != 200:
        assert answer["error"] and answer["message"]


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["auth_key", "auth_timestamp", "auth_version",
                                              "body_md5", "auth_signature", "info",
                                              "filter_by_prefix", "x"]),
                             st.text(max_size=20), max_size=6),
       channel=st.text(alphabet="abc-=@,.;_%~ ", min_size=1, max_size=10))
def test_unsigned_queries_of_any_shape_never_get_a_5xx(api, query, channel):
    from urllib.parse import quote, urlencode

    client, _ = api
    answer = client.http.get(f"/apps/{APP_ID}/channels/{quote(channel, safe='')}?"
                             f"{urlencode(query)}")
    assert answer.status_code in (400, 401, 404), answer.body

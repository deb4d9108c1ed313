"""chalicelib.protocol.pusher: socket ids, handshake checks, frames and signatures (pure)."""
from __future__ import annotations

import base64
import json
import os

import pusher
import pytest
from hypothesis import example, given, strategies as st

from chalicelib.protocol import pusher as protocol


@pytest.mark.parametrize("connection_id", [
    "L0SM9cOFvHcCIhw=", "AAAAAAAAAAAAAAA=", "////////////////", "conn-1=", "a", "é+/=x"])
def test_socket_ids_have_pushers_form_and_map_back(connection_id):
    socket_id = protocol.socket_id_for(connection_id)
    assert protocol.SOCKET_ID_RE.fullmatch(socket_id)
    assert protocol.connection_id_for(socket_id) == connection_id


@example("0" + "\U00010000" * 11 + "0" + "\U00010000" * 11 + "0" + "\U00010000" * 11)
@given(st.text(min_size=1, max_size=64))
def test_every_connection_id_round_trips(connection_id):
    try:
        size = len(connection_id.encode("utf-8"))
    except UnicodeEncodeError:
        return  # API Gateway ids are ASCII; lone surrogates cannot be sent anyway
    try:
        socket_id = protocol.socket_id_for(connection_id)
    except ValueError:  # found by this test: 135 bytes made a socket id of 327 characters
        assert size > 64
        return
    assert len(socket_id) <= protocol.MAX_SOCKET_ID_LENGTH
    assert protocol.connection_id_for(socket_id) == connection_id


def test_api_gateway_ids_give_short_socket_ids():
    for _ in range(200):
        connection_id = base64.b64encode(os.urandom(11)).decode()
        socket_id = protocol.socket_id_for(connection_id)
        first, second = socket_id.split(".")
        assert len(first) <= 16 and len(second) <= 17  # fits /pusher/auth's 32 digits


@pytest.mark.parametrize("socket_id", ["", "1", "1.", ".1", "a.b", "123.456", "1.1" * 100, 7])
def test_foreign_socket_ids_are_refused(socket_id):
    with pytest.raises(ValueError):
        protocol.connection_id_for(socket_id)


@pytest.mark.parametrize("query, code", [
    (None, 4008), ({}, 4008), ({"protocol": ""}, 4008), ({"protocol": "x7"}, 4006),
    ({"protocol": "7.0"}, 4006), ({"protocol": "3"}, 4007), ({"protocol": "1"}, 4007),
    ({"protocol": "0"}, 4007), ({"protocol": "8"}, 4007), ({"protocol": "999999"}, 4007),
    ({"protocol": "7", "app_key": "other"}, 4001)])
def test_handshake_errors_use_pushers_codes(query, code):
    assert protocol.handshake_error(query, "app-key").code == code


@pytest.mark.parametrize("query", [
    {"protocol": "7"}, {"protocol": "7", "app_key": "app-key", "client": "js",
                        "version": "8.6.0"},
    # the versions Pusher still serves (its protocol doc: only 1-3 are not); pysher sends 6
    {"protocol": "4"}, {"protocol": "5"}, {"protocol": "06"},
    {"protocol": "6", "client": "pysher", "version": "1.0.8", "app_key": "app-key"}])
def test_good_handshakes_pass(query):
    assert protocol.handshake_error(query, "app-key") is None


def test_server_frames_carry_data_as_a_json_string():
    frame = json.loads(protocol.connection_established("1.2"))
    assert frame["event"] == "pusher:connection_established"
    assert json.loads(frame["data"]) == {"socket_id": "1.2", "activity_timeout": 120}
    assert json.loads(protocol.event_frame("e", {"a": 1}, "c")) == {
        "event": "e", "channel": "c", "data": '{"a":1}'}
    assert json.loads(protocol.event_frame("e", "as is", "c"))["data"] == "as is"
    error = json.loads(protocol.subscription_error("private-x", 401, "no"))
    assert error["channel"] == "private-x"
    assert json.loads(error["data"]) == {"type": "AuthError", "error": "no", "status": 401}


@pytest.mark.parametrize("text", ["", "x", "[]", "{}", '{"event": 3}', '{"event": "a", '
                                  '"channel": 1}', '{"event": "a", "event": "b"}', "NaN"])
def test_bad_client_messages_are_protocol_errors(text):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_message(text)


def test_client_messages_are_read_with_object_or_string_data():
    assert protocol.parse_message('{"event":"pusher:subscribe","data":{"channel":"a"}}') == (
        "pusher:subscribe", {"channel": "a"}, None)
    assert protocol.parse_message(
        '{"event":"client-x","channel":"private-a","data":"{\\"k\\":1}"}') == (
        "client-x", {"k": 1}, "private-a")


def test_signatures_match_the_pusher_library():
    client = pusher.Pusher(app_id="1", key="app-key", secret="app-secret")
    auth = client.authenticate(channel="private-x", socket_id="123.456")["auth"]
    assert protocol.auth_valid(auth, "app-key", "app-secret", "123.456", "private-x")
    member = json.dumps({"user_id": "alice"})
    presence = client.authenticate(channel="presence-x", socket_id="1.2",
                                   custom_data={"user_id": "alice"})
    assert protocol.auth_valid(presence["auth"], "app-key", "app-secret", "1.2", "presence-x",
                               presence["channel_data"])
    assert not protocol.auth_valid(presence["auth"], "app-key", "app-secret", "1.2",
                                   "presence-x", member + " ")


@pytest.mark.parametrize("auth", [None, 3, "", "app-key", "other-key:" + "0" * 64,
                                  "app-key:" + "0" * 64, "app-key:" + "é" * 64])
def test_wrong_auth_values_are_refused(auth):
    assert not protocol.auth_valid(auth, "app-key", "app-secret", "1.2", "private-x")

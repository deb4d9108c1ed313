"""Pusher routes through Chalice's test client, with real tokens from the dev issuer.

Request shapes are the ones pusher-js 8.x and pusher-js-auth 4.x send. Signatures are checked
independently here (HMAC-SHA256 as Pusher documents it, "Authentication and authorization
signatures"), so a wrong use of the library would show.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from urllib.parse import quote

import pytest

from chalicelib import channels
from chalicelib.dialects.pusher import auth
from chalicelib.delivery import webhooks
from chalicelib.auth.principal import Principal

FORM = "application/x-www-form-urlencoded"
KEY, SECRET = "app-key", "app-secret"
MASTER_KEY = bytes(range(32))
JSONP_RE = re.compile(r"/\*\*/(?P<cb>Pusher\.auth_callbacks\['\d+'\])\((?P<json>.*)\);", re.S)


def signature(string_to_sign: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def token(dev_issuer):
    return dev_issuer.mint("alice", name="Alice", email="alice@example.com")


@pytest.fixture
def post(client, token):
    """POST like pusher-js: form body, token in the Authorization header."""
    def send(path, body, headers=None, auth=True, content_type=FORM):
        hdrs = {"Content-Type": content_type}
        if auth:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        return client.http.post(path, headers=hdrs, body=body)
    return send


def body_json(response):
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


# --- private ------------------------------------------------------------------------------------

def test_pusher_js_private_request_is_signed(post):
    response = post("/pusher/auth", "socket_id=123.456&channel_name=private-user-alice")
    assert response.status_code == 200
    assert body_json(response) == {
        "auth": f"{KEY}:{signature('123.456:private-user-alice')}"}


def test_published_private_channel_example(client, dev_issuer, monkeypatch):
    """Pusher docs, "Authentication and authorization signatures", worked example."""
    monkeypatch.setenv("PUSHER_KEY", "278d425bdf160c739803")
    monkeypatch.setenv("PUSHER_SECRET", "7ad3773142a6692b25b8")
    rule = channels.rule("private-foobar", lambda principal: True)
    try:
        response = client.http.post(
            "/pusher/auth", body="socket_id=1234.1234&channel_name=private-foobar",
            headers={"Content-Type": FORM,
                     "Authorization": f"Bearer {dev_issuer.mint('someone')}"})
    finally:
        channels.RULES.remove(rule)
    assert response.status_code == 200
    assert body_json(response) == {"auth": "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662"
                                           "e34fe8c25bba48f5369f135bf843651c3a4"}


def test_pusher_js_extra_params_are_ignored(post):
    body = "socket_id=1.2&channel_name=private-user-alice&csrf=abc&foo%20bar=baz"
    response = post("/pusher/auth", body)
    assert body_json(response)["auth"] == f"{KEY}:{signature('1.2:private-user-alice')}"


def test_json_bodies_are_accepted(post):
    response = post("/pusher/auth", json.dumps({"socket_id": "1.2",
                                                "channel_name": "private-user-alice"}),
                    content_type="application/json")
    assert response.status_code == 200
    assert body_json(response)["auth"] == f"{KEY}:{signature('1.2:private-user-alice')}"


def test_someone_elses_channel_is_403(post):
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-bob")
    assert response.status_code == 403
    assert body_json(response) == {"error": "forbidden",
                                   "message": "Not allowed to join this channel"}


def test_unruled_private_channel_is_403(post):
    assert post("/pusher/auth", "socket_id=1.2&channel_name=private-admin").status_code == 403


# --- presence -----------------------------------------------------------------------------------

def test_presence_signs_the_member_it_returns(post):
    response = post("/pusher/auth", "socket_id=1.2&channel_name=presence-lobby")
    answer = body_json(response)
    assert json.loads(answer["channel_data"]) == {"user_id": "alice",
                                                  "user_info": {"name": "Alice"}}
    assert answer["auth"] == f"{KEY}:{signature('1.2:presence-lobby:' + answer['channel_data'])}"


def test_presence_user_info_claims_are_configurable(post, monkeypatch):
    monkeypatch.setenv("PUSHER_PRESENCE_USER_INFO_CLAIMS", "email,name,picture")
    answer = body_json(post("/pusher/auth", "socket_id=1.2&channel_name=presence-lobby"))
    assert json.loads(answer["channel_data"])["user_info"] == {
        "email": "alice@example.com", "name": "Alice"}


def test_presence_user_info_stays_within_1kb(client, dev_issuer, monkeypatch):
    tok = dev_issuer.mint("bob", name="N" * 2000, email="bob@example.com")
    monkeypatch.setenv("PUSHER_PRESENCE_USER_INFO_CLAIMS", "name,email")
    response = client.http.post("/pusher/auth", body="socket_id=1.2&channel_name=presence-x",
                                headers={"Content-Type": FORM, "Authorization": tok})
    member = json.loads(body_json(response)["channel_data"])
    assert member == {"user_id": "bob", "user_info": {"email": "bob@example.com"}}


def test_user_info_keeps_claims_in_order_within_the_limit():
    principal = Principal(sub="s", issuer="i",
                          claims={"name": "n" * 600, "email": "e" * 600, "groups": ["g"]})
    info = auth.user_info(principal, ("name", "email", "groups"))
    assert info == {"name": "n" * 600, "groups": ["g"]}
    assert len(json.dumps(info, separators=(",", ":")).encode()) <= 1024


# --- private-encrypted --------------------------------------------------------------------------

def test_encrypted_channel_gets_a_base64_shared_secret(post, monkeypatch):
    monkeypatch.setenv("PUSHER_ENCRYPTION_MASTER_KEY_BASE64", base64.b64encode(MASTER_KEY).decode())
    name = "private-encrypted-user-alice"
    answer = body_json(post("/pusher/auth", f"socket_id=1.2&channel_name={name}"))
    assert answer["auth"] == f"{KEY}:{signature('1.2:' + name)}"
    # Pusher docs, "Encrypted channels": shared secret = SHA256(channel_name + master key)
    expected = hashlib.sha256(name.encode() + MASTER_KEY).digest()
    assert base64.b64decode(answer["shared_secret"], validate=True) == expected


def test_encrypted_channel_without_master_key_names_the_setting(post):
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-encrypted-user-alice")
    assert response.status_code == 503
    answer = body_json(response)
    assert answer["error"] == "not_configured"
    assert "PUSHER_ENCRYPTION_MASTER_KEY_BASE64" in answer["message"]


def test_someone_elses_encrypted_channel_is_403_even_without_master_key(post):
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-encrypted-user-bob")
    assert response.status_code == 403


# --- batch (pusher-js-auth 4.x) -----------------------------------------------------------------

def test_pusher_js_auth_batch_judges_each_channel(post):
    # byte-for-byte what pusher-js-auth's composeQuery builds (note the leading '&')
    body = ("&socket_id=" + quote("123.456", safe="") +
            "&channel_name[0]=private-user-alice&channel_name[1]=private-user-bob"
            "&channel_name[2]=presence-room&channel_name[3]=bad%20name")
    response = post("/pusher/auth", body)
    assert response.status_code == 200
    answer = body_json(response)
    assert list(answer) == ["private-user-alice", "private-user-bob", "presence-room", "bad name"]
    assert answer["private-user-alice"] == {
        "status": 200, "data": {"auth": f"{KEY}:{signature('123.456:private-user-alice')}"}}
    assert answer["private-user-bob"]["status"] == 403
    assert "data" not in answer["private-user-bob"]
    assert answer["presence-room"]["status"] == 200
    assert set(answer["presence-room"]["data"]) == {"auth", "channel_data"}
    assert answer["bad name"]["status"] == 400


def test_batch_of_one_keeps_the_batch_shape(post):
    answer = body_json(post("/pusher/auth", "socket_id=1.2&channel_name[0]=private-user-alice"))
    assert answer["private-user-alice"]["status"] == 200


def test_json_batch(post):
    body = json.dumps({"socket_id": "1.2", "channel_name": ["presence-a", "private-user-x"]})
    answer = body_json(post("/pusher/auth", body, content_type="application/json"))
    assert (answer["presence-a"]["status"], answer["private-user-x"]["status"]) == (200, 403)


def test_batch_limit_is_413(post):
    names = "".join(f"&channel_name[{i}]=presence-{i}" for i in range(101))
    response = post("/pusher/auth", "socket_id=1.2" + names)
    assert response.status_code == 413
    assert body_json(response)["error"] == "payload_too_large"


def test_batch_without_token_is_401_as_a_whole(post):
    response = post("/pusher/auth", "socket_id=1.2&channel_name[0]=presence-a", auth=False)
    assert response.status_code == 401


# --- malformed requests -------------------------------------------------------------------------

@pytest.mark.parametrize("body, reason", [
    ("channel_name=private-user-alice", "socket_id is required"),
    ("socket_id=&channel_name=private-user-alice", "socket_id is required"),
    ("socket_id=1234&channel_name=private-user-alice", "socket_id must look like"),
    ("socket_id=1.2.3&channel_name=private-user-alice", "socket_id must look like"),
    ("socket_id=%D9%A1.2&channel_name=private-user-alice", "socket_id must look like"),
    ("socket_id=1.2%0A&channel_name=private-user-alice", "socket_id must look like"),
    ("socket_id=1.2&socket_id=3.4&channel_name=private-user-alice", "given once"),
    ("socket_id=1.2", "channel_name is required"),
    ("socket_id=1.2&channel_name=", "channel_name is required"),
    ("socket_id=1.2&channel_name=a&channel_name[0]=b", "not both"),
    ("socket_id=1.2&channel_name=private-user-alice&channel_name=x", "given once"),
    ("socket_id=1.2&channel_name=private%20user", "may only contain"),
    ("socket_id=1.2&channel_name=" + "a" * 165, "164"),
    ("socket_id=1.2&channel_name=%FF", "UTF-8"),
    ("socket_id=1.2&channel_name=news", "public channels need no authorization"),
])
def test_malformed_bodies_are_400_with_a_reason(post, body, reason):
    response = post("/pusher/auth", body)
    assert response.status_code == 400
    answer = body_json(response)
    assert answer["error"] == "bad_request"
    assert reason in answer["message"]


@pytest.mark.parametrize("body", ["{", "[]", '"x"', '{"socket_id": 1.2, "channel_name": "x"}',
                                  '{"socket_id": "1.2", "channel_name": [1]}'])
def test_malformed_json_is_400(post, body):
    response = post("/pusher/auth", body, content_type="application/json")
    assert response.status_code == 400
    assert body_json(response)["error"] == "bad_request"


def test_body_that_is_not_utf8_is_400(post):
    response = post("/pusher/auth", b"socket_id=1.2&channel_name=\xff")
    assert response.status_code == 400


def test_oversized_body_is_413(post):
    response = post("/pusher/auth", "socket_id=1.2&channel_name=x&pad=" + "p" * 70000)
    assert response.status_code == 413


# --- authentication -----------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer not-a-jwt"},
    {"Authorization": "Bearer "},
])
def test_without_a_valid_token_401(post, headers):
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice",
                    headers=headers, auth=False)
    assert response.status_code == 401
    assert body_json(response)["message"] == "Unauthorized"


def test_expired_token_is_401(post, dev_issuer):
    expired = dev_issuer.mint("alice", ttl=-600)
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice",
                    headers={"Authorization": f"Bearer {expired}"}, auth=False)
    assert response.status_code == 401


def test_token_for_another_audience_is_401(post, dev_issuer):
    other = dev_issuer.mint("alice", aud="someone-else")
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice",
                    headers={"Authorization": f"Bearer {other}"}, auth=False)
    assert response.status_code == 401


# --- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["PUSHER_KEY", "PUSHER_APP_ID"])
def test_missing_pusher_setting_is_503_naming_it(post, monkeypatch, name):
    monkeypatch.delenv(name)
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice")
    assert response.status_code == 503
    assert body_json(response) == {"error": "not_configured",
                                   "message": f"{name} is required but not set"}


def test_missing_secret_is_503_naming_it(post, monkeypatch):
    monkeypatch.delenv("PUSHER_SECRET")
    response = post("/pusher/user-auth", "socket_id=1.2")
    assert response.status_code == 503
    assert "PUSHER_SECRET" in body_json(response)["message"]


def test_non_numeric_app_id_is_503(post, monkeypatch):
    monkeypatch.setenv("PUSHER_APP_ID", "app-id")
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice")
    assert response.status_code == 503
    assert "PUSHER_APP_ID" in body_json(response)["message"]


def test_bad_master_key_is_503_naming_it(post, monkeypatch):
    monkeypatch.setenv("PUSHER_ENCRYPTION_MASTER_KEY_BASE64", base64.b64encode(b"short").decode())
    response = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice")
    assert response.status_code == 503
    assert "PUSHER_ENCRYPTION_MASTER_KEY_BASE64" in body_json(response)["message"]


# --- user authentication (signin) ---------------------------------------------------------------

def test_signin_is_signed(post):
    response = post("/pusher/user-auth", "socket_id=123.456")
    answer = body_json(response)
    assert response.status_code == 200
    assert json.loads(answer["user_data"]) == {"id": "alice", "user_info": {"name": "Alice"}}
    assert answer["auth"] == f"{KEY}:{signature('123.456::user::' + answer['user_data'])}"


def test_signin_json_body(post):
    response = post("/pusher/user-auth", '{"socket_id": "1.2"}', content_type="application/json")
    assert response.status_code == 200


@pytest.mark.parametrize("body", ["", "socket_id=abc", "socket_id=1.2&socket_id=1.3"])
def test_signin_bad_socket_id_is_400(post, body):
    assert post("/pusher/user-auth", body).status_code == 400


def test_signin_without_token_is_401(post):
    assert post("/pusher/user-auth", "socket_id=1.2", auth=False).status_code == 401


def test_signin_with_an_auth0_sub_signs_its_escaped_user_id(client, dev_issuer):
    tok = dev_issuer.mint("auth0|12345")
    response = client.http.post("/pusher/user-auth", body="socket_id=1.2",
                                headers={"Content-Type": FORM, "Authorization": f"Bearer {tok}"})
    assert response.status_code == 200
    assert json.loads(body_json(response)["user_data"])["id"] == "auth0=7C12345"


# --- CORS ---------------------------------------------------------------------------------------

def test_cors_headers_on_success_and_error(post):
    ok = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice")
    denied = post("/pusher/auth", "socket_id=1.2&channel_name=private-user-alice", auth=False)
    for response in (ok, denied):
        assert response.headers["Access-Control-Allow-Origin"] == "*"  # dev stage default
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_cors_origin_per_stage(client, monkeypatch):
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://app.example.com")
    response = client.http.options("/pusher/user-auth")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["Vary"] == "Origin"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_no_cors_origin_outside_dev_unless_configured(client, monkeypatch):
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("JWT_ISSUER", "https://issuer.example")  # prod refuses http issuers
    monkeypatch.delenv("JWT_ISSUER_JWKS_URI")
    response = client.http.options("/pusher/auth")
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers


# --- JSONP --------------------------------------------------------------------------------------

def jsonp(client, callback, socket_id="1.2", channel="private-user-alice", token=None,
          extra=""):
    query = f"callback={quote(callback, safe='')}&socket_id={socket_id}&channel_name={channel}"
    if token:
        query += f"&token={token}"
    return client.http.get(f"/pusher/auth?{query}{extra}")


def test_jsonp_as_pusher_js_sends_it(client, token):
    response = jsonp(client, "Pusher.auth_callbacks['0']", token=token)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    found = JSONP_RE.fullmatch(response.body.decode())
    assert found and found.group("cb") == "Pusher.auth_callbacks['0']"
    assert json.loads(found.group("json")) == {
        "auth": f"{KEY}:{signature('1.2:private-user-alice')}"}


def test_jsonp_dotted_identifier_callback(client, token):
    response = jsonp(client, "app.pusher.onAuth", channel="presence-r", token=token)
    text = response.body.decode()
    assert text.startswith("/**/app.pusher.onAuth({") and text.endswith("});")
    assert "channel_data" in json.loads(text[len("/**/app.pusher.onAuth("):-2])


@pytest.mark.parametrize("callback", [
    "alert(1)//", "x;alert(1)", "</script><script>alert(1)</script>",
    "Pusher.auth_callbacks['1'];x",
    "a..b", ".a", "a.", "1abc", "a b", "a-b", "é", "a" * 129, "Pusher.auth_callbacks[1]",
    "Pusher.auth_callbacks['1']\n", "",
])
def test_jsonp_bad_callbacks_are_400_and_never_echoed(client, token, callback):
    response = jsonp(client, callback, token=token)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    text = response.body.decode()
    # one fixed body, whatever the callback: nothing of it is written back
    assert text == ('/**/throw new Error("callback must be Pusher.auth_callbacks[\'N\'] or a '
                    'dotted JavaScript identifier of at most 128 characters");')


def test_jsonp_missing_or_repeated_callback_is_400(client, token):
    assert client.http.get(f"/pusher/auth?socket_id=1.2&channel_name=x&token={token}") \
        .status_code == 400
    response = jsonp(client, "cb", token=token, extra="&callback=other")
    assert response.status_code == 400
    assert "other" not in response.body.decode()


@pytest.mark.parametrize("kwargs, status, code", [
    ({}, 401, "unauthorized"),
    ({"channel": "private-user-bob"}, 403, "forbidden"),
    ({"socket_id": "x"}, 400, "bad_request"),
    ({"channel": "a%3Cb"}, 400, "bad_request"),
])
def test_jsonp_errors_keep_their_status(client, token, kwargs, status, code):
    if status != 401:
        kwargs = {"token": token, **kwargs}
    response = jsonp(client, "Pusher.auth_callbacks['7']", **kwargs)
    assert response.status_code == status
    found = JSONP_RE.fullmatch(response.body.decode())
    assert found, response.body
    assert json.loads(found.group("json"))["error"] == code


def test_jsonp_output_cannot_close_a_script_tag(client, dev_issuer):
    rule = channels.rule("presence-{room}", lambda principal, room: True)
    tok = dev_issuer.mint("eve", name="</script><script>alert(1)</script>")
    try:
        response = jsonp(client, "cb", channel="presence-r", token=tok)
    finally:
        channels.RULES.remove(rule)
    text = response.body.decode()
    assert response.status_code == 200
    assert "<" not in text and ">" not in text
    member = json.loads(json.loads(text[len("/**/cb("):-2])["channel_data"])
    assert member["user_info"]["name"] == "</script><script>alert(1)</script>"


# --- webhooks -----------------------------------------------------------------------------------

def webhook(client, payload, key=KEY, secret=SECRET, headers=None):
    body = json.dumps(payload)
    hdrs = {"Content-Type": "application/json", "X-Pusher-Key": key,
            "X-Pusher-Signature": signature(body, secret)}
    hdrs.update(headers or {})
    return client.http.post("/pusher/webhooks", headers=hdrs, body=body)


@pytest.fixture
def recorded(monkeypatch):
    """Fresh handler registry recording every event (default: record + log)."""
    seen = []
    registry = webhooks.WebhookHandlers()
    registry.register("member_added", lambda event, time_ms: seen.append(("added", event)))
    registry.register("channel_occupied", lambda event, time_ms: seen.append(("occ", event)))
    monkeypatch.setattr(webhooks, "HANDLERS", registry)
    return seen


def now_ms():
    return int(time.time() * 1000)


def test_valid_webhook_is_dispatched_by_name(client, recorded, caplog):
    caplog.set_level("INFO", logger="realtime.webhooks")
    events = [{"name": "channel_occupied", "channel": "presence-a"},
              {"name": "member_added", "channel": "presence-a", "user_id": "alice"},
              {"name": "channel_vacated", "channel": "private-b"}]
    response = webhook(client, {"time_ms": now_ms(), "events": events})
    assert response.status_code == 200
    assert body_json(response) == {"received": 3, "handled": 3, "failed": 0, "skipped": 0}
    assert recorded == [("occ", events[0]), ("added", events[1])]
    # no handler for channel_vacated: the logging default
    assert "webhook channel_vacated channel=private-b" in caplog.text


@pytest.mark.parametrize("case", ["bad signature", "wrong key", "no signature", "no key",
                                  "stale", "future", "no time_ms", "non-ascii signature"])
def test_rejected_webhooks_are_401(client, recorded, case):
    payload = {"time_ms": now_ms(), "events": [{"name": "member_added", "channel": "presence-a",
                                                "user_id": "x"}]}
    kwargs = {}
    if case == "bad signature":
        kwargs["secret"] = "not-the-secret"
    elif case == "wrong key":
        kwargs["key"] = "other-key"
    elif case == "no signature":
        kwargs["headers"] = {"X-Pusher-Signature": ""}
    elif case == "no key":
        kwargs["headers"] = {"X-Pusher-Key": ""}
    elif case == "stale":
        payload["time_ms"] = now_ms() - 301_000
    elif case == "future":
        payload["time_ms"] = now_ms() + 301_000
    elif case == "no time_ms":
        del payload["time_ms"]
    elif case == "non-ascii signature":
        kwargs["headers"] = {"X-Pusher-Signature": "é" * 64}
    response = webhook(client, payload, **kwargs)
    assert response.status_code == 401
    assert body_json(response) == {"error": "unauthorized", "message": "Unauthorized"}
    assert recorded == []


def test_signed_webhook_is_checked_on_the_raw_body(client, recorded):
    body = '{"time_ms": %d,  "events": []}' % now_ms()  # odd spacing: re-serialising would break
    response = client.http.post("/pusher/webhooks", body=body, headers={
        "Content-Type": "application/json", "X-Pusher-Key": KEY,
        "X-Pusher-Signature": signature(body)})
    assert response.status_code == 200
    assert body_json(response)["received"] == 0


def test_signed_webhook_without_events_list_is_400(client, recorded):
    response = webhook(client, {"time_ms": now_ms(), "events": "nope"})
    assert response.status_code == 400


def test_failing_handler_does_not_lose_other_events(client, monkeypatch):
    seen = []
    registry = webhooks.WebhookHandlers()

    @registry.on("member_added")
    def boom(event, time_ms):
        raise RuntimeError("handler bug")

    registry.register("member_removed", lambda event, time_ms: seen.append(event["user_id"]))
    monkeypatch.setattr(webhooks, "HANDLERS", registry)
    events = [{"name": "member_added", "channel": "presence-a", "user_id": "a"},
              {"name": "member_removed", "channel": "presence-a", "user_id": "b"},
              "junk"]
    response = webhook(client, {"time_ms": now_ms(), "events": events})
    assert response.status_code == 200
    assert body_json(response) == {"received": 3, "handled": 1, "failed": 1, "skipped": 1}
    assert seen == ["b"]


def test_webhook_with_missing_settings_is_503(client, monkeypatch):
    monkeypatch.delenv("PUSHER_SECRET")
    response = webhook(client, {"time_ms": now_ms(), "events": []})
    assert response.status_code == 503


def test_default_webhook_log_never_contains_client_event_data(caplog):
    caplog.set_level("INFO", logger="realtime.webhooks")
    webhooks.WebhookHandlers().dispatch(
        [{"name": "client_event", "channel": "private-c", "event": "client-typing",
          "data": "secret-text", "socket_id": "1.2"}], now_ms())
    assert "client_event" in caplog.text and "client-typing" in caplog.text
    assert "secret-text" not in caplog.text

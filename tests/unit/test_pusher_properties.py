"""Property-based tests of the Pusher routes: whatever arrives, never a 5xx, always a JSON error
(JavaScript for JSONP), and never a callback written back unless it passes the allowlist."""
from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;"
SETTINGS = hsettings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

# independent oracles (not the module's regexes)
SOCKET_ID = re.compile(r"\A[0-9]+\.[0-9]+\Z")
CHANNEL = re.compile(r"\A[A-Za-z0-9_\-=@,.;]{1,164}\Z")
PUSHER_CB = re.compile(r"\APusher\.auth_callbacks\['[0-9]+'\]\Z")
DOTTED = re.compile(r"\A[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*\Z")
BAD_CALLBACK_BODY = ('/**/throw new Error("callback must be Pusher.auth_callbacks[\'N\'] or a '
                     'dotted JavaScript identifier of at most 128 characters");')

socket_ids = st.one_of(
    st.from_regex(r"\A[0-9]{1,12}\.[0-9]{1,12}\Z"),
    st.text(alphabet="0123456789.\n -١", max_size=20),
    st.text(max_size=30),
)
channel_names = st.one_of(
    st.sampled_from(["private-user-alice", "private-user-bob", "presence-room",
                     "private-encrypted-user-alice", "news", "private-x"]),
    st.builds(lambda prefix, rest: prefix + rest,
              st.sampled_from(["", "private-", "presence-", "private-encrypted-",
                               "private-user-", "private-encrypted-user-"]),
              st.text(alphabet=CHARSET, max_size=170)),
    st.text(max_size=200),
)
extra_fields = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=4)
content_types = st.sampled_from(["application/x-www-form-urlencoded",
                                 "application/x-www-form-urlencoded; charset=UTF-8",
                                 "application/json", "text/plain", "application/xml"])


@st.composite
def auth_bodies(draw):
    """Bodies in every shape a client (or an attacker) might send."""
    shape = draw(st.sampled_from(["form", "batch", "json", "json-batch", "bytes", "junk-json"]))
    socket_id = draw(socket_ids)
    if shape == "form":
        fields = [("socket_id", socket_id), ("channel_name", draw(channel_names))]
        return urlencode(fields + draw(extra_fields)), "application/x-www-form-urlencoded"
    if shape == "batch":
        names = draw(st.lists(channel_names, max_size=6))
        body = "&socket_id=" + quote(socket_id, safe="") + "".join(
            f"&channel_name[{i}]=" + quote(name, safe="") for i, name in enumerate(names))
        return body, "application/x-www-form-urlencoded"
    if shape == "json":
        return json.dumps({"socket_id": socket_id, "channel_name": draw(channel_names)}), \
            "application/json"
    if shape == "json-batch":
        value = draw(st.one_of(st.lists(channel_names, max_size=5),
                               st.lists(st.integers(), max_size=3), st.none(), st.integers()))
        return json.dumps({"socket_id": socket_id, "channel_name": value}), "application/json"
    if shape == "junk-json":
        value = draw(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                  lambda children: st.lists(children, max_size=3)
                                  | st.dictionaries(st.text(max_size=8), children, max_size=3),
                                  max_leaves=8))
        return json.dumps(value), draw(content_types)
    return draw(st.binary(max_size=300)), draw(content_types)


def assert_json_answer(response):
    assert response.status_code < 500, response.body
    if response.status_code == 415:  # Chalice itself refuses content types the route lacks
        assert json.loads(response.body)["Code"] == "UnsupportedMediaType"
        return None
    assert response.headers["Content-Type"].startswith("application/json")
    answer = json.loads(response.body)
    if response.status_code != 200:
        assert set(answer) >= {"message"}
        assert isinstance(answer.get("error", answer.get("Code")), str)
    return answer


@pytest.fixture
def token(dev_issuer, monkeypatch):
    """Alice's token, on a fully configured deployment (encryption master key included), so
    every status below is caused by the request, never by a missing setting."""
    monkeypatch.setenv("PUSHER_ENCRYPTION_MASTER_KEY_BASE64", base64.b64encode(bytes(32)).decode())
    return dev_issuer.mint("alice", name="Alice")


@SETTINGS
@given(body=auth_bodies(), with_token=st.booleans())
def test_channel_auth_never_5xx_and_always_json(client, token, body, with_token):
    payload, content_type = body
    headers = {"Content-Type": content_type}
    if with_token:
        headers["Authorization"] = f"Bearer {token}"
    response = client.http.post("/pusher/auth", headers=headers, body=payload)
    answer = assert_json_answer(response)
    if not with_token and response.status_code != 415:
        assert response.status_code in (401, 413)
    if response.status_code == 200 and answer and "auth" in answer:
        assert answer["auth"].startswith("app-key:")


@SETTINGS
@given(socket_id=socket_ids, channel=channel_names)
def test_single_auth_status_follows_the_rules(client, token, socket_id, channel):
    response = client.http.post(
        "/pusher/auth", body=urlencode({"socket_id": socket_id, "channel_name": channel}),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Authorization": f"Bearer {token}"})
    assert_json_answer(response)
    # socket ids drawn here have at most 12 digits per part, within the module's limit
    if not SOCKET_ID.match(socket_id) or not CHANNEL.match(channel):
        expected = 400
    elif channel in ("private-user-alice", "private-encrypted-user-alice") or (
            channel.startswith("presence-") and channel != "presence-"):
        expected = 200
    elif channel.startswith(("private-", "presence-")):
        expected = 403
    else:
        expected = 400  # public channels need no authorization
    assert response.status_code == expected, (socket_id, channel, response.body)


@SETTINGS
@given(callback=st.one_of(st.text(max_size=140),
                          st.from_regex(r"\APusher\.auth_callbacks\['[0-9]{1,10}'\]\Z"),
                          st.from_regex(r"\A[a-z_$][a-z0-9_$]{0,8}"
                                        r"(\.[a-z_$][a-z0-9_$]{0,8}){0,3}\Z")),
       socket_id=socket_ids, channel=channel_names, with_token=st.booleans())
def test_jsonp_never_reflects_a_bad_callback(client, token, callback, socket_id, channel,
                                              with_token):
    query = {"callback": callback, "socket_id": socket_id, "channel_name": channel}
    if with_token:
        query["token"] = token
    response = client.http.get("/pusher/auth?" + urlencode(query))
    assert response.status_code < 500
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    text = response.body.decode()
    good = bool(callback) and len(callback) <= 128 and bool(
        PUSHER_CB.match(callback) or DOTTED.match(callback))
    if not good:
        assert response.status_code == 400
        assert text == BAD_CALLBACK_BODY
        return
    prefix = f"/**/{callback}("
    assert text.startswith(prefix) and text.endswith(");")
    answer = json.loads(text[len(prefix):-2])
    assert ("auth" in answer) == (response.status_code == 200)
    if response.status_code != 200:
        assert isinstance(answer["error"], str) and isinstance(answer["message"], str)
    assert "<" not in text[len(prefix):]


@SETTINGS
@given(body=st.one_of(st.binary(max_size=100),
                      st.builds(lambda s: urlencode({"socket_id": s}), socket_ids),
                      st.builds(lambda s: json.dumps({"socket_id": s}), socket_ids)),
       content_type=content_types, with_token=st.booleans())
def test_user_auth_never_5xx(client, token, body, content_type, with_token):
    headers = {"Content-Type": content_type}
    if with_token:
        headers["Authorization"] = f"Bearer {token}"
    response = client.http.post("/pusher/user-auth", headers=headers, body=body)
    answer = assert_json_answer(response)
    if response.status_code == 200:
        assert answer is not None
        assert json.loads(answer["user_data"])["id"] == "alice"


@SETTINGS
@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       key=st.one_of(st.none(), st.just("app-key"), st.text(max_size=20)),
       signature=st.one_of(st.none(), st.text(max_size=70)))
def test_unsigned_webhooks_are_401_never_5xx(client, body, key, signature):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-Pusher-Key"] = key
    if signature is not None:
        headers["X-Pusher-Signature"] = signature
    try:
        response = client.http.post("/pusher/webhooks", headers=headers, body=body)
    except UnicodeEncodeError:  # header values the HTTP layer cannot even carry
        return
    assert_json_answer(response)
    assert response.status_code in (401, 415)

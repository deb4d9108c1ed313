"""Every token the verifier must refuse, refused with 401 through both doors (GET /me behind
``jwt_auth``, and the WebSocket ``ws_authorizer``), each with its own logged reason, and never
with the token in the log. The issuer is a real HTTP key-set server on 127.0.0.1."""
from __future__ import annotations

import json
import time

import pytest

from chalicelib.auth import jwks, tokens
from chalicelib.errors import TokenError
from chalicelib.settings import jwt_settings
from tests.support.jwks_server import JwksServer, b64url, forge, public_jwk, private_key

AUD = "test-audience"
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/dev/$connect"


def rsa_key():
    return private_key("rsa-main")


@pytest.fixture(scope="module")
def issuer():
    """A key set with one good key per family and one of each kind of bad key."""
    document = {"keys": [
        public_jwk(rsa_key(), "rsa-1", alg="RS256", use="sig"),
        public_jwk(private_key("ec-main", "P-256"), "ec-1", alg="ES256", use="sig"),
        public_jwk(private_key("rsa-enc"), "enc-1", alg="RS256", use="enc"),
        public_jwk(rsa_key(), "rs384-only", alg="RS384", use="sig"),
        public_jwk(private_key("rsa-weak", bits=1024), "weak-1", alg="RS256"),
        public_jwk(rsa_key(), "rsa-noalg"),
    ]}
    with JwksServer(document) as server:
        yield server


@pytest.fixture
def env(app_env, issuer, monkeypatch):
    for name, value in issuer.env(AUD).items():
        monkeypatch.setenv(name, value)
    jwks.reset()
    yield monkeypatch
    jwks.reset()


def claims(server, **changes):
    now = int(time.time())
    payload = {"iss": server.issuer, "sub": "mallory", "aud": AUD, "iat": now,
               "exp": now + 600, "name": "Mallory"}
    for name, value in changes.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


DROP = object()
RS = {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}


def good(server, **changes):
    return forge(RS, claims(server, **changes), rsa_key())


def _duplicate_sub(server):
    body = json.dumps(claims(server))[:-1] + ', "sub": "admin"}'
    return forge(RS, body.encode(), rsa_key())


def _tampered(server):
    token = good(server)
    head, _, sig = token.split(".")
    return f"{head}.{b64url(json.dumps(claims(server, sub='admin')).encode())}.{sig}"


def _public_pem():
    from cryptography.hazmat.primitives import serialization
    return rsa_key().public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _attacker_header(name, value_of):
    attacker = private_key("attacker")

    def build(server):
        header = {"alg": "RS256", "kid": "attacker", name: value_of(attacker)}
        return forge(header, claims(server), attacker)
    return build


#: (case id, token builder, reason code, fragment of the logged reason, extra env)
CASES = [
    ("alg-none", lambda s: forge({"alg": "none", "kid": "rsa-1"}, claims(s)),
     "algorithm_not_allowed", "'none'", {}),
    ("alg-None", lambda s: forge({"alg": "None", "kid": "rsa-1"}, claims(s)),
     "algorithm_not_allowed", "'None'", {}),
    ("alg-missing", lambda s: forge({"kid": "rsa-1"}, claims(s), rsa_key(), "RS256"),
     "algorithm_not_allowed", "None", {}),
    ("hs256-with-public-pem",
     lambda s: forge({"alg": "HS256", "kid": "rsa-1"}, claims(s), _public_pem()),
     "algorithm_not_allowed", "'HS256'", {}),
    ("hs256-with-public-jwk",
     lambda s: forge({"alg": "HS256", "kid": "rsa-1"}, claims(s),
                     json.dumps(public_jwk(rsa_key(), "rsa-1")).encode()),
     "algorithm_not_allowed", "'HS256'", {}),
    ("alg-not-in-allowlist",
     lambda s: forge({"alg": "ES256", "kid": "ec-1"}, claims(s), private_key("ec-main", "P-256")),
     "algorithm_not_allowed", "'ES256'", {"JWT_ALGORITHMS": "RS256,PS256"}),
    ("kid-missing", lambda s: forge({"alg": "RS256"}, claims(s), rsa_key()),
     "missing_kid", "no kid", {}),
    ("kid-not-string", lambda s: forge({"alg": "RS256", "kid": 1}, claims(s), rsa_key()),
     "missing_kid", "no kid", {}),
    ("kid-unknown", lambda s: forge({"alg": "RS256", "kid": "nope"}, claims(s), rsa_key()),
     "unknown_kid", "kid 'nope' not in", {}),
    ("jku-attacker", _attacker_header("jku", lambda k: "http://127.0.0.1:9/evil.json"),
     "unsupported_header", "'jku'", {}),
    ("x5u-attacker", _attacker_header("x5u", lambda k: "http://127.0.0.1:9/evil.pem"),
     "unsupported_header", "'x5u'", {}),
    ("jwk-attacker", _attacker_header("jwk", lambda k: public_jwk(k, "attacker")),
     "unsupported_header", "'jwk'", {}),
    ("crit", lambda s: forge(dict(RS, crit=["exp"]), claims(s), rsa_key()),
     "unsupported_header", "'crit'", {}),
    ("expired", lambda s: good(s, exp=int(time.time()) - 60),
     "token_expired", "expired", {}),
    ("nbf-future", lambda s: good(s, nbf=int(time.time()) + 60),
     "token_not_yet_valid", "'nbf'", {}),
    ("iat-future", lambda s: good(s, iat=int(time.time()) + 60),
     "token_not_yet_valid", "'iat'", {}),
    ("exp-missing", lambda s: good(s, exp=DROP), "invalid_claim", "'exp' is required", {}),
    ("exp-string", lambda s: good(s, exp=str(int(time.time()) + 600)),
     "invalid_claim", "'exp' must be a NumericDate", {}),
    ("sub-missing", lambda s: good(s, sub=DROP), "invalid_claim", "'sub'", {}),
    ("iss-wrong", lambda s: good(s, iss="https://evil.example"),
     "invalid_issuer", "evil.example", {}),
    ("iss-prefix", lambda s: good(s, iss=s.issuer[:-1]), "invalid_issuer", "not a configured", {}),
    ("iss-suffix", lambda s: good(s, iss=s.issuer + "/"), "invalid_issuer", "not a configured",
     {}),
    ("aud-wrong", lambda s: good(s, aud="someone-else"), "invalid_audience", "someone-else", {}),
    ("aud-list-no-match", lambda s: good(s, aud=["a", "b"]), "invalid_audience", "no aud in",
     {}),
    ("four-segments", lambda s: good(s) + ".e30", "malformed_token", "has 4", {}),
    ("bad-base64", lambda s: good(s).replace(".", ".*", 1), "malformed_token",
     "outside the base64url alphabet", {}),
    ("base64-padding", lambda s: good(s).replace(".", "==.", 1), "malformed_token",
     "padding", {}),
    ("trailing-whitespace", lambda s: good(s) + " ", "malformed_token", "whitespace", {}),
    ("bearer-left-inside", lambda s: "Bearer " + good(s), "malformed_token", "whitespace", {}),
    ("too-large-9KiB", lambda s: good(s, padding="x" * 9000), "token_too_large", "8192", {}),
    ("duplicate-claim", _duplicate_sub, "malformed_token", "duplicate JSON member", {}),
    ("payload-not-object", lambda s: forge(RS, [claims(s)], rsa_key()), "malformed_token",
     "not an object", {}),
    ("payload-not-json", lambda s: forge(RS, b"\xff\xfe", rsa_key()), "malformed_token",
     "not UTF-8 JSON", {}),
    ("key-use-enc", lambda s: forge({"alg": "RS256", "kid": "enc-1"}, claims(s),
                                    private_key("rsa-enc")),
     "key_rejected", "use is 'enc'", {}),
    ("key-alg-differs", lambda s: forge({"alg": "RS256", "kid": "rs384-only"}, claims(s),
                                        rsa_key()),
     "key_rejected", "has alg 'RS384'", {}),
    ("rsa-1024", lambda s: forge({"alg": "RS256", "kid": "weak-1"}, claims(s),
                                 private_key("rsa-weak", bits=1024)),
     "key_rejected", "1024 bits", {}),
    ("bad-signature", _tampered, "invalid_signature", "does not verify", {}),
]


def ws_event(token=None, **overrides):
    event = {"type": "REQUEST", "methodArn": METHOD_ARN,
             "headers": {"Host": "abcdef1234.execute-api.eu-west-1.amazonaws.com",
                         "Sec-WebSocket-Version": "13"},
             "multiValueHeaders": {"Host": ["abcdef1234.execute-api.eu-west-1.amazonaws.com"]},
             "queryStringParameters": {"token": token} if token is not None else None,
             "multiValueQueryStringParameters": None,
             "requestContext": {"routeKey": "$connect", "eventType": "CONNECT",
                                "apiId": "abcdef1234", "stage": "dev"}}
    event.update(overrides)
    return event


def assert_logged(auth_log, where, code, fragment, token):
    messages = [r.getMessage() for r in auth_log.records]
    wanted = [m for m in messages if m.startswith(f"{where}: {code} (") and fragment in m]
    assert wanted, f"no {where} log with {code!r} and {fragment!r} in {messages}"
    # the JSON lines CloudWatch Logs gets: the same message, with its reason code, no token
    json_lines = auth_log.json.lines()
    assert [line for line in json_lines if line["message"] in wanted
            and line["level"] in ("WARNING", "ERROR")], json_lines
    for text in ("\n".join(messages), auth_log.json.text):
        assert token not in text
        for segment in token.split("."):
            if len(segment) > 16:
                assert segment.strip() not in text


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused_by_ws_authorizer(case, issuer, env, client, auth_log):
    _, build, code, fragment, extra_env = case
    for name, value in extra_env.items():
        env.setenv(name, value)
    token = build(issuer)
    with pytest.raises(Exception) as info:
        client.lambda_.invoke("ws_authorizer", ws_event(token))
    assert type(info.value) is Exception and info.value.args == ("Unauthorized",)
    assert_logged(auth_log, "ws_authorizer", code, fragment, token)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused_by_rest_authorizer(case, issuer, env, client, auth_log):
    _, build, code, fragment, extra_env = case
    for name, value in extra_env.items():
        env.setenv(name, value)
    token = build(issuer)
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert json.loads(response.body) == {"message": "Unauthorized"}
    assert_logged(auth_log, "jwt_auth", code, fragment, token)


def test_no_token_is_refused_with_its_reason(env, client, auth_log):
    with pytest.raises(Exception, match="^Unauthorized$"):
        client.lambda_.invoke("ws_authorizer", ws_event(None))
    assert any(r.getMessage().startswith("ws_authorizer: no_token (") for r in auth_log.records)
    assert client.http.get("/me").status_code == 401


def test_control_token_is_accepted(issuer, env, client):
    """The builders above start from a token that passes: each refusal is its own change."""
    token = good(issuer)
    result = client.lambda_.invoke("ws_authorizer", ws_event(token)).payload
    assert result["principalId"] == "mallory"
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert json.loads(response.body)["sub"] == "mallory"


# --- claim rules at their edges (tokens.verify directly) ---------------------------------------

def _verify(token, now=None):
    return tokens.verify(token, jwt_settings(), now=now)


def test_leeway_accepts_small_clock_skew(issuer, env):
    now = time.time()
    token = good(issuer, exp=int(now) - 3, nbf=int(now) + 3, iat=int(now) + 3)
    assert _verify(token, now=now)["sub"] == "mallory"
    with pytest.raises(TokenError) as info:
        _verify(token, now=now + 3)
    assert info.value.code == "token_expired"


def test_leeway_setting_is_used(issuer, env):
    env.setenv("JWT_LEEWAY_SECONDS", "120")
    token = good(issuer, exp=int(time.time()) - 60)
    assert _verify(token)["sub"] == "mallory"


def test_verify_expiration_false_on_dev_skips_only_exp(issuer, env):
    env.setenv("JWT_VERIFY_EXPIRATION", "false")
    assert _verify(good(issuer, exp=int(time.time()) - 3600))["sub"] == "mallory"
    assert _verify(good(issuer, exp=DROP))["sub"] == "mallory"
    with pytest.raises(TokenError) as info:
        _verify(good(issuer, nbf=int(time.time()) + 3600))
    assert info.value.code == "token_not_yet_valid"
    with pytest.raises(TokenError) as info:
        _verify(good(issuer, aud="nope"))
    assert info.value.code == "invalid_audience"


@pytest.mark.parametrize("value", ["true", "null", "[1]", '{"n": 1}', '"1"'])
def test_exp_must_be_a_finite_number(issuer, env, value):
    payload = dict(claims(issuer), exp="EXP")
    raw = json.dumps(payload).replace('"EXP"', value)
    with pytest.raises(TokenError) as info:
        _verify(forge(RS, raw.encode(), rsa_key()))
    assert info.value.code == "invalid_claim" and "'exp'" in str(info.value)


def test_an_exp_overflowing_to_infinity_is_not_json(issuer, env):
    # the strict JSON reader refuses the payload before any claim is looked at
    raw = json.dumps(dict(claims(issuer), exp="EXP")).replace('"EXP"', "1e400")
    with pytest.raises(TokenError) as info:
        _verify(forge(RS, raw.encode(), rsa_key()))
    assert info.value.code == "malformed_token" and "out of range" in str(info.value)


def test_nan_is_not_json(issuer, env):
    payload = json.dumps(claims(issuer)).replace('"name": "Mallory"', '"name": NaN')
    with pytest.raises(TokenError) as info:
        _verify(forge(RS, payload.encode(), rsa_key()))
    assert info.value.code == "malformed_token"


def test_duplicate_header_member_is_refused(issuer, env):
    header = b'{"alg":"RS256","kid":"rsa-1","alg":"none"}'
    with pytest.raises(TokenError) as info:
        _verify(forge(header, claims(issuer), rsa_key(), "RS256"))
    assert info.value.code == "malformed_token" and "duplicate" in str(info.value)


def test_non_canonical_base64_is_refused(issuer, env):
    token = good(issuer)
    head, payload, sig = token.split(".")
    # RS256 signatures are 256 bytes: 342 chars, 2 spare bits in the last one
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    sig = sig[:-1] + alphabet[last | 1]
    with pytest.raises(TokenError) as info:
        _verify(f"{head}.{payload}.{sig}")
    assert info.value.code == "malformed_token" and "canonical" in str(info.value)


def test_aud_list_with_a_match_is_accepted(issuer, env):
    assert _verify(good(issuer, aud=["other", AUD]))["sub"] == "mallory"


def test_cognito_access_token_matches_client_id(issuer, env):
    access = good(issuer, aud=DROP, client_id=AUD, token_use="access", scope="a/read")
    assert _verify(access)["client_id"] == AUD
    with pytest.raises(TokenError) as info:
        _verify(good(issuer, aud=DROP, client_id="another-client", token_use="access"))
    assert info.value.code == "invalid_audience"
    with pytest.raises(TokenError) as info:
        _verify(good(issuer, aud=[], client_id=AUD))
    assert info.value.code == "invalid_audience"


def test_empty_signature_is_refused(issuer, env):
    head, payload, _ = good(issuer).split(".")
    with pytest.raises(TokenError) as info:
        _verify(f"{head}.{payload}.")
    assert info.value.code == "malformed_token"


def test_ecdsa_signature_of_wrong_length_is_refused(issuer, env):
    token = forge({"alg": "ES256", "kid": "ec-1"}, claims(issuer), private_key("ec-main", "P-256"))
    head, payload, sig = token.split(".")
    with pytest.raises(TokenError) as info:
        _verify(f"{head}.{payload}.{sig}AAAA")
    assert info.value.code == "invalid_signature"


def test_key_type_must_fit_alg(issuer, env):
    """An RSA key (without its own alg) named by an ES256 token is refused: no confusion
    across key families, whatever the token says."""
    token = forge({"alg": "ES256", "kid": "rsa-noalg"}, claims(issuer),
                  private_key("ec-main", "P-256"))
    with pytest.raises(TokenError) as info:
        _verify(token)
    assert info.value.code == "key_rejected"
    assert "(RSA-2048) does not fit alg 'ES256'" in str(info.value)
    assert _verify(forge({"alg": "PS256", "kid": "rsa-noalg"}, claims(issuer), rsa_key()))


def test_not_a_string_is_malformed(env):
    with pytest.raises(TokenError) as info:
        _verify(b"abc.def.ghi")
    assert info.value.code == "malformed_token"


# --- whatever arrives, the answer is a TokenError (a 401), never another exception ------------

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402


@hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=300))
def test_arbitrary_text_is_a_token_error(issuer, env, text):
    with pytest.raises(TokenError):
        _verify(text)


@hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(position=st.integers(min_value=0), char=st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00é"))
def test_any_one_character_change_is_refused(issuer, env, position, char):
    token = _SIGNED.setdefault("token", good(issuer))
    position %= len(token)
    changed = token[:position] + char + token[position + 1:]
    if changed == token:
        return
    with pytest.raises(TokenError):
        _verify(changed)


_SIGNED = {}

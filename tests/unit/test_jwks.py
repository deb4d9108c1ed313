"""Key sets: faults of the issuer's endpoint, cache lifetimes, rotation, the unknown-kid cooldown,
discovery, Firebase's x509 map, several issuers. A real HTTP server on 127.0.0.1 plays the
issuer (tests/support/jwks_server.py); cache time runs on a fake clock instead of sleeping."""
from __future__ import annotations

import datetime
import json
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from chalicelib.auth import jwks, tokens
from chalicelib.doors import authorizer
from chalicelib.errors import TokenError
from chalicelib.settings import jwt_settings
from tests.support.jwks_server import JwksServer, closed_port_url, forge, private_key, public_jwk

AUD = "test-audience"
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/dev/$connect"


class FakeClock:
    """Stands in for jwks.monotonic: time moves only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(jwks, "monotonic", fake)
    return fake


@pytest.fixture(autouse=True)
def _fresh_keys():
    jwks.reset()
    yield
    jwks.reset()


@pytest.fixture
def server():
    with JwksServer({"keys": [public_jwk(private_key("rsa-a"), "key-a", alg="RS256")]}) as srv:
        yield srv


@pytest.fixture
def env(app_env, server, monkeypatch):
    for name, value in server.env(AUD).items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def token_for(server, kid="key-a", key_name="rsa-a", **claims):
    now = int(time.time())
    payload = {"iss": server.issuer, "sub": "user-1", "aud": AUD, "iat": now, "exp": now + 600}
    payload.update(claims)
    return forge({"alg": "RS256", "kid": kid}, payload, private_key(key_name))


def verify(token):
    return tokens.verify(token, jwt_settings())


def ws(client, token):
    event = {"type": "REQUEST", "methodArn": METHOD_ARN, "headers": None,
             "queryStringParameters": {"token": token}}
    return client.lambda_.invoke("ws_authorizer", event).payload


def refused_code(func, *args):
    with pytest.raises(TokenError) as info:
        func(*args)
    return info.value.code


# --- faults -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["down", "500", "slow", "garbage", "huge", "redirect"])
def test_key_set_fault_is_401_within_3_seconds(fault, server, env, client, auth_log):
    if fault == "down":
        env.setenv("JWT_ISSUER_JWKS_URI", closed_port_url())
    else:
        server.fault = fault
    token = token_for(server)
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        ws(client, token)
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    elapsed = time.monotonic() - start
    assert type(info.value) is Exception and info.value.args == ("Unauthorized",)
    assert response.status_code == 401
    assert elapsed < 3.0
    assert "ws_authorizer: jwks_unavailable (" in auth_log.text
    assert token not in auth_log.text
    if fault != "down":
        assert server.jwks_fetches == 1  # the second request waited for the cooldown


def test_slow_key_set_gives_up_at_the_timeout(server, env):
    server.fault = "slow"
    start = time.monotonic()
    assert refused_code(verify, token_for(server)) == "jwks_unavailable"
    assert jwks.FETCH_TIMEOUT - 0.1 <= time.monotonic() - start < 3.0


def test_dribbling_body_is_cut_at_the_total_timeout(server, env):
    server.fault = "dribble"
    start = time.monotonic()
    assert refused_code(verify, token_for(server)) == "jwks_unavailable"
    assert time.monotonic() - start < jwks.FETCH_TIMEOUT + 0.5


def test_redirect_is_not_followed(server, env):
    server.fault = "redirect"
    assert refused_code(verify, token_for(server)) == "jwks_unavailable"
    assert server.requests == ["/jwks.json"]


def test_over_1_mib_is_refused_but_under_is_fine(server, env):
    server.document = dict(server.document, padding="x" * (jwks.MAX_BODY_BYTES - 2000))
    assert verify(token_for(server))["sub"] == "user-1"
    jwks.reset()
    server.fault = "huge"
    assert refused_code(verify, token_for(server)) == "jwks_unavailable"


@pytest.mark.parametrize("document", [[], {"keys": "nope"}, {"a": 1}, "text", {}])
def test_documents_that_are_not_key_sets(document, server, env):
    server.document = document
    assert refused_code(verify, token_for(server)) == "jwks_unavailable"


def test_failure_backs_off_for_the_cooldown(server, env, clock):
    server.fault = "500"
    for _ in range(5):
        assert refused_code(verify, token_for(server)) == "jwks_unavailable"
    assert server.jwks_fetches == 1
    server.fault = None
    clock.advance(jwks.COOLDOWN - 1)
    assert refused_code(verify, token_for(server)) == "jwks_unavailable"
    clock.advance(1)
    assert verify(token_for(server))["sub"] == "user-1"
    assert server.jwks_fetches == 2


# --- cache lifetime, outage, rotation, cooldown ---------------------------------------------

def test_warm_cache_keeps_accepting_through_an_outage(server, env, clock, client):
    token = token_for(server)
    assert ws(client, token)["principalId"] == "user-1"
    server.fault = "500"
    clock.advance(3600 + 1)                      # the key set is now stale
    for _ in range(3):
        assert ws(client, token)["principalId"] == "user-1"
    assert server.jwks_fetches == 2              # one refresh attempt, then the cooldown
    clock.advance(jwks.COOLDOWN)
    assert ws(client, token)["principalId"] == "user-1"
    assert server.jwks_fetches == 3
    clock.advance(jwks.STALE_IF_ERROR)           # stale beyond 24 h: no longer trusted
    assert refused_code(verify, token) == "jwks_unavailable"
    server.fault = None
    clock.advance(jwks.COOLDOWN)
    assert ws(client, token)["principalId"] == "user-1"


def test_issuer_down_entirely_after_warm_up(server, env, clock):
    token = token_for(server)
    assert verify(token)["sub"] == "user-1"
    server.stop()
    clock.advance(3600 + 1)
    assert verify(token)["sub"] == "user-1"


def test_rotation_is_picked_up_with_exactly_one_fetch(server, env, clock):
    assert verify(token_for(server))["sub"] == "user-1"
    assert server.jwks_fetches == 1
    clock.advance(60)
    server.document = {"keys": [public_jwk(private_key("rsa-a"), "key-a", alg="RS256"),
                                public_jwk(private_key("rsa-b"), "key-b", alg="RS256")]}
    rotated = token_for(server, kid="key-b", key_name="rsa-b")
    assert verify(rotated)["sub"] == "user-1"
    assert server.jwks_fetches == 2
    assert verify(token_for(server, kid="key-b", key_name="rsa-b"))["sub"] == "user-1"
    assert verify(token_for(server))["sub"] == "user-1"
    assert server.jwks_fetches == 2


def test_kid_published_right_after_a_fetch_costs_exactly_one_fetch(server, env, clock):
    assert verify(token_for(server))["sub"] == "user-1"          # fetch set A
    assert server.jwks_fetches == 1
    server.document = {"keys": [public_jwk(private_key("rsa-a"), "key-a", alg="RS256"),
                                public_jwk(private_key("rsa-b"), "key-b", alg="RS256")]}
    # no clock advance: the issuer rotated right after our fetch
    assert verify(token_for(server, kid="key-b", key_name="rsa-b"))["sub"] == "user-1"
    assert server.jwks_fetches == 2


def test_kid_published_right_after_prefetch_costs_one_fetch(server, env, clock):
    env.setenv("JWKS_PREFETCH", "true")
    authorizer._prefetch_at_cold_start()
    server.document = {"keys": [public_jwk(private_key("rsa-b"), "key-b", alg="RS256")]}
    assert verify(token_for(server, kid="key-b", key_name="rsa-b"))["sub"] == "user-1"
    assert server.jwks_fetches == 2


def test_unknown_kid_after_a_rotation_fetch_still_costs_one_fetch_per_cooldown(server, env,
                                                                               clock):
    assert verify(token_for(server))["sub"] == "user-1"
    server.document = {"keys": [public_jwk(private_key("rsa-b"), "key-b", alg="RS256")]}
    assert verify(token_for(server, kid="key-b", key_name="rsa-b"))["sub"] == "user-1"
    assert server.jwks_fetches == 2
    for _ in range(50):
        assert refused_code(verify, token_for(server, kid=uuid.uuid4().hex)) == "unknown_kid"
    assert server.jwks_fetches == 3                               # one miss, then the penalty box
    server.document = {"keys": [public_jwk(private_key("rsa-c"), "key-c", alg="RS256")]}
    clock.advance(jwks.COOLDOWN - 1)
    assert refused_code(verify, token_for(server, kid="key-c", key_name="rsa-c")) == \
        "unknown_kid"
    assert server.jwks_fetches == 3
    clock.advance(1)
    assert verify(token_for(server, kid="key-c", key_name="rsa-c"))["sub"] == "user-1"
    assert server.jwks_fetches == 4


def test_removed_key_stops_working_after_refresh(server, env, clock):
    assert verify(token_for(server))["sub"] == "user-1"
    server.document = {"keys": [public_jwk(private_key("rsa-b"), "key-b", alg="RS256")]}
    clock.advance(3600)
    assert refused_code(verify, token_for(server)) == "unknown_kid"
    assert server.jwks_fetches == 2


def test_random_kids_cause_at_most_one_fetch_per_cooldown(server, env, clock, client):
    assert verify(token_for(server))["sub"] == "user-1"
    clock.advance(jwks.COOLDOWN)
    for window in range(3):
        before = server.jwks_fetches
        for _ in range(100):
            token = token_for(server, kid=uuid.uuid4().hex)
            with pytest.raises(Exception, match="^Unauthorized$"):
                ws(client, token)
            clock.advance(jwks.COOLDOWN / 100 * 0.99)
        assert server.jwks_fetches - before <= 1
        clock.advance(jwks.COOLDOWN)
    assert server.jwks_fetches <= 4
    assert verify(token_for(server))["sub"] == "user-1"


@pytest.mark.parametrize("cache_control, fresh_for", [
    ("max-age=60", jwks.MIN_TTL), ("public, max-age=7200", 7200), ("max-age=999999", jwks.MAX_TTL),
    (None, jwks.DEFAULT_TTL), ("no-store", jwks.MIN_TTL),
    ("max-age=" + "9" * 5000, jwks.MAX_TTL), ("public, max-age=" + "0" * 5000 + "7200", 7200),
    ("max-age=" + "1" * 11, jwks.MAX_TTL),
], ids=["60", "7200", "999999", "absent", "no-store", "5000-digits", "leading-zeros",
        "11-digits"])
def test_max_age_is_clamped(cache_control, fresh_for, server, env, clock):
    server.cache_control = cache_control
    assert verify(token_for(server))["sub"] == "user-1"
    clock.advance(fresh_for - 1)
    verify(token_for(server))
    assert server.jwks_fetches == 1
    clock.advance(1)
    verify(token_for(server))
    assert server.jwks_fetches == 2


def test_max_age_of_thousands_of_digits_is_no_500(server, env, client):
    server.cache_control = "max-age=" + "9" * 5000
    token = token_for(server)
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert json.loads(response.body)["sub"] == "user-1"
    assert ws(client, token)["principalId"] == "user-1"
    signed_in = client.http.post("/pusher/user-auth", body="socket_id=1.2", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {token}"})
    assert signed_in.status_code == 200
    assert "auth" in json.loads(signed_in.body)
    assert server.jwks_fetches == 1


def test_prefetch_at_cold_start(server, env, clock):
    env.setenv("JWKS_PREFETCH", "true")
    authorizer._prefetch_at_cold_start()
    assert server.jwks_fetches == 1
    assert verify(token_for(server))["sub"] == "user-1"
    assert server.jwks_fetches == 1


def test_prefetch_failure_is_logged_not_raised(server, env, auth_log):
    env.setenv("JWKS_PREFETCH", "true")
    server.fault = "500"
    authorizer._prefetch_at_cold_start()
    assert "JWKS prefetch for" in auth_log.text and "HTTP 500" in auth_log.text


# --- where keys come from ---------------------------------------------------------------------

def test_discovery_finds_the_key_set(server, env):
    env.delenv("JWT_ISSUER_JWKS_URI")
    assert verify(token_for(server))["sub"] == "user-1"
    assert server.requests == ["/.well-known/openid-configuration", "/jwks.json"]
    assert verify(token_for(server))["sub"] == "user-1"
    assert len(server.requests) == 2


def test_discovery_with_another_issuer_is_refused(server, env):
    env.delenv("JWT_ISSUER_JWKS_URI")
    env.setenv("JWT_ISSUER", server.issuer.replace("127.0.0.1", "localhost"))
    token = token_for(server, iss=server.issuer.replace("127.0.0.1", "localhost"))
    assert refused_code(verify, token) == "jwks_unavailable"
    assert server.jwks_fetches == 0


def test_unknown_issuer_causes_no_fetch(server, env):
    assert refused_code(verify, token_for(server, iss="https://other.example")) == \
        "invalid_issuer"
    assert server.requests == []


@pytest.mark.parametrize("url", ["http://example.com/jwks.json", "ftp://127.0.0.1/x",
                                 "file:///etc/passwd", "https:///nohost"])
def test_only_https_or_local_http(url):
    with pytest.raises(jwks.FetchError):
        jwks.check_url(url)


def test_local_http_and_https_are_allowed():
    assert jwks.check_url("https://issuer.example/keys?x=1")[3] == "/keys?x=1"
    assert jwks.check_url("http://localhost:8080/jwks")[1] == "localhost"


def _certificate(key, days=30):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_https_certificates_are_verified(app_env, monkeypatch, tmp_path):
    """A key set behind a certificate the trust store does not know is never used."""
    import ssl

    key = private_key("tls", "P-256")
    (tmp_path / "cert.pem").write_text(_certificate(key))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    document = {"keys": [public_jwk(private_key("rsa-a"), "key-a", alg="RS256")]}
    with JwksServer(document, tls=context) as tls_server:
        for name, value in tls_server.env(AUD).items():
            monkeypatch.setenv(name, value)
        assert refused_code(verify, token_for(tls_server)) == "jwks_unavailable"
        assert "CERTIFICATE_VERIFY_FAILED" in jwks.key_set(
            jwt_settings().issuers[tls_server.issuer]).last_error
        assert tls_server.jwks_fetches == 0


def test_firebase_x509_map(server, env, client):
    server.document = {"fb-1": _certificate(private_key("rsa-a")),
                       "fb-weak": _certificate(private_key("rsa-weak", bits=1024))}
    token = token_for(server, kid="fb-1")
    assert ws(client, token)["principalId"] == "user-1"
    weak = token_for(server, kid="fb-weak", key_name="rsa-weak")
    assert refused_code(verify, weak) == "key_rejected"


def test_several_issuers(server, app_env, monkeypatch):
    with JwksServer({"keys": [public_jwk(private_key("ec-b", "P-256"), "b-1",
                                         alg="ES256")]}) as other:
        monkeypatch.delenv("JWT_ISSUER")
        monkeypatch.setenv("JWT_ISSUERS", json.dumps([
            {"issuer": server.issuer, "jwks_uri": server.jwks_uri, "audiences": [AUD],
             "user_id_prefix": "a"},
            {"issuer": other.issuer, "jwks_uri": other.jwks_uri, "audiences": ["b-app"],
             "user_id_prefix": "b"},
        ]))
        now = int(time.time())
        token_b = forge({"alg": "ES256", "kid": "b-1"},
                        {"iss": other.issuer, "sub": "b-user", "aud": "b-app", "exp": now + 60},
                        private_key("ec-b", "P-256"))
        assert verify(token_b)["sub"] == "b-user"
        assert verify(token_for(server))["sub"] == "user-1"
        assert refused_code(verify, token_for(server, aud="b-app")) == "invalid_audience"
        # a kid of issuer B in a token claiming issuer A is looked up in A's key set only
        forged = forge({"alg": "ES256", "kid": "b-1"},
                       {"iss": server.issuer, "sub": "x", "aud": AUD, "exp": now + 60},
                       private_key("ec-b", "P-256"))
        assert refused_code(verify, forged) == "unknown_kid"
        assert other.jwks_fetches == 1


# --- parsing key sets -------------------------------------------------------------------------

def test_parse_key_set_rules():
    rsa_a = private_key("rsa-a")
    entries = jwks.parse_key_set({"keys": [
        public_jwk(rsa_a, "ok", alg="RS256", use="sig", key_ops=["verify"]),
        public_jwk(rsa_a, "ops", key_ops=["encrypt"]),
        public_jwk(rsa_a, "enc", use="enc"),
        dict(public_jwk(rsa_a, "private"), d="AQAB"),
        {"kid": "oct", "kty": "oct", "k": "c2VjcmV0"},
        {"kid": "broken", "kty": "RSA", "n": "!!", "e": "AQAB"},
        public_jwk(rsa_a, "twice"), public_jwk(private_key("rsa-b"), "twice"),
        public_jwk(rsa_a, "once-usable", use="enc"), public_jwk(rsa_a, "once-usable"),
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        "not a key",
    ]})
    assert entries["ok"].usable and entries["once-usable"].usable
    refusals = {kid: e.refusal for kid, e in entries.items() if not e.usable}
    assert set(refusals) == {"ops", "enc", "private", "oct", "broken", "twice"}
    assert "private key material" in refusals["private"]
    assert "kty 'oct'" in refusals["oct"]
    assert "several keys" in refusals["twice"]
    with pytest.raises(TokenError) as info:
        entries["ok"].verifier("PS256")
    assert info.value.code == "key_rejected"


def test_ec_key_must_match_the_curve_of_alg():
    entry = jwks.parse_key_set({"keys": [public_jwk(private_key("ec-384", "P-384"), "e")]})["e"]
    assert callable(entry.verifier("ES384"))
    with pytest.raises(TokenError, match="does not fit alg 'ES256'"):
        entry.verifier("ES256")


def test_clamp_ttl():
    assert [jwks.clamp_ttl(v) for v in (None, 0, 299, 300, 5000, 86401)] == \
        [3600, 300, 300, 300, 5000, 86400]


def test_max_age_of_header_values():
    cap = jwks.DELTA_SECONDS_CAP
    cases = {"max-age=7200": 7200, 'MAX-AGE = "600"': 600, "no-cache, max-age=600": 0,
             "s-maxage=5, private": None, "": None, "max-age=": None,
             "max-age=\u00b2": None, "max-age=" + "9" * 5000: cap,
             "max-age=2147483649": cap, "max-age=" + "0" * 4999 + "1": 1}
    assert {value: jwks.max_age_of(value) for value in cases} == cases

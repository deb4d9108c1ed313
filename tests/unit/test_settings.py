"""JWT settings: defaults, validation, and one clear message naming the variable."""
from __future__ import annotations

import json
import os

import pytest

from chalicelib import settings
from chalicelib.errors import ConfigError


@pytest.fixture
def env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("JWT_", "JWKS_")) or name in ("AUTHORIZED_APIS", "STAGE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JWT_ISSUER", "https://issuer.example")
    monkeypatch.setenv("JWT_AUTHORIZED_AUDIENCES", "web, mobile")
    return monkeypatch


def load():
    settings.reset()
    return settings.jwt_settings()


def refused(message_part):
    with pytest.raises(ConfigError) as info:
        load()
    assert message_part in str(info.value)
    return str(info.value)


def test_defaults(env):
    s = load()
    config = s.issuers["https://issuer.example"]
    assert config.jwks_uri is None and config.audiences == ("web", "mobile")
    assert s.algorithms == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                            "ES256", "ES384", "ES512", "EdDSA")
    assert (s.leeway_seconds, s.verify_expiration, s.authorized_apis, s.prefetch) == \
        (5, True, (), False)
    assert settings.app_settings().stage == "prod"


def test_read_once(env):
    first = load()
    env.setenv("JWT_LEEWAY_SECONDS", "30")
    assert settings.jwt_settings() is first


@pytest.mark.parametrize("name, message", [
    ("JWT_ISSUER", "JWT_ISSUER is required"),
    ("JWT_AUTHORIZED_AUDIENCES", "JWT_AUTHORIZED_AUDIENCES is required"),
])
def test_required(env, name, message):
    env.delenv(name)
    refused(message)


@pytest.mark.parametrize("value", ["none", "HS256", "RS256,HS512", "rs256"])
def test_only_asymmetric_algorithms(env, value):
    env.setenv("JWT_ALGORITHMS", value)
    refused("JWT_ALGORITHMS")


def test_algorithm_subset(env):
    env.setenv("JWT_ALGORITHMS", "ES256, RS256")
    assert load().algorithms == ("ES256", "RS256")


@pytest.mark.parametrize("value", ["-1", "301", "five"])
def test_leeway_bounds(env, value):
    env.setenv("JWT_LEEWAY_SECONDS", value)
    refused("JWT_LEEWAY_SECONDS")


@pytest.mark.parametrize("stage", ["prod", "staging"])
def test_verify_expiration_false_only_on_dev(env, stage):
    env.setenv("STAGE", stage)
    env.setenv("JWT_VERIFY_EXPIRATION", "false")
    refused("JWT_VERIFY_EXPIRATION=false is only allowed on the dev stage")
    env.setenv("STAGE", "dev")
    assert load().verify_expiration is False


def test_plain_http_issuer_only_on_dev(env):
    env.setenv("JWT_ISSUER", "http://127.0.0.1:9999")
    refused("only allowed on the dev stage")
    env.setenv("STAGE", "dev")
    assert "http://127.0.0.1:9999" in load().issuers


@pytest.mark.parametrize("uri", ["http://keys.example/jwks.json", "ftp://keys.example/x",
                                 "not a url"])
def test_jwks_uri_must_be_https(env, uri):
    env.setenv("JWT_ISSUER_JWKS_URI", uri)
    refused("JWT_ISSUER_JWKS_URI must be an https URL")


def test_issuers_list(env):
    env.delenv("JWT_ISSUER")
    env.setenv("JWT_ISSUERS", json.dumps([
        {"issuer": "https://a.example", "audiences": ["x"], "user_id_prefix": "a"},
        {"issuer": "https://b.example", "jwks_uri": "https://b.example/k", "audiences": "y,z",
         "user_id_prefix": "b"},
    ]))
    issuers = load().issuers
    assert issuers["https://a.example"].audiences == ("x",)
    assert issuers["https://b.example"].jwks_uri == "https://b.example/k"
    assert issuers["https://b.example"].audiences == ("y", "z")


@pytest.mark.parametrize("value, message", [
    ("{", "must be a JSON list"),
    ("[]", "non-empty JSON list"),
    ('[{"issuer": ""}]', "JWT_ISSUERS[0] needs a non-empty string 'issuer'"),
    ('[{"issuer": "https://a.example"}]', "JWT_ISSUERS[0] needs a non-empty list"),
    ('[{"issuer": "https://a.example", "audiences": ["x"], "jwks_uri": "http://a.example/k"}]',
     "JWT_ISSUERS[0].jwks_uri must be an https URL"),
])
def test_issuers_list_errors(env, value, message):
    env.setenv("JWT_ISSUERS", value)
    refused(message)


def test_authorized_apis_and_prefetch(env):
    env.setenv("AUTHORIZED_APIS", "abc123, def456")
    env.setenv("JWKS_PREFETCH", "yes")
    s = load()
    assert s.authorized_apis == ("abc123", "def456") and s.prefetch is True


def test_messages_never_echo_values(env):
    env.setenv("JWT_ALGORITHMS", "HS256-secretish")
    assert "secretish" not in refused("JWT_ALGORITHMS")

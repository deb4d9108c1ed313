"""Fixtures shared by every test suite.

* settings caches are dropped around every test (``chalicelib.settings.reset``);
* ``dev_issuer``: a real OIDC issuer (discovery + JWKS over HTTP on 127.0.0.1) with keys for
  every allowed algorithm, one per test session;
* ``app_env``: environment variables of a dev-like stage trusting ``dev_issuer``;
* ``client``: Chalice's test client on the config-less stage ``test``, so the environment the
  test sets is the one the app sees (named stages would overwrite it with config.json);
* ``local_stack``: the local stack (``devtools.stack`` on free ports), one per test session,
  shared by every end-to-end and conformance module that needs no stack of its own.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib import settings  # noqa: E402
from devtools.dev_issuer import DevIssuer  # noqa: E402

PUSHER_ENV = {
    "PUSHER_APP_ID": "100001",  # numeric: the pusher library refuses other app ids
    "PUSHER_KEY": "app-key",
    "PUSHER_SECRET": "app-secret",
    "PUSHER_CLUSTER": "mt1",
}


@pytest.fixture(scope="session", autouse=True)
def _one_botocore_loader():
    """Every botocore session of the test process shares one data loader (its cache of parsed
    service models and endpoints). The app builds each client from a new ``boto3`` session,
    and tests reset clients often: each new session would parse the same JSON again, ~0.1 s
    per client, minutes over the suite. The clients are the same; only the parsing is shared
    (as it is between the clients of one session)."""
    import functools

    import botocore.session

    original = botocore.session.create_loader
    botocore.session.create_loader = functools.lru_cache(maxsize=None)(original)
    yield
    botocore.session.create_loader = original


@pytest.fixture(autouse=True)
def _fresh_settings():
    settings.reset()
    yield
    settings.reset()


@pytest.fixture(scope="session")
def dev_issuer(tmp_path_factory):
    issuer = DevIssuer(keys_dir=tmp_path_factory.mktemp("devkeys"), port=0).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """The local stack every module shares (started on first use, stopped at the end of the
    session): starting one costs seconds. Tests on it must not depend on what others left
    there: unique channel names and users per test, and checks scoped to what the test
    created (no "the registry is empty"). A test that needs a stack to itself (stack-wide
    figures, counted work) starts its own with :func:`tests.support.local_stack.running_stack`."""
    from tests.support.local_stack import running_stack

    with running_stack(tmp_path_factory.mktemp("local-stack-run")) as stack:
        yield stack


@pytest.fixture
def app_env(monkeypatch, dev_issuer):
    """Environment of a dev-stage deployment trusting ``dev_issuer``; returns the dict."""
    for name in list(os.environ):
        if name.startswith(("JWT_", "PUSHER_", "WEBSOCKET_", "CORS_", "JWKS_")) \
                or name in ("AUTHORIZED_APIS", "CONNECTIONS_TABLE", "STAGE"):
            monkeypatch.delenv(name, raising=False)
    env = {"STAGE": "dev", **dev_issuer.env(), **PUSHER_ENV}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def client(app_env):
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="test") as test_client:
        yield test_client


class JsonLog:
    """The JSON lines the ``realtime`` logger's Powertools handler writes (what CloudWatch
    Logs gets), captured by swapping the handler's stream."""

    def __init__(self) -> None:
        import io

        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list:
        """Every line, parsed (each must be one JSON object)."""
        import json

        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_log():
    """:class:`JsonLog` of the ``realtime`` logger, at level INFO."""
    from chalicelib import observability

    handler = observability.log_handler()
    captured = JsonLog()
    logger = logging.getLogger("realtime")
    level = logger.level
    logger.setLevel(logging.INFO)
    previous = handler.setStream(captured.stream)
    yield captured
    handler.setStream(previous)
    logger.setLevel(level)


@pytest.fixture
def auth_log(caplog, json_log):
    """Records of the ``realtime`` logger (it does not propagate to the root); the JSON lines
    its handler wrote are ``auth_log.json`` (a :class:`JsonLog`)."""
    logger = logging.getLogger("realtime")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    caplog.json = json_log
    yield caplog
    logger.removeHandler(caplog.handler)

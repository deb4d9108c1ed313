"""Pytest fixtures for the WebSocket side: a moto DynamoDB registry and a real management API.

Import the fixtures you use into a test module::

    from tests.support.websocket import aws_env, registry, management_api  # noqa: F401

* ``aws_env``: ``app_env`` plus fake AWS credentials, ``AWS_REGION=us-east-1``,
  ``CONNECTIONS_TABLE`` and no ``AWS_ENDPOINT_URL*`` (so moto, not a local stack, answers);
* ``registry``: ``mock_aws`` with the connections table created by
  :func:`chalicelib.registry.table.create_table`;
* ``management_api``: a :class:`tests.support.management_api.ManagementAPI` on 127.0.0.1
  that ``WEBSOCKET_ENDPOINT_URL`` points to;
* :func:`app_gateway`: the app's handlers behind a local API Gateway WebSocket gateway
  (``WEBSOCKET_ENDPOINT_URL`` and the Lambda endpoint point to it);
* ``serial_registry``: instead of ``registry``, for concurrency tests: a moto server on
  127.0.0.1 that handles one request at a time (``AWS_ENDPOINT_URL_DYNAMODB`` points to it), so
  each DynamoDB request is atomic as on DynamoDB — in-process ``mock_aws`` evaluates a
  condition and applies the write in separate steps that threads interleave.
"""
from __future__ import annotations

import contextlib
import os
import time

import pytest

from tests.support.management_api import ManagementAPI

TABLE = "realtime-connections-test"


@contextlib.contextmanager
def app_gateway(monkeypatch, **config):
    """The app's handlers behind :class:`devtools.local_gateway.LocalWebSocketGateway`
    (``GatewayConfig(stage="test", **config)``, e.g. ``post_latency=0.4``), started in a
    thread; ``WEBSOCKET_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_LAMBDA`` point to its management
    port (PostToConnection, and Lambda Invoke for ``pusher_hello``). Yields the gateway; set
    other environment first, the app's settings and clients are reset here."""
    import app as app_module
    from chalicelib.delivery import post
    from devtools.local_gateway import GatewayConfig, LocalWebSocketGateway

    gw = LocalWebSocketGateway(app_module.app, GatewayConfig(stage="test", **config))
    gw.start_in_thread()
    monkeypatch.setenv("WEBSOCKET_ENDPOINT_URL", gw.management_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{gw.management_port}")
    _reset_clients()
    try:
        yield gw
    finally:
        gw.stop()
        post.reset_clients()


def _reset_clients() -> None:
    from chalicelib import settings
    from chalicelib.registry import table
    from chalicelib.delivery import post

    settings.reset()
    table.reset_clients()
    post.reset_clients()


@pytest.fixture
def aws_env(app_env, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE",
                                                           "PUSH_MAX_WORKERS",
                                                           "PUSH_MAX_ATTEMPTS"):
            monkeypatch.delenv(name, raising=False)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "CONNECTIONS_TABLE": TABLE}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _reset_clients()
    yield {**app_env, **env}
    _reset_clients()


@pytest.fixture
def registry(aws_env):
    from moto import mock_aws

    from chalicelib.registry import table

    with mock_aws():
        _reset_clients()
        table.create_table()
        yield TABLE
    _reset_clients()


@pytest.fixture
def management_api(aws_env, monkeypatch):
    with ManagementAPI(stage="test") as api:
        monkeypatch.setenv("WEBSOCKET_ENDPOINT_URL", api.endpoint_url)
        _reset_clients()
        yield api
    _reset_clients()


@pytest.fixture
def serial_registry(aws_env, monkeypatch):
    import logging
    import threading
    import uuid

    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                               MotoRequestHandler, create_backend_app)
    from werkzeug.serving import make_server

    from chalicelib.registry import table

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app),
                         threaded=False, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="serial-moto", daemon=True)
    thread.start()
    name = f"{TABLE}-{uuid.uuid4().hex[:8]}"  # moto's server state outlives the test
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("CONNECTIONS_TABLE", name)
    _reset_clients()
    try:
        table.create_table()
        yield name
    finally:
        try:
            table.dynamodb().delete_table(TableName=name)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            _reset_clients()


@pytest.fixture
def one_rate_window(monkeypatch):
    """Every client event counts in the same one-second window of the rate limiter
    (``rates.allow_client_event`` with a pinned ``now``; its DynamoDB conditional write is
    the real one): a test sending limit + N events needs no race with the wall clock, which a
    loaded machine loses."""
    from chalicelib.registry import rates

    real = rates.allow_client_event
    pinned = float(int(time.time())) + 0.5
    monkeypatch.setattr(rates, "allow_client_event",
                        lambda connection_id, limit, now=None: real(connection_id, limit,
                                                                    now=pinned))
    return pinned

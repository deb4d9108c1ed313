"""Conformance, side by side: the same client code runs unchanged against soketi (the
reference Pusher-protocol server) and against our own WebSocket API; only host and port differ.

One local stack (``devtools.stack`` on free ports) serves both: it runs soketi with the app's
id, key and secret, and our local API Gateway with the app's handlers. Both servers use the
same ``/pusher/auth`` and ``/pusher/user-auth`` (``chalice local``), so the channel rules are
the same. The ``server`` fixture is parametrized ``soketi`` / ``ours``: a test written once
runs against both, and its id names the server (``test_x[soketi]``, ``test_x[ours]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import pusher
import pytest

from devtools.stack import Stack

SERVERS = ("soketi", "ours")


@dataclass(frozen=True)
class Server:
    """One Pusher-protocol server of the stack, as a client or a server library sees it.

    Attributes:
        name: ``"soketi"`` or ``"ours"``.
        stack: the running local stack (tokens: ``stack.mint(sub)``).
        ws_port: where pusher-js connects (``ws://127.0.0.1:<ws_port>/app/<key>``).
        http_port: where Pusher's HTTP API answers (``/apps/<app_id>/...``) for server
            libraries: soketi's own port, or ``chalice local`` for ours.
    """

    name: str
    stack: Stack
    ws_port: int
    http_port: int

    @property
    def app_id(self) -> str:
        return self.stack.env["PUSHER_APP_ID"]

    @property
    def key(self) -> str:
        return self.stack.env["PUSHER_KEY"]

    @property
    def secret(self) -> str:
        return self.stack.env["PUSHER_SECRET"]

    @property
    def auth_base(self) -> str:
        """Base URL of the app's REST API (``/pusher/auth``, ``/pusher/user-auth``)."""
        return self.stack.http_url

    def library(self, secret: Optional[str] = None, **options) -> pusher.Pusher:
        """The Python ``pusher`` library as an app configures it: only host and port differ."""
        return pusher.Pusher(app_id=self.app_id, key=self.key, secret=secret or self.secret,
                             host="127.0.0.1", port=self.http_port, ssl=False,
                             timeout=options.pop("timeout", 20), **options)

    def client_env(self) -> Dict[str, str]:
        """Environment for a Node client scenario: the server's address and the app's auth."""
        return {
            "SERVER": self.name,
            "PUSHER_KEY": self.key,
            "WS_HOST": "127.0.0.1",
            "WS_PORT": str(self.ws_port),
            "AUTH_BASE": self.auth_base,
        }


@pytest.fixture(scope="session")
def conformance_stack(local_stack):
    """The session's shared local stack (tests/conftest.py): soketi and ours side by side."""
    return local_stack


@pytest.fixture(params=SERVERS)
def server(request, conformance_stack) -> Server:
    """The server under test: ``soketi`` (reference) or ``ours`` (our WebSocket API)."""
    stack = conformance_stack
    if request.param == "soketi":
        return Server("soketi", stack, stack.ports.soketi, stack.ports.soketi)
    return Server("ours", stack, stack.ports.websocket, stack.ports.http)

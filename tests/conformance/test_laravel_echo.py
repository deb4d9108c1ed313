"""Laravel Echo, side by side: ``tests/conformance/laravel_echo.js`` (npm ``laravel-echo`` 2.x
with ``broadcaster: 'pusher'`` and the pusher-js 8 client) runs unchanged against soketi and
against our WebSocket API (the ``server`` fixture: ids ``test_x[soketi]`` / ``test_x[ours]``).
Echo is configured only from ``server.client_env()`` and dev issuer tokens: ``wsHost``/
``wsPort`` of the server, ``authEndpoint`` our ``/pusher/auth`` with a Bearer token (for both
servers), ``forceTLS: false``, ``enabledTransports: ['ws']``. Server events go through
``server.library()``, the Python ``pusher`` library, as a Laravel app's broadcaster would send
them.

Channels follow the app's rules (``chalicelib/channels.py``): ``echo.private('user-<id>')`` is
``private-user-<id>``, allowed to that user only; ``echo.join(room)`` is ``presence-<room>``,
open to every signed-in user (whispers between two users go there: a private channel of the
app's rules has one user).

Not run here: Laravel's PHP Pusher broadcaster (no PHP on this machine); it publishes with
pusher-php-server, which signs requests as the Python library does.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_pusher_e2e import NODE_DIR, NodeClient

pytestmark = pytest.mark.e2e

SCRIPT = str(Path(__file__).resolve().parent / "laravel_echo.js")
#: seconds a step may take (the scenario's own watchdog: 20 s)
WITHIN = 15.0

if not (NODE_DIR / "node_modules" / "laravel-echo").exists():
    pytest.skip("laravel-echo missing: run `make node` (devtools/node/package.json)",
                allow_module_level=True)


def echo(server, scenario: str, **extra: str) -> NodeClient:
    """Start one scenario against ``server``: ``server.client_env()`` plus ``extra``."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(NODE_PATH=str(NODE_DIR / "node_modules"), **server.client_env(), **extra)
    return NodeClient(SCRIPT, scenario, env)


def users(server):
    """Two fresh users: (id, token) each, with a ``name`` claim (presence ``user_info``)."""
    a, b = f"ana{uuid.uuid4().hex[:8]}", f"ben{uuid.uuid4().hex[:8]}"
    return ((a, server.stack.mint(a, name="Ana")), (b, server.stack.mint(b, name="Ben")))


def test_private_listen_receives_a_server_event(server):
    (user, token), _ = users(server)
    client = echo(server, "listen", TOKEN_A=token, USER_A=user)
    ready = client.expect("ready", WITHIN)
    assert ready["channel"] == f"private-user-{user}"
    lib = server.library()
    lib.trigger(f"private-user-{user}", "greet", {"hello": "Ana"})
    received = client.expect("received", WITHIN)
    assert received == {"step": "received", "event": "greet", "data": {"hello": "Ana"}}
    # what Laravel's broadcaster names an event class App\Events\OrderShipped
    lib.trigger(f"private-user-{user}", "App\\Events\\OrderShipped", {"order": 7})
    received = client.expect("received", WITHIN)
    assert received == {"step": "received", "event": "OrderShipped", "data": {"order": 7}}
    assert client.wait() == 0


def test_whisper_reaches_the_other_user_only(server):
    (_, token_a), (_, token_b) = users(server)
    room = f"room-{uuid.uuid4().hex[:8]}"
    client = echo(server, "whisper", TOKEN_A=token_a, TOKEN_B=token_b, ROOM=room)
    assert client.expect("whisper", WITHIN)["data"] == {"from": "a", "n": 1}
    assert client.wait() == 0
    seen = [line["step"] for line in client.drain()]
    assert "echoed_to_sender" not in seen, seen  # client events are not sent back


def test_whisper_between_two_connections_of_one_user_on_a_private_channel(server):
    (user, token), _ = users(server)
    client = echo(server, "whisper_private", TOKEN_A=token, USER_A=user)
    assert client.expect("whisper", WITHIN)["data"] == {"from": "a", "n": 2}
    assert client.wait() == 0
    seen = [line["step"] for line in client.drain()]
    assert "echoed_to_sender" not in seen, seen


@pytest.mark.parametrize("leave_by", ["leave", "disconnect"])
def test_presence_here_joining_leaving(server, leave_by):
    """``here`` lists the members, ``joining`` sees the second user, ``leaving`` sees them go
    (by Echo's ``leave()``, an unsubscribe, or by ``disconnect()``, a closed socket)."""
    (_, token_a), (_, token_b) = users(server)
    room = f"room-{uuid.uuid4().hex[:8]}"
    client = echo(server, "presence", TOKEN_A=token_a, TOKEN_B=token_b, ROOM=room,
                  LEAVE_BY=leave_by)
    assert client.expect("a_here", WITHIN)["members"] == [{"name": "Ana"}]
    assert client.expect("leaving", WITHIN)["member"] == {"name": "Ben"}
    assert client.wait() == 0
    seen = {line["step"]: line for line in client.drain()}  # joining and b_here: any order
    assert seen["joining"]["member"] == {"name": "Ben"}
    assert seen["b_here"]["members"] == [{"name": "Ana"}, {"name": "Ben"}]

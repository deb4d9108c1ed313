"""A raw Pusher protocol 7 client (the frames pusher-js sends) over ``websockets``, for tests
against any Pusher-protocol server on 127.0.0.1: our local gateway or soketi.

Frames follow Pusher's "Pusher Channels Protocol" doc: ``pusher:subscribe`` with ``auth`` and
``channel_data`` for private and presence channels, ``pusher:signin`` with the ``auth`` and
``user_data`` of ``/pusher/user-auth``. Signatures come from the app's own ``/pusher/auth`` and
``/pusher/user-auth`` (:func:`authorize`, :func:`authenticate_user`), called with a Bearer token
as pusher-js calls them.
"""
from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any, Dict, Optional

from websockets.sync.client import connect


def recv(ws, timeout: float = 10.0) -> Dict[str, Any]:
    """The next frame of ``ws`` as a dict; raises ``TimeoutError`` after ``timeout`` seconds
    and ``websockets.exceptions.ConnectionClosed`` once the socket is closed."""
    return json.loads(ws.recv(timeout=timeout))


def _post_form(url: str, token: str, fields: Dict[str, str]) -> Dict[str, Any]:
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def authorize(auth_base: str, token: str, socket_id: str, channel: str) -> Dict[str, Any]:
    """``POST {auth_base}/pusher/auth`` as pusher-js sends it (a form with ``socket_id`` and
    ``channel_name``): ``{"auth"}``, with ``channel_data`` for presence channels. Raises
    ``urllib.error.HTTPError`` on a refusal."""
    return _post_form(f"{auth_base}/pusher/auth", token,
                      {"socket_id": socket_id, "channel_name": channel})


def authenticate_user(auth_base: str, token: str, socket_id: str) -> Dict[str, Any]:
    """``POST {auth_base}/pusher/user-auth`` (``socket_id``): ``{"auth", "user_data"}``."""
    return _post_form(f"{auth_base}/pusher/user-auth", token, {"socket_id": socket_id})


class PusherSocket:
    """A Pusher protocol 7 client (what pusher-js sends) at ``ws://host:port/app/<key>``.

    Args:
        port: the server's WebSocket port (the local gateway's, or soketi's).
        key: the app key.
        host: the server's address (loopback).
    Raises:
        AssertionError: the first frame is not ``pusher:connection_established``.
    Attributes:
        socket_id: the ``socket_id`` the server gave (``\\d+\\.\\d+``).
    """

    def __init__(self, port: int, key: str, host: str = "127.0.0.1"):
        self.ws = connect(f"ws://{host}:{port}/app/{key}?protocol=7&client=js&version=8.6.0"
                          "&flash=false", open_timeout=10)
        frame = recv(self.ws)
        assert frame["event"] == "pusher:connection_established", frame
        self.socket_id = json.loads(frame["data"])["socket_id"]

    def send(self, event: str, data: Any, channel: Optional[str] = None) -> None:
        """Send one frame ``{"event", "data", "channel"?}``."""
        frame: Dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        self.ws.send(json.dumps(frame))

    def subscribe(self, channel: str, auth: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Subscribe and wait for ``pusher_internal:subscription_succeeded`` (returned).

        Args:
            channel: the channel name.
            auth: the answer of :func:`authorize` for private and presence channels.
        Raises:
            AssertionError: any other frame came first.
        """
        data: Dict[str, Any] = {"channel": channel}
        data.update(auth or {})
        self.send("pusher:subscribe", data)
        frame = recv(self.ws)
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        return frame

    def subscribe_authorized(self, auth_base: str, token: str, channel: str) -> Dict[str, Any]:
        """:meth:`subscribe` with a signature from the app's ``/pusher/auth``."""
        return self.subscribe(channel, authorize(auth_base, token, self.socket_id, channel))

    def sign_in(self, auth_base: str, token: str) -> Dict[str, Any]:
        """``pusher:signin`` with a signature from ``/pusher/user-auth``; waits for and returns
        ``pusher:signin_success``."""
        self.send("pusher:signin", authenticate_user(auth_base, token, self.socket_id))
        frame = recv(self.ws)
        assert frame["event"] == "pusher:signin_success", frame
        return frame

    def next_event(self, timeout: float = 10.0) -> Dict[str, Any]:
        """The next frame (see :func:`recv`)."""
        return recv(self.ws, timeout)

    def close(self) -> None:
        self.ws.close()

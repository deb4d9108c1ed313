"""A webhook receiver on 127.0.0.1 that checks every POST as a Pusher webhook endpoint does: with
the real ``pusher`` library's ``Pusher.validate_webhook(key, signature, body)`` (HMAC-SHA256 of
the raw body with the app secret, the key, ``time_ms`` within 5 minutes).

Use in-process::

    with WebhookReceiver(key="app-key", secret="app-secret") as receiver:
        receiver.script = [500]          # answer 500 once, then the default (200)
        receiver.answer_headers = {"Retry-After": "4"}  # sent with every answer
        receiver.mode = "hang"           # accept, read, never answer (until stopped)
        receiver.url("/hooks?token=x")   # http://127.0.0.1:<port>/hooks?token=x
        receiver.accepted                # validated webhooks answered 2xx: [{"time_ms", "events"}]
        receiver.requests                # every POST: {"path", "headers", "body", "valid",
                                         #              "status"}
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, List, Optional

import pusher

from devtools.loopback import LoopbackHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        receiver: "WebhookReceiver" = self.server.receiver  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {name: value for name, value in self.headers.items()}
        validated = receiver.client.validate_webhook(
            key=headers.get("X-Pusher-Key", ""), signature=headers.get("X-Pusher-Signature", ""),
            body=body.decode("utf-8"))
        with receiver.lock:
            mode = receiver.mode
            status = receiver.script.pop(0) if receiver.script else receiver.default_status
            if validated is None and mode == "answer":
                status = 401  # what a Pusher webhook endpoint answers to a bad signature
            receiver.requests.append({"path": self.path, "headers": headers, "body": body,
                                      "valid": validated is not None, "status": status})
        if mode == "hang":
            receiver.released.wait(60)
            return
        if mode == "trickle":  # the status line, a byte at a time
            for byte in b"HTTP/1.1 200 OK\r\n":
                if receiver.released.wait(receiver.trickle_seconds):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return
        if 200 <= status < 300 and validated is not None:
            with receiver.lock:
                receiver.accepted.append(validated)
        answer = b'{"ok":true}'
        self.send_response(status)
        for name, value in receiver.answer_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class WebhookReceiver:
    """The server (see the module docstring). Attributes may change while it runs.

    Attributes:
        mode: ``"answer"`` (default), ``"hang"`` (never answers) or ``"trickle"`` (sends the
            status line one byte every :attr:`trickle_seconds`, never finishes).
        script: statuses answered in order before :attr:`default_status`.
        default_status: 200.
        answer_headers: headers added to every answer (``{}``).
        requests: every POST received.
        accepted: the validated bodies answered 2xx.
    """

    def __init__(self, key: str = "app-key", secret: str = "app-secret",
                 app_id: str = "100001", tls: Any = None) -> None:
        self.tls = tls  # an ssl.SSLContext (server side): serve https instead of http
        self.client = pusher.Pusher(app_id=app_id, key=key, secret=secret)
        self.mode = "answer"
        self.script: List[int] = []
        self.default_status = 200
        self.answer_headers: Dict[str, str] = {}
        self.trickle_seconds = 0.3
        self.requests: List[Dict[str, Any]] = []
        self.accepted: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._server: Optional[LoopbackHTTPServer] = None

    def start(self) -> "WebhookReceiver":
        self._server = LoopbackHTTPServer(_Handler, quiet_errors=True)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.receiver = self  # type: ignore[attr-defined]
        self._server.start(poll_interval=0.05, name="webhook-receiver")
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def url(self, path: str = "/") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> List[Dict[str, Any]]:
        """The first ``count`` accepted webhooks, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.accepted) >= count:
                    return list(self.accepted)
            time.sleep(0.02)
        with self.lock:
            return list(self.accepted)

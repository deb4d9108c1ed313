"""A stand-in for the SSM Parameter Store endpoint on 127.0.0.1, with faults on demand.

Point boto3 at it with ``AWS_ENDPOINT_URL_SSM`` (plus dummy credentials). It speaks the part of
the SSM API the service uses: ``GetParameter`` over the AWS JSON 1.1 protocol (``POST /``,
``X-Amz-Target: AmazonSSM.GetParameter``, body ``{"Name": ..., "WithDecryption": ...}``;
answer ``{"Parameter": {"Name", "Type", "Value", "Version"}}``; an unknown name is a 400
``ParameterNotFound``), as the SSM API reference documents it.

:attr:`SsmServer.mode`:

* ``"ok"``: answer from :attr:`parameters`;
* ``"hang"``: read the request, then never answer (until :meth:`stop`) — a stuck SSM.

:attr:`connections` counts accepted TCP connections; :attr:`requests` records each
``(target, name)``.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Optional, Tuple

from devtools.loopback import LoopbackHTTPServer


class SsmServer:
    """An SSM endpoint the test controls (see the module doc)."""

    def __init__(self, parameters: Optional[Dict[str, str]] = None, mode: str = "ok"):
        self.parameters: Dict[str, str] = dict(parameters or {})
        self.mode = mode
        self.connections = 0
        self.requests: List[Tuple[str, str]] = []
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server: Optional[LoopbackHTTPServer] = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> "SsmServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                with server._lock:
                    server.connections += 1
                super().setup()

            def do_POST(self):  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                target = self.headers.get("X-Amz-Target", "")
                name = body.get("Name", "")
                server.requests.append((target, name))
                if server.mode == "hang":
                    server._release.wait(60)
                    return
                if target != "AmazonSSM.GetParameter":
                    return self._send(400, {"__type": "InvalidAction", "message": target})
                if name not in server.parameters:
                    return self._send(400, {"__type": "ParameterNotFound", "message": ""})
                self._send(200, {"Parameter": {"Name": name, "Type": "SecureString",
                                               "Value": server.parameters[name],
                                               "Version": 1}})

            def _send(self, status: int, document: dict):
                data = json.dumps(document).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up: expected in fault tests

            def log_message(self, *args):
                pass

        self._server = LoopbackHTTPServer(Handler, quiet_errors=True)
        self._server.start(poll_interval=0.05)
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> "SsmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

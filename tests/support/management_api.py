"""A scriptable API Gateway management API (``POST /{stage}/@connections/{id}``) on 127.0.0.1.

moto's ``apigatewaymanagementapi`` never answers ``GoneException`` and cannot throttle, so the
push tests and the fan-out benchmark post to this real HTTP server instead. It answers like API
Gateway: 200 with an empty body; errors with the ``x-amzn-ErrorType`` header botocore reads
(410 ``GoneException``, 429 ``LimitExceededException``, 403 ``ForbiddenException``, 5xx
``InternalServerErrorException``) and ``{"message": ...}``.

Use in-process (tests)::

    with ManagementAPI(stage="test") as api:
        api.gone.add("abc=")                 # 410 for this connection
        api.script["def="] = [429, 429]      # two throttles, then 200
        api.latency = 0.02                   # every answer after 20 ms
        api.throttle(rate=200, burst=20)     # 429 LimitExceededException above 200 posts/s
        ... api.endpoint_url ...             # http://127.0.0.1:<port>/test
        api.received["xyz="]                 # list of posted bodies (bytes)

or as a separate process (the benchmark, so the server does not share the client's GIL)::

    python -m tests.support.management_api --latency 0.02   # prints the endpoint URL
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Optional, Set
from urllib.parse import unquote

from devtools.loopback import LoopbackHTTPServer

ERROR_TYPES = {
    400: "BadRequestException",
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
}


class ManagementAPI:
    """The server. Attributes below may be changed while it runs (guarded by ``lock``).

    Attributes:
        gone: connection ids answered with 410.
        script: connection id -> statuses to answer in order before answering 200.
        default_status: answered to every post not scripted nor gone (200).
        latency: seconds to wait before each answer.
        received: connection id -> bodies delivered (200 answers only).
        attempts: connection id -> number of posts received (any answer).
        requests: every post as ``{"path", "headers" (name -> value), "body", "client_port"}``
            (to check signatures and connection reuse).
        peak_in_flight: the most posts received and not yet answered at one time.
        answers: every answer as ``(time.monotonic(), connection id, status)``.
    """

    def __init__(self, stage: str = "test", latency: float = 0.0, tls=None) -> None:
        self.stage = stage
        self.tls = tls  # an ssl.SSLContext (server side): serve https instead of http
        self.latency = latency
        self.gone: Set[str] = set()
        self.script: Dict[str, List[int]] = {}
        self.default_status = 200
        self.received: Dict[str, List[bytes]] = collections.defaultdict(list)
        self.attempts: Dict[str, int] = collections.Counter()
        self.requests: List[dict] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.answers: List[tuple] = []
        self.rate_limit: Optional[float] = None
        self.burst = 1.0
        self._tokens = 0.0
        self._refilled = 0.0
        self.lock = threading.Lock()
        self._server: Optional[LoopbackHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def endpoint_url(self) -> str:
        """``http(s)://127.0.0.1:<port>/<stage>`` (what ``WEBSOCKET_ENDPOINT_URL`` is set to)."""
        assert self._server is not None, "start() first"
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}/{self.stage}"

    def delivered_total(self) -> int:
        """Number of bodies delivered, over all connections."""
        with self.lock:
            return sum(len(bodies) for bodies in self.received.values())

    def frames(self, connection_id: str) -> List[dict]:
        """JSON frames delivered to a connection, in order."""
        with self.lock:
            return [json.loads(body) for body in self.received.get(connection_id, [])]

    def throttle(self, rate: Optional[float], burst: float = 1.0) -> None:
        """Answer 429 ``LimitExceededException`` to posts above ``rate`` per second (a token
        bucket of ``burst`` posts, full at the start, like API Gateway's throttling: AWS docs,
        "Throttle requests to your REST APIs"); None turns throttling off."""
        with self.lock:
            self.rate_limit, self.burst = rate, float(burst)
            self._tokens, self._refilled = float(burst), time.monotonic()

    def _answer(self, connection_id: str, body: bytes) -> int:
        with self.lock:
            status = self._status(connection_id, body)
            self.answers.append((time.monotonic(), connection_id, status))
            return status

    def _status(self, connection_id: str, body: bytes) -> int:
        self.attempts[connection_id] += 1
        if self.rate_limit is not None:
            now = time.monotonic()
            self._tokens = min(self.burst,
                               self._tokens + (now - self._refilled) * self.rate_limit)
            self._refilled = now
            if self._tokens < 1:
                return 429
            self._tokens -= 1
        if connection_id in self.gone:
            return 410
        queued = self.script.get(connection_id)
        if queued:
            return queued.pop(0)
        status = self.default_status
        if status == 200:
            self.received[connection_id].append(body)
        return status

    def start(self) -> "ManagementAPI":
        """Serve on a free port of 127.0.0.1 in a daemon thread; returns self."""
        api = self
        prefix = f"/{self.stage}/@connections/"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects

            def do_POST(self):  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if not self.path.startswith(prefix):
                    self._send(404, "NotFoundException")
                    return
                connection_id = unquote(self.path[len(prefix):])
                with api.lock:
                    api.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                         "body": body, "client_port": self.client_address[1]})
                    api.in_flight += 1
                    api.peak_in_flight = max(api.peak_in_flight, api.in_flight)
                if api.latency:
                    time.sleep(api.latency)
                with api.lock:
                    api.in_flight -= 1
                status = api._answer(connection_id, body)
                self._send(status, ERROR_TYPES.get(status, "InternalServerErrorException"))

            def _send(self, status: int, error_type: str) -> None:
                data = b"" if status == 200 else json.dumps(
                    {"message": None if status == 410 else error_type}).encode()
                self.send_response(status)
                if status != 200:
                    self.send_header("x-amzn-ErrorType", error_type)
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        server = LoopbackHTTPServer(Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server.start(poll_interval=0.1)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "ManagementAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    """Serve until stdin closes (the parent's lifetime); print the endpoint URL first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--stage", default="bench")
    args = parser.parse_args(argv)
    with ManagementAPI(stage=args.stage, latency=args.latency) as api:
        print(api.endpoint_url, flush=True)
        sys.stdin.read()  # returns when the parent closes our stdin or exits
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

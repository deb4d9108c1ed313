"""A threaded HTTP server on a loopback address, served from a daemon thread.

Every small HTTP server of the dev tools and tests (dev issuer, management API, demo page,
fault-injecting JWKS server, fake management endpoint) starts and stops the same way; this is
that way, once.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Type


class LoopbackHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` bound to ``host`` (127.0.0.1 by default) with daemon threads.

    Args:
        handler: the request handler class.
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        host: a loopback address.
        quiet_errors: drop the traceback ``socketserver`` prints when a client hangs up
            mid-answer (fault-injection servers expect that).
    """

    daemon_threads = True
    request_queue_size = 256  # a fan-out opens many connections at once

    def __init__(self, handler: Type[BaseHTTPRequestHandler], port: int = 0,
                 host: str = "127.0.0.1", *, quiet_errors: bool = False):
        super().__init__((host, port), handler)
        self.quiet_errors = quiet_errors
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self.server_address[1]

    def start(self, poll_interval: float = 0.2,
              name: Optional[str] = None) -> "LoopbackHTTPServer":
        """Serve from a daemon thread; ``poll_interval`` (seconds) bounds how long
        :meth:`stop` waits. Returns self."""
        self._thread = threading.Thread(target=self.serve_forever,
                                        kwargs={"poll_interval": poll_interval},
                                        name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread is not None:
            self.shutdown()
            self._thread = None
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        if not self.quiet_errors:
            super().handle_error(request, client_address)

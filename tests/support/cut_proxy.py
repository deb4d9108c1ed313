"""A loopback TCP relay whose live connections a test can cut: "the server closes the socket",
done the same way in front of any server.

The conformance suite puts it between pusher-js and the server under test (soketi or our local
gateway) to check that pusher-js reconnects and resubscribes after the server side goes away.
Cutting at the TCP level is the one server-side close both servers can be given alike: soketi has
no API that closes one connection (its only server-side closes are shutdown, the 120 s activity
timeout and terminate_user_connections, whose close code 4009 tells pusher-js not to reconnect),
and pusher-js treats a cut connection (close code 1006) as it treats API Gateway's own closes
(1000 after ``DELETE @connections/{id}``, 1001 at the 2-hour limit): every close code below 4000
other than 1002-1004 means "reconnect" (pusher-js ``protocol.ts`` ``getCloseAction``).

Usage::

    with CutProxy(target_port) as proxy:   # listens on 127.0.0.1:proxy.port
        ...                                 # clients connect to proxy.port
        proxy.cut()                          # close every relayed connection, both sides

The relay binds 127.0.0.1 only; its threads are daemons and ``close()`` (or leaving the
``with`` block) stops it.
"""
from __future__ import annotations

import socket
import threading
from typing import List, Tuple


class CutProxy:
    """Relay ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``, byte for byte.

    Args:
        target_port: the server's TCP port on 127.0.0.1.
    Attributes:
        port: where clients connect (a free port, chosen at start).
        accepted: how many client connections were relayed so far.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._pairs: List[Tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="cut-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _shut(sock)

    def cut(self) -> int:
        """Close every connection relayed so far, on both sides, without a WebSocket close
        handshake. Returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _shut(sock)
        return len(pairs)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        if not self._closed:
            self._closed = True
            _shut(self._listener)
            self.cut()

    def __enter__(self) -> "CutProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

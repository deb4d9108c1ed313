"""The custom domains of a stage, on loopback: what CloudFront and API Gateway's custom domain do
on AWS (docs/custom-domains.md), in front of the emulator's ``execute-api`` URLs.

pusher-js always opens ``/app/<key>`` and the Pusher server libraries call ``/apps/<app_id>/…``
on a host and port, with no path prefix; the emulator serves a stage under
``/_aws/execute-api/<api>/<stage>``. So:

* :class:`WebSocketRelay` (one port): the CloudFront Function's rewrite
  (:func:`infra.templates.websocket_path_function_code`): ``/app/<key>?…`` to the stage with
  ``app_key=<key>`` added to the query (a client's own ``app_key`` kept), ``/?…`` to the stage,
  any other path refused with 403. The handshake's headers pass (not ``Host``); a refusal of
  the upstream handshake is answered with its status; frames pass both ways; a close passes on
  with its code.
* :class:`HttpRelay` (another port): the REST custom domain's empty base path mapping, every
  path to the stage's same path.

Both bind 127.0.0.1 and stop with :meth:`stop`.
"""
from __future__ import annotations

import asyncio
import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Dict, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from devtools.loopback import LoopbackHTTPServer

#: the CloudFront Function's key pattern (infra.templates.websocket_path_function_code)
APP_PATH_RE = re.compile(r"^/app/([A-Za-z0-9._~-]{1,200})/?$")
APP_KEY_PARAMETER = "app_key"
#: handshake headers the relay's own connection sets
_HANDSHAKE_HEADERS = {"host", "connection", "upgrade", "sec-websocket-key",
                      "sec-websocket-version", "sec-websocket-extensions",
                      "sec-websocket-accept", "content-length"}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host",
               "proxy-connection", "te", "trailer"}


def rewrite(path_and_query: str) -> Optional[str]:
    """The query string a path reaches the stage with (``""`` for none), or None for 403: the
    CloudFront Function's rewrite."""
    parts = urlsplit(path_and_query)
    query = parse_qsl(parts.query, keep_blank_values=True)
    match = APP_PATH_RE.match(parts.path)
    if match:
        if not any(name == APP_KEY_PARAMETER and value for name, value in query):
            query.append((APP_KEY_PARAMETER, match.group(1)))
    elif parts.path != "/":
        return None
    return urlencode(query)


class WebSocketRelay:
    """``ws://127.0.0.1:<port>/app/<key>`` -> ``<upstream>?…&app_key=<key>`` (see module)."""

    def __init__(self, upstream: str, port: int = 0):
        self.upstream = upstream  # ws://127.0.0.1:<emulator>/_aws/execute-api/<api>/<stage>
        self.port = port
        self.accepted = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._stop: Optional[asyncio.Event] = None
        self._pending: Dict[int, object] = {}

    def start(self) -> "WebSocketRelay":
        ready = threading.Event()
        failure: list = []

        def run() -> None:
            async def main() -> None:
                from websockets.asyncio.server import serve

                self._stop = asyncio.Event()
                try:
                    server = await serve(self._handle, "127.0.0.1", self.port,
                                         process_request=self._process_request,
                                         ping_interval=None, compression=None, max_size=None)
                except Exception as exc:  # port taken
                    failure.append(exc)
                    ready.set()
                    return
                self.port = server.sockets[0].getsockname()[1]
                ready.set()
                async with server:
                    await self._stop.wait()
                    server.close(close_connections=True)
                    await asyncio.wait_for(server.wait_closed(), 5)

            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="ws-relay", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"the WebSocket relay did not start: {failure}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    async def _process_request(self, connection, request):
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        query = rewrite(request.path)
        if query is None:
            return connection.respond(403, "Forbidden\n")
        url = self.upstream + (f"?{query}" if query else "")
        headers = [(name, value) for name, value in request.headers.raw_items()
                   if name.lower() not in _HANDSHAKE_HEADERS]
        try:
            upstream = await connect(url, additional_headers=headers, user_agent_header=None,
                                     open_timeout=20, ping_interval=None, compression=None,
                                     max_size=None, close_timeout=2)
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            return connection.respond(exc.response.status_code, body)
        except Exception as exc:  # the emulator is gone or timed out: a gateway error
            return connection.respond(502, f"{type(exc).__name__}\n")
        self._pending[id(connection)] = upstream
        return None

    async def _handle(self, client) -> None:
        upstream = self._pending.pop(id(client))
        self.accepted += 1

        async def pump(source, target) -> None:
            async for message in source:
                await target.send(message)

        to_upstream = asyncio.ensure_future(pump(client, upstream))
        to_client = asyncio.ensure_future(pump(upstream, client))
        try:
            done, _ = await asyncio.wait({to_upstream, to_client},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
        # the side that ended first: its close code and reason pass to the other side
        ended, other = (upstream, client) if to_client in done else (client, upstream)
        await _close_like(other, ended)
        await _close_like(ended, other)


async def _close_like(target, source) -> None:
    code = source.close_code
    try:
        if code is None or code in (1005, 1006, 1015):
            await target.close()
        else:
            await target.close(code, source.close_reason or "")
    except Exception:
        pass


class HttpRelay:
    """``http://127.0.0.1:<port>/<path>`` -> ``<upstream base path>/<path>`` (the REST API's
    custom domain with an empty base path mapping)."""

    def __init__(self, upstream_host: str, upstream_port: int, base_path: str, port: int = 0):
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() not in _HOP_BY_HOP}
                connection = http.client.HTTPConnection(upstream_host, upstream_port, timeout=30)
                try:
                    connection.request(self.command, base_path + self.path, body=body,
                                       headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                finally:
                    connection.close()
                relay.requests += 1
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _forward  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.requests = 0
        self._server = LoopbackHTTPServer(Handler, port, quiet_errors=True)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> "HttpRelay":
        self._server.start(name="http-relay")
        return self

    def stop(self) -> None:
        self._server.stop()


def relays(emulator_port: int, ws_api: str, rest_api: str, stage: str,
           ws_port: int = 0, http_port: int = 0) -> Tuple[WebSocketRelay, HttpRelay]:
    """Both relays of a stage on the emulator, started."""
    ws = WebSocketRelay(f"ws://127.0.0.1:{emulator_port}/_aws/execute-api/{ws_api}/{stage}",
                        ws_port).start()
    try:
        rest = HttpRelay("127.0.0.1", emulator_port, f"/_aws/execute-api/{rest_api}/{stage}",
                         http_port).start()
    except Exception:
        ws.stop()
        raise
    return ws, rest

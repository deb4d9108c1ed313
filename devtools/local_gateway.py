"""A local API Gateway WebSocket API for a Chalice app: ``$connect`` with a REQUEST authorizer,
route selection, ``$disconnect``, the ``@connections`` management API and API Gateway's limits.

``chalice local`` serves REST routes only (aws/chalice #1674); this module fills the WebSocket
half for development and tests. It loads the Chalice app in-process and invokes its handlers
the way API Gateway + Lambda do, through the app's own ``handler_map`` (the path Chalice's test
client ``lambda_.invoke`` uses), with API-Gateway-shaped events. Dev tooling only: never
deployed.

Behaviour reproduced (sources: AWS API Gateway developer guide, "WebSocket APIs": *Lambda
REQUEST authorizers*, *route selection*, *@connections commands*, *quotas*):

* ``$connect``: the REQUEST authorizer (default ``ws_authorizer``) runs first. Raising
  ``Exception('Unauthorized')`` refuses the handshake with 401, a policy without a matching
  ``Allow`` (or with a matching ``Deny``) with 403, anything else (other exception, bad output,
  non-scalar ``context`` values) with 500. Then ``$connect`` runs with
  ``requestContext.authorizer`` = ``{"principalId", "integrationLatency", **context}``
  (also present on every later event of the connection); a non-2xx ``statusCode`` refuses
  the handshake with that status.
* ``headers`` / ``multiValueHeaders`` / ``queryStringParameters`` /
  ``multiValueQueryStringParameters`` as API Gateway sends them: single-value maps keep the
  last value, and absent maps are ``null``.
* Messages: route selection on ``$request.body.action`` (configurable key) among the app's
  route keys, falling back to ``$default``; no route → ``{"message": "Forbidden", ...}``; a
  handler error → ``{"message": "Internal server error", ...}``. A handler's response
  ``body`` is sent back to the client (``route_responses=True``; on AWS that needs a ``$default``
  route response on the route, which ``chalice deploy`` does not create).
* ``$disconnect`` with ``disconnectStatusCode`` and ``disconnectReason`` whenever a socket
  closes (client close, ``DELETE @connections``, idle timeout, maximum life, oversize frame).
* Management API over HTTP (second port): ``POST``/``GET``/``DELETE
  /{stage}/@connections/{connection_id}`` (id URL-decoded), ``410 GoneException`` for unknown
  or closed ids, ``413 PayloadTooLargeException`` over 128 KB, ``DELETE`` closes the socket.
  boto3's ``apigatewaymanagementapi`` (``endpoint_url=management_url``) works unchanged.
* Limits: 32 KB frames and 128 KB messages (close 1009), 10 min idle timeout, 2 h maximum
  connection life (all settable); optional latency per management call (benchmarks).
* pusher-js paths: ``ws://host:port/app/{key}?protocol=7…`` reaches the stage as it does through
  the custom domain's CloudFront Function on AWS; the key is forwarded as the query parameter
  ``app_key`` (AWS never tells Lambda the path; see ``_mapped_app_key``). Until ``$connect``
  has returned, PostToConnection answers 410 (the connection is known only afterwards), as on
  AWS.
* Lambda ``Invoke`` (``POST /2015-03-31/functions/{name}/invocations`` on the management port,
  for ``AWS_ENDPOINT_URL_LAMBDA``): ``InvocationType=Event`` answers 202 and runs the app's
  function in the handler pool; ``RequestResponse`` answers its result.
* Counters (benchmarks; no AWS equivalent): ``GET /_local/counters`` on the management port
  answers :meth:`LocalWebSocketGateway.counters` — the app's function invocations by name and
  the management API calls by operation and status, since the gateway started.

Handlers run in a thread pool, so a blocking handler (or one that calls the management API of
this very gateway) does not stall the event loop. Messages of one connection are handled in
order, one at a time; different connections run concurrently.

Command line (``make run`` starts it through ``devtools.stack``)::

    python -m devtools.local_gateway --project-dir . --stage dev --port 3001 --management-port 3002
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import email.utils
import fnmatch
import http
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devtools.loopback import LoopbackHTTPServer

log = logging.getLogger("local_gateway")

#: API Gateway WebSocket quotas (AWS docs, "Amazon API Gateway quotas for WebSocket APIs")
MAX_FRAME_BYTES = 32 * 1024
MAX_MESSAGE_BYTES = 128 * 1024
IDLE_TIMEOUT_SECONDS = 10 * 60
MAX_LIFETIME_SECONDS = 2 * 60 * 60

DEFAULT_API_ID = "localdev01"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"


def new_id() -> str:
    """An API-Gateway-style id (connection, request, message): base64 of 11 random bytes,
    16 characters ending in ``=``, like ``L0SM9cOFvHcCIhw=``. May contain ``+`` and ``/``,
    so clients must URL-encode it in ``@connections`` paths (boto3 does)."""
    return base64.b64encode(os.urandom(11)).decode("ascii")


@dataclass
class GatewayConfig:
    """Settings of a :class:`LocalWebSocketGateway`.

    Attributes:
        host: interface for both servers (loopback only by default).
        port: WebSocket port (0 = free port, read back from ``gateway.port``).
        management_port: ``@connections`` HTTP port (0 = free port).
        stage: the stage in URLs (``ws://host:port/{stage}``) and events.
        api_id, region, account_id: used in ``apiId``, ``domainName`` and the authorizer's
            ``methodArn``.
        authorizer: name of the app's REQUEST authorizer Lambda (``@app.lambda_function``),
            or None for no authorizer on ``$connect``.
        identity_sources: authorizer identity sources such as
            ``route.request.querystring.token`` or ``route.request.header.Authorization``; when
            one is missing API Gateway answers 401 without calling the authorizer.
        route_selection_key: the ``$request.body.<key>`` of the route selection expression.
        route_responses: send a handler's response ``body`` back to the client.
        max_frame_bytes, max_message_bytes: incoming limits (bytes); over them the socket is
            closed with 1009.
        idle_timeout, max_lifetime: seconds; the socket is closed with 1001.
        post_latency: seconds added to each management API call (benchmarks).
        max_workers: size of the handler thread pool.
        handshake_timeout: seconds allowed for authorizer + ``$connect``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    management_port: int = 0
    stage: str = "dev"
    api_id: str = DEFAULT_API_ID
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    authorizer: Optional[str] = "ws_authorizer"
    identity_sources: Tuple[str, ...] = ()
    route_selection_key: str = "action"
    route_responses: bool = True
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    max_lifetime: float = MAX_LIFETIME_SECONDS
    post_latency: float = 0.0
    max_workers: int = 32
    handshake_timeout: float = 30.0


@dataclass
class _Connection:
    """One established WebSocket connection, as API Gateway remembers it."""

    connection_id: str
    ws: ServerConnection
    connected_at_ms: int
    source_ip: str
    user_agent: Optional[str]
    authorizer: Optional[Dict[str, Any]]
    last_active: float = field(default_factory=time.monotonic)
    #: close code/reason chosen by the gateway when it closes the socket itself
    close_code: Optional[int] = None
    close_reason: str = ""
    closed: bool = False


class HandshakeRefused(Exception):
    """Internal: the ``$connect`` phase refused the connection with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _LambdaContext:
    """The fields of Lambda's context object handlers commonly read."""

    def __init__(self, function_name: str, timeout_seconds: float = 30.0):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = ""
        self.memory_limit_in_mb = 256
        self.aws_request_id = new_id()
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _json_roundtrip(value: Any) -> Any:
    """What Lambda hands API Gateway: the handler's return value serialized to JSON.
    Raises TypeError/ValueError for values Lambda could not serialize either."""
    return json.loads(json.dumps(value))


def _resource_matches(pattern: str, arn: str) -> bool:
    """IAM resource matching: ``*`` any run of characters, ``?`` one character."""
    return fnmatch.fnmatchcase(arn, pattern.replace("[", "[[]"))


def _action_matches(action: str) -> bool:
    return action in ("*", "execute-api:*", "execute-api:Invoke") or _resource_matches(
        action, "execute-api:Invoke")


def evaluate_policy(policy: Any, method_arn: str) -> bool:
    """Decide an authorizer's IAM policy for ``method_arn`` as API Gateway does.

    Args:
        policy: the ``policyDocument`` (``{"Version", "Statement": [...]}``).
        method_arn: ``arn:aws:execute-api:{region}:{account}:{api_id}/{stage}/$connect``.
    Returns:
        True when some ``Allow`` statement matches and no ``Deny`` statement does.
    Raises:
        ValueError: the document is malformed (API Gateway answers 500).
    """
    if not isinstance(policy, dict) or not isinstance(policy.get("Statement"), (list, dict)):
        raise ValueError("policyDocument needs a Statement")
    statements = policy["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements:
        if not isinstance(statement, dict):
            raise ValueError("policy statements must be objects")
        effect = statement.get("Effect")
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if effect not in ("Allow", "Deny") or not isinstance(actions, list) \
                or not isinstance(resources, list):
            raise ValueError("policy statement needs Effect, Action and Resource")
        if not any(isinstance(a, str) and _action_matches(a) for a in actions):
            continue
        if not any(isinstance(r, str) and _resource_matches(r, method_arn) for r in resources):
            continue
        if effect == "Deny":
            return False
        allowed = True
    return allowed


def _single_and_multi(pairs: List[Tuple[str, str]]) -> Tuple[Optional[dict], Optional[dict]]:
    """API Gateway's ``x`` / ``multiValueX`` pair: last value wins; None when empty."""
    if not pairs:
        return None, None
    single: Dict[str, str] = {}
    multi: Dict[str, List[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def _request_time(now: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LocalWebSocketGateway:
    """An API Gateway WebSocket API in front of a Chalice app, on 127.0.0.1.

    Args:
        app: the ``chalice.Chalice`` application (its ``websocket_handlers`` and
            ``handler_map`` are used; ``app.websocket_api`` is pointed at this gateway's
            management endpoint when it has none yet).
        config: :class:`GatewayConfig`.

    Use :meth:`start_in_thread` / :meth:`stop` from synchronous code (tests, the stack), or
    ``await`` :meth:`start` / :meth:`aclose` inside an event loop. After start, ``port``,
    ``management_port``, :attr:`url` and :attr:`management_url` are the real values.
    """

    def __init__(self, app: Any, config: Optional[GatewayConfig] = None):
        self.app = app
        self.config = config or GatewayConfig()
        self.port = self.config.port
        self.management_port = self.config.management_port
        self._connections: Dict[str, _Connection] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_workers, thread_name_prefix="ws-handler")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server = None
        self._http: Optional[LoopbackHTTPServer] = None
        self._http_thread: Optional[threading.Thread] = None
        self._thread: Optional[threading.Thread] = None
        self._stopped: Optional[asyncio.Event] = None
        self._pending_disconnects: set = set()
        #: makes connection ids (tests may force ids with ``+``, ``/`` and ``=``)
        self.new_connection_id: Any = new_id
        #: (route_key, event) of every handler invocation when ``record_events`` is True
        self.record_events = False
        self.events: List[Tuple[str, Dict[str, Any]]] = []
        self._counts: Dict[Tuple[str, str], int] = {}
        self._counts_lock = threading.Lock()

    # -- addresses -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to: ``ws://host:port/{stage}``."""
        return f"ws://{self.config.host}:{self.port}/{self.config.stage}"

    @property
    def management_url(self) -> str:
        """The ``endpoint_url`` for boto3's ``apigatewaymanagementapi``:
        ``http://host:management_port/{stage}``."""
        return f"http://{self.config.host}:{self.management_port}/{self.config.stage}"

    @property
    def domain_name(self) -> str:
        return f"{self.config.host}:{self.port}"

    def connection_ids(self) -> List[str]:
        """Ids of the currently open connections."""
        with self._lock:
            return [c.connection_id for c in self._connections.values() if not c.closed]

    def _count(self, group: str, name: str, delta: int = 1) -> None:
        with self._counts_lock:
            self._counts[(group, name)] = self._counts.get((group, name), 0) + delta

    def counters(self) -> Dict[str, Dict[str, int]]:
        """What this gateway did since it started (benchmarks count the work per operation).

        Returns:
            ``{"invocations": {function name: count}, "management": {"<Operation> <HTTP
            status>": count}, "running": {function name: count}}``: every invocation of one of the app's functions (authorizer,
            ``$connect``/``$default``/``$disconnect`` handlers, functions run through Lambda
            ``Invoke``), and every management API call (``PostToConnection``,
            ``GetConnection``, ``DeleteConnection``, ``Invoke``) with the status it answered
            (``PostToConnection 410`` for a gone connection...). A call is counted before
            its effect reaches the client (the frame, the close), so a client that saw it
            reads a count that includes it. ``"running"``: the invocations not yet returned,
            by function name (a handler may still work after its client saw an answer).
            ``"pending"``: ``{"$disconnect": n}`` while n closed sockets wait for their TCP
            close before their ``$disconnect`` runs (a client that closed its socket may see
            its ``$disconnect`` start later), else ``{}``.
        """
        with self._counts_lock:
            counts = dict(self._counts)
        result: Dict[str, Dict[str, int]] = {"invocations": {}, "management": {}, "running": {},
                                             "pending": {}}
        for (group, name), value in sorted(counts.items()):
            if value:
                result[group][name] = value
        pending = len(self._pending_disconnects)
        if pending:
            result["pending"]["$disconnect"] = pending
        return result

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> "LocalWebSocketGateway":
        """Bind both servers (inside a running event loop); returns self."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await serve(
            self._serve_connection, cfg.host, cfg.port,
            process_request=self._process_request,
            max_size=(cfg.max_message_bytes, cfg.max_frame_bytes),
            ping_interval=None,  # API Gateway sends no pings; the idle timer decides
            compression=None,
            open_timeout=cfg.handshake_timeout + 5,
            close_timeout=2,
            server_header=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._start_management_server()
        self._configure_app()
        log.info("WebSocket API on %s, management API on %s", self.url, self.management_url)
        return self

    async def aclose(self) -> None:
        """Close every socket (running ``$disconnect``), then both servers."""
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            conn.close_code, conn.close_reason = 1001, "Going away"
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self._pending_disconnects:
            await asyncio.wait(list(self._pending_disconnects), timeout=10)
        if self._http is not None:
            self._http.stop()
            self._http = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start_in_thread(self) -> "LocalWebSocketGateway":
        """Run the gateway on its own event loop in a daemon thread; returns once bound."""
        ready = threading.Event()
        failure: List[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def main() -> None:
                try:
                    await self.start()
                except BaseException as exc:  # reported to the caller below
                    failure.append(exc)
                    ready.set()
                    return
                ready.set()
                await self._stopped.wait()
                await self.aclose()

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, name="local-gateway", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop a gateway started with :meth:`start_in_thread` and release its ports."""
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(20)
            self._thread = None

    def __enter__(self) -> "LocalWebSocketGateway":
        return self.start_in_thread()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _configure_app(self) -> None:
        """Point ``app.websocket_api`` at this gateway. Chalice's own ``configure()`` always
        builds an ``https://`` URL, so the endpoint attribute is set directly, and only when
        the app has not configured one itself."""
        api = getattr(self.app, "websocket_api", None)
        if api is not None and getattr(api, "_endpoint", "unset") is None:
            api._endpoint = self.management_url

    # -- invoking the app ----------------------------------------------------------------
    def _handler_name(self, route_key: str) -> Optional[str]:
        handler = self.app.websocket_handlers.get(route_key)
        return handler.name if handler is not None else None

    def _invoke(self, function_name: str, event: Dict[str, Any]) -> Any:
        """Call a Lambda function of the app by name, as Chalice's test client does; the
        result goes through JSON like Lambda's response payload."""
        if self.record_events:
            self.events.append((event.get("requestContext", {}).get("routeKey", ""), event))
        self._count("invocations", function_name)
        self._count("running", function_name)
        try:
            handler = self.app.handler_map[function_name]
            return _json_roundtrip(handler(event, _LambdaContext(function_name)))
        finally:
            self._count("running", function_name, -1)

    async def _run(self, function_name: str, event: Dict[str, Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._invoke, function_name, event)

    def _request_context(self, route_key: str, event_type: str, connection_id: str,
                         connected_at_ms: int, source_ip: str, user_agent: Optional[str],
                         authorizer: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        now = time.time()
        context = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": new_id(),
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": self.config.stage,
            "connectedAt": connected_at_ms,
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": source_ip, "userAgent": user_agent},
            "requestId": new_id(),
            "domainName": self.domain_name,
            "connectionId": connection_id,
            "apiId": self.config.api_id,
        }
        if event_type == "MESSAGE":
            context["messageId"] = new_id()
        if authorizer is not None:
            context["authorizer"] = dict(authorizer)
        return context

    # -- $connect ------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Optional[Response]:
        """The handshake: path check, authorizer, ``$connect``. Returns a refusal or None."""
        path, _, query = request.path.partition("?")
        app_key = self._mapped_app_key(path)
        if path.rstrip("/") != f"/{self.config.stage}" and app_key is None:
            return self._refuse(connection, 403, "Forbidden")
        source_ip = connection.remote_address[0] if connection.remote_address else "127.0.0.1"
        header_pairs = list(request.headers.raw_items()) + [
            ("X-Forwarded-For", source_ip),
            ("X-Forwarded-Port", str(self.port)),
            ("X-Forwarded-Proto", "http"),
            ("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"),
        ]
        headers, multi_headers = _single_and_multi(header_pairs)
        query_pairs = parse_qsl(query, keep_blank_values=True)
        if app_key is not None and not any(k == "app_key" for k, _ in query_pairs):
            query_pairs.append(("app_key", app_key))
        query_single, query_multi = _single_and_multi(query_pairs)
        connection_id = self.new_connection_id()
        connected_at_ms = int(time.time() * 1000)
        user_agent = request.headers.get("User-Agent")
        base = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query_single,
            "multiValueQueryStringParameters": query_multi,
            "stageVariables": None,
        }
        try:
            authorizer = await asyncio.wait_for(
                self._authorize(base, connection_id, connected_at_ms, source_ip, user_agent),
                self.config.handshake_timeout)
            name = self._handler_name("$connect")
            if name is not None:
                event = dict(base, isBase64Encoded=False, requestContext=self._request_context(
                    "$connect", "CONNECT", connection_id, connected_at_ms, source_ip,
                    user_agent, authorizer))
                try:
                    result = await asyncio.wait_for(self._run(name, event),
                                                    self.config.handshake_timeout)
                except asyncio.TimeoutError:
                    raise HandshakeRefused(504, "Endpoint request timed out") from None
                except Exception:
                    log.exception("$connect handler %s failed", name)
                    raise HandshakeRefused(502, "Internal server error") from None
                status = result.get("statusCode", 200) if isinstance(result, dict) else 200
                if not isinstance(status, int) or not 200 <= status < 300:
                    status = status if isinstance(status, int) and 400 <= status < 600 else 502
                    raise HandshakeRefused(status, http.HTTPStatus(status).phrase)
        except HandshakeRefused as refusal:
            return self._refuse(connection, refusal.status, refusal.message)
        except asyncio.TimeoutError:
            return self._refuse(connection, 504, "Endpoint request timed out")
        connection.gateway_state = _Connection(  # type: ignore[attr-defined]
            connection_id=connection_id, ws=connection, connected_at_ms=connected_at_ms,
            source_ip=source_ip, user_agent=user_agent, authorizer=authorizer)
        return None

    @staticmethod
    def _mapped_app_key(path: str) -> Optional[str]:
        """The key of a pusher-js path ``/app/{key}``, else None.

        pusher-js always connects to ``{host}/app/{key}``; on AWS the custom domain's
        CloudFront Function rewrites that to the stage with ``app_key={key}`` in the query
        (a WebSocket API takes no multi-level API mapping and never tells Lambda the path;
        docs/custom-domains.md). This gateway does the same for any key (unless the client
        sent ``app_key`` itself), so the app's own check of the key runs locally as on AWS.
        """
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "" and parts[1] == "app" and parts[2]:
            return unquote(parts[2])
        return None

    def invoke_function(self, name: str, payload: bytes, asynchronous: bool) -> Tuple[int, bytes]:
        """Lambda ``Invoke`` of one of the app's functions (``AWS_ENDPOINT_URL_LAMBDA``
        pointed at the management port), for handlers that invoke another function.

        Args:
            name: the function name, ARN or ``{app_name}-{stage}-{name}`` as ``chalice
                deploy`` names it.
            payload: the JSON event.
            asynchronous: ``InvocationType=Event``: queued, 202 at once, run in the pool.
        Returns:
            (status, body): 202 / 200 with the JSON result; 404 ``ResourceNotFoundException``
            for an unknown function; 400 for a payload that is not JSON.
        """
        short = name.rsplit(":function:", 1)[-1].split(":", 1)[0]
        prefix = f"{getattr(self.app, 'app_name', '')}-"
        candidates = [short] + ([short[len(prefix):].split("-", 1)[-1]]
                                if short.startswith(prefix) else [])
        function = next((c for c in candidates if c in self.app.handler_map), None)
        if function is None:
            self._count("management", "Invoke 404")
            return 404, json.dumps({"Type": "User", "Message": f"Function not found: "
                                    f"{short}"}).encode()
        try:
            event = json.loads(payload or b"{}")
        except ValueError:
            self._count("management", "Invoke 400")
            return 400, json.dumps({"Type": "User",
                                    "Message": "Could not parse request body into json"}).encode()
        self._count("management", f"Invoke {202 if asynchronous else 200}")
        if asynchronous:
            def run() -> None:
                try:
                    self._invoke(function, event)
                except Exception:
                    log.exception("function %s failed", function)
            self._pool.submit(run)
            return 202, b""
        return 200, json.dumps(self._invoke(function, event)).encode()

    async def _authorize(self, base: Dict[str, Any], connection_id: str, connected_at_ms: int,
                         source_ip: str, user_agent: Optional[str]) -> Optional[Dict[str, Any]]:
        """Run the REQUEST authorizer; return ``requestContext.authorizer`` or raise
        :class:`HandshakeRefused` (401, 403 or 500)."""
        name = self.config.authorizer
        if name is None:
            return None
        if name not in self.app.handler_map:
            raise HandshakeRefused(500, f"authorizer {name!r} is not a function of the app")
        for source in self.config.identity_sources:
            if not self._identity_present(source, base):
                raise HandshakeRefused(401, "Unauthorized")
        method_arn = (f"arn:aws:execute-api:{self.config.region}:{self.config.account_id}:"
                      f"{self.config.api_id}/{self.config.stage}/$connect")
        event = dict(base, type="REQUEST", methodArn=method_arn,
                     requestContext=self._request_context(
                         "$connect", "CONNECT", connection_id, connected_at_ms, source_ip,
                         user_agent, None))
        started = time.monotonic()
        try:
            result = await self._run(name, event)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise HandshakeRefused(401, "Unauthorized") from None
            log.exception("authorizer %s failed", name)
            raise HandshakeRefused(500, "Internal server error") from None
        latency_ms = int((time.monotonic() - started) * 1000)
        try:
            if not isinstance(result, dict) or "principalId" not in result:
                raise ValueError("authorizer output needs principalId and policyDocument")
            allowed = evaluate_policy(result.get("policyDocument"), method_arn)
            context = result.get("context") or {}
            if not isinstance(context, dict) or not all(
                    isinstance(v, (str, int, float, bool)) or v is None
                    for v in context.values()):
                raise ValueError("authorizer context values must be strings, numbers or "
                                 "booleans")
        except ValueError as exc:
            log.error("authorizer %s returned an invalid response: %s", name, exc)
            raise HandshakeRefused(500, "Internal server error") from None
        if not allowed:
            raise HandshakeRefused(403, "Forbidden")
        return {**context, "principalId": result["principalId"],
                "integrationLatency": latency_ms}

    @staticmethod
    def _identity_present(source: str, base: Dict[str, Any]) -> bool:
        prefix_header, prefix_query = "route.request.header.", "route.request.querystring."
        if source.startswith(prefix_header):
            wanted = source[len(prefix_header):].lower()
            return any(k.lower() == wanted and v for k, v in (base["headers"] or {}).items())
        if source.startswith(prefix_query):
            return bool((base["queryStringParameters"] or {}).get(source[len(prefix_query):]))
        return True

    @staticmethod
    def _refuse(connection: ServerConnection, status: int, message: str) -> Response:
        body = json.dumps({"message": message}).encode()
        headers = Headers([("Date", email.utils.formatdate(usegmt=True)),
                           ("Connection", "close"),
                           ("Content-Type", "application/json"),
                           ("Content-Length", str(len(body))),
                           ("x-amzn-ErrorType", http.HTTPStatus(status).phrase.replace(" ", "")
                            + "Exception")])
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    # -- messages and $disconnect ----------------------------------------------------------
    async def _serve_connection(self, ws: ServerConnection) -> None:
        conn: _Connection = ws.gateway_state  # type: ignore[attr-defined]
        with self._lock:
            self._connections[conn.connection_id] = conn
        watchdog = asyncio.create_task(self._watch_timeouts(conn))
        try:
            async for message in ws:
                conn.last_active = time.monotonic()
                await self._handle_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            with self._lock:
                conn.closed = True
                self._connections.pop(conn.connection_id, None)
            task = asyncio.create_task(self._disconnect(conn))
            self._pending_disconnects.add(task)
            task.add_done_callback(self._pending_disconnects.discard)

    async def _watch_timeouts(self, conn: _Connection) -> None:
        cfg = self.config
        deadline_life = time.monotonic() + cfg.max_lifetime
        while True:
            now = time.monotonic()
            idle_deadline = conn.last_active + cfg.idle_timeout
            if now >= deadline_life or now >= idle_deadline:
                conn.close_code, conn.close_reason = 1001, "Going away"
                await conn.ws.close(1001, "Going away")
                return
            await asyncio.sleep(min(deadline_life, idle_deadline) - now + 0.01)

    def _select_route(self, body: str) -> str:
        try:
            parsed = json.loads(body)
        except ValueError:
            return "$default"
        if isinstance(parsed, dict):
            action = parsed.get(self.config.route_selection_key)
            if isinstance(action, str) and not action.startswith("$") \
                    and action in self.app.websocket_handlers:
                return action
        return "$default"

    async def _handle_message(self, conn: _Connection, message: Any) -> None:
        if isinstance(message, bytes):
            body, is_b64 = base64.b64encode(message).decode("ascii"), True
        else:
            body, is_b64 = message, False
        route_key = self._select_route(body) if not is_b64 else "$default"
        context = self._request_context(route_key, "MESSAGE", conn.connection_id,
                                        conn.connected_at_ms, conn.source_ip,
                                        conn.user_agent, conn.authorizer)
        name = self._handler_name(route_key)
        if name is None:
            await self._send_error(conn, "Forbidden", context)
            return
        event = {"requestContext": context, "body": body, "isBase64Encoded": is_b64}
        try:
            result = await self._run(name, event)
        except Exception:
            log.exception("%s handler %s failed", route_key, name)
            await self._send_error(conn, "Internal server error", context)
            return
        if self.config.route_responses and isinstance(result, dict) \
                and result.get("body") is not None:
            reply = result["body"]
            if not isinstance(reply, str):
                reply = json.dumps(reply)
            try:
                await conn.ws.send(reply)
            except ConnectionClosed:
                pass

    @staticmethod
    async def _send_error(conn: _Connection, message: str, context: Dict[str, Any]) -> None:
        try:
            await conn.ws.send(json.dumps({"message": message,
                                           "connectionId": conn.connection_id,
                                           "requestId": context["requestId"]}))
        except ConnectionClosed:
            pass

    async def _disconnect(self, conn: _Connection) -> None:
        try:
            await asyncio.wait_for(conn.ws.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass
        ws = conn.ws.protocol
        if conn.close_code is not None:
            code, reason = conn.close_code, conn.close_reason
        elif ws.close_rcvd is not None and (ws.close_rcvd_then_sent or ws.close_sent is None):
            code, reason = ws.close_rcvd.code, ws.close_rcvd.reason
        elif ws.close_sent is not None:
            code, reason = ws.close_sent.code, ws.close_sent.reason
        else:
            code, reason = 1006, ""
        name = self._handler_name("$disconnect")
        if name is None:
            return
        context = self._request_context("$disconnect", "DISCONNECT", conn.connection_id,
                                        conn.connected_at_ms, conn.source_ip, conn.user_agent,
                                        conn.authorizer)
        context["disconnectStatusCode"] = code
        context["disconnectReason"] = reason
        headers = {"Host": self.domain_name, "X-Forwarded-For": conn.source_ip}
        event = {"headers": headers,
                 "multiValueHeaders": {k: [v] for k, v in headers.items()},
                 "requestContext": context, "isBase64Encoded": False}
        try:
            await self._run(name, event)
        except Exception:
            log.exception("$disconnect handler %s failed", name)

    # -- management API ------------------------------------------------------------------
    def _lookup(self, connection_id: str) -> Optional[_Connection]:
        with self._lock:
            conn = self._connections.get(connection_id)
        return conn if conn is not None and not conn.closed else None

    def _call_in_loop(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def post_to_connection(self, connection_id: str, data: bytes) -> int:
        """PostToConnection: send ``data`` (text frame when UTF-8, else binary).

        Returns:
            HTTP status: 200, 410 (unknown or closed connection), 413 (over
            ``max_message_bytes``).
        """
        if len(data) > self.config.max_message_bytes:
            self._count("management", "PostToConnection 413")
            return 413
        conn = self._lookup(connection_id)
        if conn is None:
            self._count("management", "PostToConnection 410")
            return 410
        try:
            payload: Any = data.decode("utf-8")
        except UnicodeDecodeError:
            payload = data

        async def send() -> bool:
            self._count("management", "PostToConnection 200")  # before the client sees it
            try:
                await conn.ws.send(payload)
                return True
            except ConnectionClosed:
                self._count("management", "PostToConnection 200", -1)
                self._count("management", "PostToConnection 410")
                return False

        return 200 if self._call_in_loop(send()) else 410

    def get_connection(self, connection_id: str) -> Optional[Dict[str, Any]]:
        """GetConnection: ``{"connectedAt", "identity": {"sourceIp", "userAgent"},
        "lastActiveAt"}`` (ISO 8601), or None when gone."""
        conn = self._lookup(connection_id)
        self._count("management", f"GetConnection {410 if conn is None else 200}")
        if conn is None:
            return None
        idle = time.monotonic() - conn.last_active
        return {"connectedAt": _iso(conn.connected_at_ms),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                "lastActiveAt": _iso(int((time.time() - idle) * 1000))}

    def delete_connection(self, connection_id: str) -> bool:
        """DeleteConnection: close the socket (1000); False when already gone."""
        conn = self._lookup(connection_id)
        self._count("management", f"DeleteConnection {410 if conn is None else 204}")
        if conn is None:
            return False
        conn.close_code, conn.close_reason = 1000, ""

        async def close() -> None:
            await conn.ws.close(1000)

        self._call_in_loop(close())
        return True

    def _start_management_server(self) -> None:
        gateway = self
        prefix = f"/{self.config.stage}/@connections/"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: Optional[dict] = None,
                       error_type: Optional[str] = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("x-amzn-RequestId", new_id())
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _target(self) -> Optional[str]:
                path = urlsplit(self.path).path
                if not path.startswith(prefix) or len(path) == len(prefix):
                    return None
                return unquote(path[len(prefix):])

            def _gone(self) -> None:
                self._reply(410, {"message": None}, "GoneException")

            def _not_found(self) -> None:
                self._reply(403, {"message": "Forbidden"}, "ForbiddenException")

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length > 0 else b""

            def _pause(self) -> None:
                if gateway.config.post_latency > 0:
                    time.sleep(gateway.config.post_latency)

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                data = self._body()
                path = urlsplit(self.path).path
                if path.startswith("/2015-03-31/functions/") and path.endswith("/invocations"):
                    name = unquote(path[len("/2015-03-31/functions/"):-len("/invocations")])
                    kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
                    status, body = gateway.invoke_function(name, data, kind == "Event")
                    self.send_response(status)
                    self.send_header("x-amzn-RequestId", new_id())
                    if status == 404:
                        self.send_header("x-amzn-ErrorType", "ResourceNotFoundException")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                target = self._target()
                if target is None:
                    return self._not_found()
                self._pause()
                status = gateway.post_to_connection(target, data)
                if status == 413:
                    return self._reply(413, {"message": "Message too long. Maximum size is "
                                                        f"{gateway.config.max_message_bytes} "
                                                        "bytes."},
                                       "PayloadTooLargeException")
                if status == 410:
                    return self._gone()
                self._reply(200)

            def do_GET(self) -> None:  # noqa: N802
                if urlsplit(self.path).path == "/_local/counters":
                    return self._reply(200, gateway.counters())
                target = self._target()
                if target is None:
                    return self._not_found()
                self._pause()
                info = gateway.get_connection(target)
                if info is None:
                    return self._gone()
                self._reply(200, info)

            def do_DELETE(self) -> None:  # noqa: N802
                self._body()
                target = self._target()
                if target is None:
                    return self._not_found()
                self._pause()
                if not gateway.delete_connection(target):
                    return self._gone()
                self._reply(204)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("management API: " + fmt, *args)

        self._http = LoopbackHTTPServer(Handler, self.config.management_port,
                                        self.config.host).start(name="local-gateway-management")
        self.management_port = self._http.port


# -- command line ----------------------------------------------------------------------------

def load_app(project_dir: str, stage: str) -> Any:
    """Load the Chalice app of ``project_dir`` as ``chalice local`` does: the stage's
    ``environment_variables`` from ``.chalice/config.json`` applied over ``os.environ`` first.

    Returns:
        the ``chalice.Chalice`` app object.
    """
    from chalice.cli.factory import CLIFactory

    factory = CLIFactory(project_dir=os.path.abspath(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    return config.chalice_app


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.local_gateway",
                                     description="Local API Gateway WebSocket API for a "
                                                 "Chalice app (development only).")
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--management-port", type=int, default=3002)
    parser.add_argument("--api-id", default=DEFAULT_API_ID)
    parser.add_argument("--authorizer", default="ws_authorizer",
                        help="REQUEST authorizer function name; '' for none")
    parser.add_argument("--identity-source", action="append", default=[],
                        help="e.g. route.request.querystring.token (repeatable)")
    parser.add_argument("--no-route-responses", action="store_true",
                        help="do not send handler response bodies back (like a route "
                             "without a route response on AWS)")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_SECONDS)
    parser.add_argument("--max-lifetime", type=float, default=MAX_LIFETIME_SECONDS)
    parser.add_argument("--post-latency", type=float, default=0.0,
                        help="seconds added to each management API call")
    parser.add_argument("--sqs", action="store_true",
                        help="also feed the app's @app.on_sqs_message queues to their handlers "
                             "(devtools.local_sqs; endpoint from AWS_ENDPOINT_URL_SQS)")
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    for noisy in ("botocore", "boto3", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = load_app(args.project_dir, args.stage)
    config = GatewayConfig(
        host=args.host, port=args.port, management_port=args.management_port,
        stage=args.stage, api_id=args.api_id, authorizer=args.authorizer or None,
        identity_sources=tuple(args.identity_source),
        route_responses=not args.no_route_responses, idle_timeout=args.idle_timeout,
        max_lifetime=args.max_lifetime, post_latency=args.post_latency)
    gateway = LocalWebSocketGateway(app, config)

    async def run() -> None:
        try:
            await gateway.start()
        except OSError as exc:
            print(f"local gateway: cannot bind {args.host}:{args.port}/"
                  f"{args.management_port}: {exc.strerror}", file=sys.stderr)
            raise SystemExit(1)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pollers = []
        if args.sqs:
            from devtools.local_sqs import SqsPoller, sqs_handlers

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
                or DEFAULT_REGION
            for source in sqs_handlers(app):
                pollers.append(await loop.run_in_executor(None, SqsPoller(
                    app, source["name"], source["queue"], source["batch_size"],
                    region=region).start))
        print(f"local gateway ready: {gateway.url} (management {gateway.management_url})",
              flush=True)
        await stop.wait()
        for poller in pollers:
            await loop.run_in_executor(None, poller.stop)
        await gateway.aclose()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

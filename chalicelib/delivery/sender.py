"""The PostToConnection sender: many posts of one frame at low CPU cost per post.

Used by :mod:`chalicelib.delivery.push`. One call of :meth:`Sender.post_many` posts one payload to
many connection ids. Standard library only at import time; botocore (the signer,
:mod:`chalicelib.delivery.signing`) and httptools are imported at the first post.

How (figures in README.md, "Push", measured by ``make bench``):

* **signing** — botocore's ``SigV4Auth`` (see :mod:`chalicelib.delivery.signing`); credentials
  from botocore's credential chain, read again through ``get_frozen_credentials()`` at the start of
  every fan-out and at most :data:`CREDENTIALS_CHECK_SECONDS` apart within one, so refreshable
  credentials (a Lambda role's, ``AWS_CREDENTIAL_EXPIRATION``) are renewed the way botocore
  renews them.
* **HTTP** — no HTTP code of our own: the standard library's ``http.client`` (the HTTP/1.1
  client urllib3 and so botocore are built on) opens each connection (TCP, TLS with
  certificate and host name checks) and formats each request (:class:`_RequestWriter`: head
  and frame leave in one write); ``httptools`` (llhttp, the parser of Node.js) parses the
  answers as their bytes arrive (:class:`_Link`), at ~1 µs each instead of ~45 µs for
  ``http.client``'s ``getresponse``. One keep-alive connection per post in flight, up to
  ``max_connections``, kept between fan-outs. Why not aiohttp (which the issue allowed):
  measured on the same benchmark, ~275 µs of CPU per request before signing, twice this
  whole sender's; h11 (httpx's) ~50 µs per request cycle in pure Python, no gain over
  ``http.client``. One thread drives every connection with a ``selectors`` loop: a request is
  written on every free connection, then answers are read as they become readable (a partial
  answer waits in place for the rest). No thread
  pool: with the GIL, hand-offs between threads cost CPU (the boto3 engine on 32 threads spent
  10-50 % more CPU per post than the same client in one thread). Each
  socket stays registered with the selector for the whole fan-out; an idle connection that
  becomes readable has been closed by the server and is replaced.
* **answers** — only the status and ``x-amzn-ErrorType`` are read (API Gateway's error
  convention, the header botocore reads): see :func:`classify`.

Outcomes of one post (AWS docs, ``PostToConnection`` API reference and "Use @connections
commands in your backend service"):

* 2xx: :data:`DELIVERED`;
* 410 / ``GoneException``: :data:`GONE` (the caller removes the connection), never retried;
* 429 / throttling error types: the sender slows down (:class:`SendRate`: the send rate is
  halved, then climbs back additively) and the post is sent again after a full-jitter
  back-off; a throttled answer does not use up an attempt while the fan-out is younger than
  ``throttle_seconds`` (so throttling slows a fan-out down but does not lose its posts), after
  that it counts as one;
* 5xx, network errors and timeouts: retried after a full-jitter
  back-off up to ``max_attempts`` attempts in all, then :data:`RETRYABLE`; a post that fails
  because the server had closed an idle keep-alive connection is sent again at once on a new
  connection, without counting an attempt (nothing was processed);
* anything else (403, 400 for an unknown connection id, a TLS certificate that fails
  verification, ...): :data:`FAILED` at once.
"""
from __future__ import annotations

import heapq
import http.client
import logging
import os
import random
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

log = logging.getLogger("realtime.push")

#: the management API call made (IAM: ``execute-api:ManageConnections`` on
#: ``POST /{stage}/@connections/{connectionId}``)
OPERATION = "post_to_connection"

DELIVERED, GONE, FAILED, RETRYABLE = "delivered", "gone", "failed", "retryable"

THROTTLING_CODES = frozenset({"LimitExceededException", "TooManyRequestsException",
                              "ThrottlingException", "Throttling", "ThrottledException"})
#: first back-off ceiling and the largest one, seconds (full jitter: AWS Architecture Blog,
#: "Exponential Backoff And Jitter")
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
#: longest time between two reads of the credential chain during one fan-out, seconds
CREDENTIALS_CHECK_SECONDS = 1.0
#: connections opened per loop turn at most, so answers keep being read while a large
#: fan-out opens its connections
OPEN_PER_TURN = 16
#: connection attempts failing in a row after which every post not yet answered fails at once
#: (retryable): the endpoint is unreachable, and waiting ``connect_timeout`` for each of
#: thousands of posts would outlast the function
MAX_CONNECT_FAILURES = 3

_NETWORK_ERRORS = (OSError, http.client.HTTPException)

#: AIMD after a throttled answer (429): the send rate is multiplied by this (multiplicative
#: decrease), then grows linearly back to where it was in :data:`THROTTLE_RECOVERY_SECONDS`
#: (additive increase, at least :data:`MIN_SEND_RATE` per recovery period); without a
#: throttled answer for :data:`THROTTLE_QUIET_SECONDS` the limit is lifted. Never below
#: :data:`MIN_SEND_RATE` posts per second: a throttle met while sending slowly (one post)
#: means others drain the account's bucket, and a warm function must not crawl for long.
THROTTLE_DECREASE = 0.5
THROTTLE_RECOVERY_SECONDS = 5.0
THROTTLE_QUIET_SECONDS = 10.0
MIN_SEND_RATE = 50.0
#: how far a paced sender may catch up after a late loop turn, seconds of posts
PACING_CATCH_UP_SECONDS = 0.05
#: the span of recent posts measured to find the rate to halve at the first throttle, seconds
RATE_WINDOW_SECONDS = 1.0


def backoff_seconds(attempt: int) -> float:
    """Full-jitter delay after failed attempt number ``attempt`` (1-based), seconds:
    uniform in ``[0, min(cap, base * 2 ** (attempt - 1))]``."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS,
                                 BACKOFF_BASE_SECONDS * (2 ** (attempt - 1))))


def classify(status: int, error_type: str = "") -> str:
    """The outcome of one answer of PostToConnection.

    Args:
        status: the HTTP status.
        error_type: the ``x-amzn-ErrorType`` header (``"GoneException"``, or
            ``"Code:detail"`` — only the part before ``:`` counts), or ``""``.
    Returns:
        :data:`DELIVERED` (2xx), :data:`GONE` (410 or ``GoneException``), :data:`RETRYABLE`
        (429, a throttling error type or 5xx) or :data:`FAILED` (any other answer).
    """
    code = error_type.split(":", 1)[0].strip()
    if code == "GoneException" or status == 410:
        return GONE
    if 200 <= status < 300:
        return DELIVERED
    if status == 429 or status >= 500 or code in THROTTLING_CODES:
        return RETRYABLE
    return FAILED


def tls_context() -> ssl.SSLContext:
    """The client TLS context of every sender: certificates and host names verified against
    ``AWS_CA_BUNDLE`` when set (botocore's setting for the same purpose), else the system's
    trust store; at most TLS 1.2.

    Why not TLS 1.3: a TLS 1.3 server sends its session tickets after the handshake. On the
    sender's selector loop a ticket arriving on a connection makes it readable: an in-flight
    post's read then blocks until its answer (serializing the fan-out), and an idle keep-alive
    connection looks closed by the server, so every fan-out would pay new handshakes (about
    1 ms of CPU each). TLS 1.2 carries its ticket inside the handshake. API Gateway's endpoints
    accept TLS 1.2 (its security policies all allow it: AWS docs, "Choosing a security policy
    for your custom domain in API Gateway").
    """
    cafile = os.environ.get("AWS_CA_BUNDLE") or None
    context = ssl.create_default_context(cafile=cafile)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- send rate (AIMD) -------------------------------------------------------------------------

class SendRate:
    """The pace of posts of one :class:`Sender` (so of one process and endpoint, across its
    fan-outs): additive increase, multiplicative decrease on throttling.

    Unlimited until API Gateway throttles (429 ``LimitExceededException``: the account's
    requests-per-second quota, shared by every API of the region — AWS docs, "Amazon API
    Gateway quotas"). Then:

    * **decrease** — at a throttled answer to a post sent after the last decrease, the limit
      becomes :data:`THROTTLE_DECREASE` × the current rate (the limit, or at the first throttle
      the rate measured over the last :data:`RATE_WINDOW_SECONDS`), at least
      :data:`MIN_SEND_RATE`; answers to posts sent before the last decrease are ignored (they
      were sent at the old rate);
    * **increase** — the limit grows linearly back to its value before the decrease in
      :data:`THROTTLE_RECOVERY_SECONDS`, and beyond at the same slope (at least
      :data:`MIN_SEND_RATE` per recovery period);
    * **recovery** — :data:`THROTTLE_QUIET_SECONDS` without a throttle lift the limit.

    Posts are paced at the limit (at most :data:`PACING_CATCH_UP_SECONDS` worth of posts at
    once after a late turn). Thread-safe.

    Args:
        clock: monotonic seconds (tests).
    Attributes:
        limit: posts per second, or None when unlimited.
        throttles: throttled answers seen.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limit: Optional[float] = None
        self.throttles = 0
        self._next = 0.0
        self._decreased_at = float("-inf")
        self._updated = 0.0
        self._slope = 0.0
        self._sent: Deque[float] = deque()
        self._lock = threading.Lock()

    def _grow(self, now: float) -> None:
        if self.limit is None:
            return
        if now - self._decreased_at >= THROTTLE_QUIET_SECONDS:
            self.limit = None
            return
        self.limit += self._slope * max(0.0, now - self._updated)
        self._updated = now

    def take(self, now: Optional[float] = None) -> float:
        """Ask to start one post now.

        Returns:
            0.0 when it may start (it is counted as sent), else the seconds to wait first.
        """
        now = self.clock() if now is None else now
        with self._lock:
            self._grow(now)
            if self.limit is not None:
                if self._next > now:
                    return self._next - now
                self._next = max(self._next, now - PACING_CATCH_UP_SECONDS) + 1.0 / self.limit
            sent = self._sent
            sent.append(now)
            while sent and sent[0] < now - RATE_WINDOW_SECONDS:
                sent.popleft()
            return 0.0

    def throttled(self, sent_at: float, now: Optional[float] = None) -> None:
        """Report a throttled answer to a post started at ``sent_at`` (monotonic seconds)."""
        now = self.clock() if now is None else now
        with self._lock:
            self.throttles += 1
            if sent_at < self._decreased_at:
                return
            self._grow(now)
            if self.limit is not None:
                current = self.limit
            else:
                span = max(0.1, now - self._sent[0]) if self._sent else 1.0
                current = len(self._sent) / span
            lowered = max(MIN_SEND_RATE, current * THROTTLE_DECREASE)
            self._slope = max(MIN_SEND_RATE, current - lowered) / THROTTLE_RECOVERY_SECONDS
            self.limit = lowered
            self._decreased_at = self._updated = now
            self._next = min(self._next, now + 1.0 / lowered)
            log.warning("PostToConnection throttled: send rate lowered to %.0f posts/s", lowered)


# --- connections ------------------------------------------------------------------------------

class _RequestWriter(http.client.HTTPConnection):
    """Formats requests with ``http.client``'s own code (``putrequest``/``putheader``/
    ``endheaders``: request line, header validation, ``Content-Length``) without connecting:
    :meth:`send`, the documented method through which ``http.client`` writes everything, holds
    the pieces, and :meth:`encode` returns them joined, so head and frame leave in one write
    (one syscall, one TLS record and one TCP segment for a small frame, instead of
    ``http.client``'s two writes). One per fan-out (not thread-safe).
    """

    def __init__(self) -> None:
        super().__init__("localhost")  # never connects; Host is among the signed headers
        self._held: List[bytes] = []

    def send(self, data) -> None:
        self._held.append(data if isinstance(data, bytes) else bytes(data))

    def encode(self, path: str, headers: Dict[str, str], body: bytes, length: str) -> bytes:
        """``POST path`` with ``headers`` (name -> value, ``Host`` among them),
        ``Content-Length: length`` and ``body``, as bytes.

        Raises:
            ValueError: a header name or value, or the path, that ``http.client`` refuses.
        """
        held = self._held
        try:
            self.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                self.putheader(name, value)
            self.putheader("Content-Length", length)
            self.endheaders(body)
            return b"".join(held)
        finally:
            held.clear()
            self.close()  # http.client's state back to idle (there is no socket)


class _Link:
    """One keep-alive connection to the management API.

    ``http.client`` opens it (:meth:`open`: TCP, TLS with certificate and host name checks)
    and writes each request through ``HTTPConnection.send``; its answers are parsed by
    ``httptools`` (MagicStack's binding of llhttp, the HTTP parser of Node.js; uvicorn's) as
    they arrive (:meth:`read`), instead of ``http.client``'s ``getresponse``, whose header
    parsing through the ``email`` package cost ~45 µs of CPU per answer, a third of the
    budget per post (``httptools``: ~1 µs). Only the status, ``x-amzn-ErrorType`` and whether
    the server keeps the connection alive are kept; the body (an error's message) is skipped.

    Attributes:
        conn: the ``http.client`` connection (``conn.sock`` is None when closed).
        status: the last answer's HTTP status.
        error_type: its ``x-amzn-ErrorType`` header, or ``""``.
        keep_alive: False when the last answer said the server closes the connection.
    """

    __slots__ = ("conn", "parser", "status", "error_type", "complete", "keep_alive",
                 "received")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.parser: Any = None
        self.status = 0
        self.error_type = ""
        self.complete = False
        self.keep_alive = True
        self.received = False

    @property
    def sock(self) -> Optional[socket.socket]:
        return self.conn.sock

    def open(self, read_timeout: float) -> None:
        """Connect (and handshake); later reads wait ``read_timeout`` seconds at most.

        Raises:
            OSError: the connection or the TLS handshake failed.
        """
        import httptools

        self.conn.connect()
        self.conn.sock.settimeout(read_timeout)
        self.parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.conn.close()
        self.parser = None

    def send(self, request: bytes) -> None:
        """Write one request (:meth:`_RequestWriter.encode`) and expect its answer.

        Raises:
            OSError: the write failed.
        """
        self.error_type, self.complete, self.received = "", False, False
        self.conn.send(request)

    def read(self) -> bool:
        """Read what the socket has (it is readable) into the parser.

        Returns:
            True when the answer is complete (:attr:`status`, :attr:`error_type`).
        Raises:
            http.client.RemoteDisconnected: the server closed the connection before any byte
                of the answer (an idle keep-alive connection it had dropped).
            ConnectionError: it closed the connection in the middle of the answer.
            httptools.HttpParserError: the answer is not HTTP/1.1.
            httptools.HttpParserUpgrade: the answer switches protocols (101).
            OSError: the read failed or timed out.
        """
        sock = self.conn.sock
        data = sock.recv(65536)
        if not data:
            if self.received:
                raise ConnectionError("connection closed in the middle of an answer")
            raise http.client.RemoteDisconnected("connection closed before an answer")
        self.received = True
        self.parser.feed_data(data)
        pending = getattr(sock, "pending", None)  # TLS: a record decrypted, not yet read
        while pending is not None and not self.complete and pending():
            self.parser.feed_data(sock.recv(65536))
        return self.complete

    # llhttp callbacks (httptools' protocol)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 16 and name.lower() == b"x-amzn-errortype":
            self.error_type = value.decode("latin-1")

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # an interim answer (100 Continue, 103 Early Hints: RFC 9110 section 15.2; http.client
            # skips 100 as well): the final answer follows on the same connection
            self.error_type = ""
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


# --- the sender -------------------------------------------------------------------------------

class _Post:
    __slots__ = ("connection_id", "path", "attempt", "fresh_retry", "sent_at", "throttled")

    def __init__(self, connection_id: str, path: str) -> None:
        self.connection_id, self.path = connection_id, path
        self.attempt = 1
        self.fresh_retry = False
        self.sent_at = 0.0
        self.throttled = 0


class Sender:
    """Posts payloads to connections of one management API endpoint.

    Thread-safe: concurrent :meth:`post_many` calls use different connections.

    Args:
        endpoint: ``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`` or a local
            ``http://`` endpoint (no trailing slash).
        region: the region signed for.
        max_connections: posts in flight at once (= keep-alive connections kept).
        connect_timeout, read_timeout: seconds, per connection attempt and per answer.
        credentials: a botocore credentials object (``get_frozen_credentials()``); default
            :func:`credential_source`.
    Raises:
        ValueError: the endpoint is not an http(s) URL.
    """

    def __init__(self, endpoint: str, region: str, *, max_connections: int = 128,
                 connect_timeout: float = 2.0, read_timeout: float = 5.0,
                 credentials: Any = None) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.max_connections = max(1, int(max_connections))
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._https = parts.scheme == "https"
        self._hostname = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._host = parts.netloc
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/") + "/@connections/"
        self._credentials = credentials
        self._ssl_context: Optional[ssl.SSLContext] = None
        self._keys: Dict[Tuple[str, str, str, str], bytes] = {}
        self._idle: List[_Link] = []
        self._lock = threading.Lock()
        #: the pace of this sender's posts, kept across fan-outs (:class:`SendRate`)
        self.rate = SendRate()

    # -- connections

    def _new_connection(self) -> _Link:
        if self._https:
            if self._ssl_context is None:
                self._ssl_context = tls_context()
            return _Link(http.client.HTTPSConnection(
                self._hostname, self._port, timeout=self.connect_timeout,
                context=self._ssl_context))
        return _Link(http.client.HTTPConnection(self._hostname, self._port,
                                                timeout=self.connect_timeout))

    def _take(self, wanted: int) -> List[_Link]:
        with self._lock:
            taken = self._idle[-wanted:] if wanted else []
            del self._idle[len(self._idle) - len(taken):]
            return taken

    def _give_back(self, conns: Sequence[_Link]) -> None:
        with self._lock:
            room = self.max_connections - len(self._idle)
            kept = [c for c in conns if c.sock is not None][:max(0, room)]
            self._idle.extend(kept)
        for conn in conns:
            if conn not in kept:
                conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- signing

    def _frozen_credentials(self):
        from chalicelib.delivery.signing import credential_source

        source = self._credentials if self._credentials is not None else credential_source()
        if source is None:
            return None
        return source.get_frozen_credentials()

    # -- one fan-out

    def post_many(self, connection_ids: Sequence[str], data: bytes, *, max_attempts: int = 4,
                  throttle_seconds: float = 10.0,
                  on_gone: Optional[Callable[[str], None]] = None,
                  sleep: Callable[[float], None] = time.sleep) -> Dict[str, str]:
        """POST ``data`` to ``{endpoint}/@connections/{id}`` for every id, paced by
        :attr:`rate`.

        Args:
            connection_ids: distinct, non-empty connection ids.
            data: the payload (bytes).
            max_attempts: attempts per post on retryable failures (>= 1).
            throttle_seconds: for this long after the call starts, a throttled answer (429)
                slows the sender down and the post waits its turn without using up an
                attempt; later throttled answers count as attempts.
            on_gone: called once with each id answered 410, from this thread, as soon as the
                answer is read (it may block: other posts stay in flight meanwhile).
            sleep: used when nothing is in flight and the next retry is due later (tests).
        Returns:
            ``{connection_id: outcome}`` with :data:`DELIVERED`, :data:`GONE`,
            :data:`FAILED` or :data:`RETRYABLE`. Never raises for a post's failure.
        """
        outcomes: Dict[str, str] = {}
        if not connection_ids:
            return outcomes
        max_attempts = max(1, int(max_attempts))
        credentials = self._frozen_credentials()
        if credentials is None:
            log.warning("%s: no AWS credentials found; %d posts failed", OPERATION,
                        len(connection_ids))
            return {cid: FAILED for cid in connection_ids}
        import httptools

        from chalicelib.delivery.signing import FanoutSigV4Auth, SigningRequest

        # not HTTP, or an upgrade (101) nobody asked for: the connection is unusable
        errors = _NETWORK_ERRORS + (httptools.HttpParserError, httptools.HttpParserUpgrade)
        writer = _RequestWriter()
        signer = FanoutSigV4Auth(credentials, self.region, self._keys)
        checked = time.monotonic()
        origin, base_path, host = self._origin, self._base_path, self._host
        body_length = str(len(data))

        pending: Deque[_Post] = deque(
            _Post(cid, base_path + quote(cid, safe="")) for cid in connection_ids)
        delayed: List[Tuple[float, int, _Post]] = []  # (due, seq, post), a heap
        seq = 0
        wanted = min(self.max_connections, len(pending))
        idle = self._take(wanted)
        own: List[_Link] = list(idle)
        # link -> (post, deadline, reused); insertion order = deadline order
        inflight: Dict[_Link, Tuple[_Post, float, bool]] = {}
        selector = selectors.DefaultSelector()
        connect_failures = 0
        rate = self.rate
        throttle_deadline = time.monotonic() + max(0.0, throttle_seconds)

        def failed(post: _Post, outcome: str, reason: str, throttled: bool = False) -> None:
            nonlocal seq
            if throttled and time.monotonic() < throttle_deadline:
                post.throttled += 1
                seq += 1
                heapq.heappush(delayed, (time.monotonic() + backoff_seconds(
                    min(post.throttled, 8)), seq, post))
                return
            if outcome == RETRYABLE and post.attempt < max_attempts:
                post.attempt += 1
                seq += 1
                heapq.heappush(delayed, (time.monotonic() + backoff_seconds(post.attempt - 1),
                                         seq, post))
                return
            if outcome == RETRYABLE:
                log.warning("PostToConnection %s failed after %d attempts: %s",
                            post.connection_id, post.attempt, reason)
            elif outcome == FAILED:
                log.warning("PostToConnection %s failed: %s", post.connection_id, reason)
            outcomes[post.connection_id] = outcome

        watched: Dict[_Link, socket.socket] = {}

        def watch(conn: _Link) -> None:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
            watched[conn] = conn.sock

        def unwatch(conn: _Link) -> None:
            sock = watched.pop(conn, None)
            if sock is not None:
                try:
                    selector.unregister(sock)
                except (KeyError, ValueError):
                    pass

        def drop(conn: _Link) -> None:
            unwatch(conn)
            conn.close()

        for conn in idle:
            if conn.sock is not None:
                watch(conn)

        try:
            while pending or delayed or inflight:
                now = time.monotonic()
                while delayed and delayed[0][0] <= now:
                    pending.append(heapq.heappop(delayed)[2])
                if pending and now - checked >= CREDENTIALS_CHECK_SECONDS:
                    fresh = self._frozen_credentials()
                    if fresh is not None:
                        signer.credentials = fresh
                    checked = now
                opened = 0
                pace = 0.0
                while pending and (idle or (len(own) < wanted and opened < OPEN_PER_TURN)):
                    pace = rate.take(now)
                    if pace:
                        break
                    if idle:
                        conn = idle.pop()
                    else:
                        conn = self._new_connection()
                        own.append(conn)
                        opened += 1
                    post = pending.popleft()
                    reused = conn.sock is not None
                    request = SigningRequest(origin + post.path, {"host": host}, data)
                    signer.add_auth(request)
                    if conn.sock is None:
                        try:
                            conn.open(self.read_timeout)
                            watch(conn)
                        except _NETWORK_ERRORS as exc:
                            conn.close()
                            idle.append(conn)
                            connect_failures += 1
                            reason = type(exc).__name__
                            # a certificate that fails verification will fail every time
                            untrusted = isinstance(exc, ssl.SSLCertVerificationError)
                            if connect_failures < MAX_CONNECT_FAILURES and not untrusted:
                                failed(post, RETRYABLE, reason)
                                break  # read answers and wait for back-offs before more
                            for waiting in [post, *pending, *(d[2] for d in delayed)]:
                                waiting.attempt = max_attempts
                                failed(waiting, FAILED if untrusted else RETRYABLE, reason)
                            pending.clear()
                            delayed.clear()
                            break
                        connect_failures = 0
                    try:
                        conn.send(writer.encode(post.path, request.headers, data, body_length))
                    except _NETWORK_ERRORS as exc:
                        drop(conn)
                        idle.append(conn)
                        self._network_failure(post, reused, exc, pending, failed)
                        continue
                    post.sent_at = now
                    inflight[conn] = (post, now + self.read_timeout, reused)

                if not inflight:
                    wake = [delayed[0][0] - time.monotonic()] if delayed else []
                    if pending and pace:
                        wake.append(pace)
                    if wake and (pace or not pending):
                        sleep(max(0.0, min(wake)))
                    continue
                deadline = next(iter(inflight.values()))[1]
                timeout = deadline - time.monotonic()
                if delayed:
                    timeout = min(timeout, delayed[0][0] - time.monotonic())
                if pending and pace:  # paced: wait for the next slot
                    timeout = min(timeout, pace)
                elif pending and len(own) < wanted:  # more connections to open: a glance
                    timeout = 0.0
                for key, _ in selector.select(max(0.0, timeout)):
                    conn = key.data
                    entry = inflight.get(conn)
                    if entry is None:  # an idle connection closed by the server
                        drop(conn)
                        continue
                    post, _, reused = entry
                    try:
                        if not conn.read():  # a part of the answer: wait for the rest
                            continue
                    except errors as exc:
                        del inflight[conn]
                        drop(conn)
                        idle.append(conn)
                        self._network_failure(post, reused, exc, pending, failed)
                        continue
                    del inflight[conn]
                    if not conn.keep_alive:  # "Connection: close"
                        drop(conn)
                    idle.append(conn)
                    status, error_type = conn.status, conn.error_type
                    outcome = classify(status, error_type)
                    if outcome == DELIVERED:
                        outcomes[post.connection_id] = DELIVERED
                    elif outcome == GONE:
                        outcomes[post.connection_id] = GONE
                        if on_gone is not None:
                            on_gone(post.connection_id)
                    else:
                        code = error_type.split(":", 1)[0].strip()
                        throttled = status == 429 or code in THROTTLING_CODES
                        if throttled:
                            rate.throttled(post.sent_at)
                        failed(post, outcome, code or f"HTTP {status}", throttled)
                now = time.monotonic()
                while inflight:  # deadlines are in send order
                    conn, (post, due, _) = next(iter(inflight.items()))
                    if due > now:
                        break
                    del inflight[conn]
                    drop(conn)
                    idle.append(conn)
                    failed(post, RETRYABLE, "ReadTimeout")
        finally:
            for conn in inflight:
                drop(conn)
            for conn in list(watched):
                unwatch(conn)
            selector.close()
            self._give_back(own)
        return outcomes

    @staticmethod
    def _network_failure(post: _Post, reused: bool, exc: BaseException,
                         pending: Deque[_Post], failed: Callable[[_Post, str, str], None]) -> None:
        """A post failed before an answer: again at once on a new connection when a reused
        keep-alive connection had been closed by the server (once per attempt), else a
        retryable failure."""
        if reused and not post.fresh_retry and isinstance(
                exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            post.fresh_retry = True
            pending.appendleft(post)
            return
        post.fresh_retry = False
        if isinstance(exc, ssl.SSLCertVerificationError):
            failed(post, FAILED, type(exc).__name__)
            return
        failed(post, RETRYABLE, type(exc).__name__)

"""Webhooks out to external URLs (issue 10, section D): the events
:mod:`chalicelib.delivery.webhooks_out` raises, POSTed to the targets of ``PUSHER_WEBHOOKS``
(:func:`chalicelib.webhook_settings.webhook_targets`) as Pusher sends its webhooks, with
retries through the push queue.

**Format** (Pusher docs, "Server API" -> "Webhooks"; soketi's ``src/webhook-sender.ts`` sends the
same): ``POST <url>`` with the body ``{"time_ms": <int>, "events": [{"name", "channel", ...},
...]}`` and the headers ``Content-Type: application/json``, ``X-Pusher-Key: <PUSHER_KEY>``,
``X-Pusher-Signature: <hex HMAC-SHA256 of the body with the app secret>`` (computed with the
``pusher`` library's ``signature.sign``, the function its ``Pusher.validate_webhook`` verifies
with), plus the target's own ``headers``. ``time_ms`` is when the events were raised (the first
event of the batch), kept across retries: a receiver may tell a late delivery, and dedupe on
``time_ms`` + ``events``.

**Producer** (the socket operation never waits on a target): :func:`submit`, called by
:func:`chalicelib.delivery.webhooks_out.emit`, keeps the events a target wants (its ``event_types``
and ``filter``). Inside :func:`batch` (app.py opens one around each handler invocation) they are
collected and queued when the invocation ends: one job per target — several when over
:data:`MAX_EVENTS_PER_JOB` events or :data:`MAX_JOB_BYTES` — in one ``SendMessageBatch`` call
(10 entries at most: :data:`chalicelib.webhook_settings.MAX_WEBHOOK_TARGETS`), as Pusher batches the
events of a short window into one POST. Outside a batch they are queued at once. The SQS client
waits at most 1 s to connect and 2 s for an answer, 2 attempts; a failure to queue is logged
(never with a URL) and counted (``WebhooksNotQueued``, in events) and never raises.

A job names its target by :func:`target_id` (a digest of the URL), never by URL: the worker
POSTs only to URLs of its own settings, so a message on the queue cannot send signed bodies
elsewhere, and URLs (which may carry a secret path or token) stay out of the queue and the
dead-letter queue::

    {"webhook": {"target": "<16 hex>", "time_ms": 1700000000000, "events": [...]}}

**Consumer** (:func:`handle`, :func:`handle_many`, from :mod:`chalicelib.doors.queue`): signs
the body and POSTs it, waiting at most :data:`CONNECT_TIMEOUT` to connect and
:data:`TOTAL_TIMEOUT` in all (a watchdog closes the socket: a target trickling its answer
cannot stretch it; DNS resolution is the one wait outside the bound). The jobs of one batch
are POSTed in parallel.

* 2xx: delivered (``WebhooksDelivered``).
* 408, 429, 5xx, a timeout, a connection or TLS error: the record is reported as a batch item
  failure so SQS delivers it again, after a back-off set with ``ChangeMessageVisibility``:
  :func:`retry_delay` of its ``ApproximateReceiveCount`` (10 s, 20 s, 40 s, 80 s, capped at
  :data:`RETRY_CAP_SECONDS`, with jitter), so a down endpoint is not hammered
  (``WebhooksRetried``); longer when a 429 or 503 asks for it with ``Retry-After`` (seconds
  or an HTTP date, RFC 9110 section 10.2.3), up to :data:`RETRY_CAP_SECONDS`. After the queue's ``maxReceiveCount`` receives (5: about 2.5 minutes
  of retries, within the 5 minutes Pusher retries for and ``validate_webhook`` accepts a
  ``time_ms``) SQS moves it to the dead-letter queue.
* any other answer (3xx, 4xx): the target looked at the webhook and refused it; the same
  signed bytes would be refused again, so the job is dropped with an ERROR log and
  ``WebhooksDropped``. A receiver that wants a webhook again answers 5xx or 503.
* a job whose target is no longer configured, or a malformed job: dropped with a warning
  (``WebhooksDropped``).
* settings unreadable (the Pusher secret from SSM): retried like a failed POST.

Delivery is at least once: a worker that dies after the POST and before SQS deletes the message
repeats it. Ordering is not guaranteed (jobs of one invocation are parallel messages; retries
overtake nothing). Logs name a target by scheme and host only (:func:`origin`).
"""
from __future__ import annotations

import contextvars
import datetime
import email.utils
import hashlib
import http.client
import json
import logging
import math
import random
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from chalicelib import observability, settings, webhook_settings
from chalicelib.errors import ConfigError
from chalicelib.logtext import for_log

log = logging.getLogger("realtime.webhook_sender")

#: the message's top-level key that marks a webhook job
JOB_KEY = "webhook"
#: events per job (one POST) at most
MAX_EVENTS_PER_JOB = 100
#: a job's message at most, bytes: SQS's message limit is 256 KiB (262,144 bytes; AWS docs,
#: "Amazon SQS message quotas"), less room for the envelope
MAX_JOB_BYTES = 250_000
#: the bounds of one POST, seconds: to connect (TCP and TLS), and in all (connect, send,
#: answer). Pusher expects an answer within 4 s (Pusher docs, "Channels Webhook Timeouts and
#: Retries").
CONNECT_TIMEOUT = 2.0
TOTAL_TIMEOUT = 5.0
#: the back-off before the next delivery of a failed job: the first ceiling and the cap,
#: seconds (doubling per receive; the delay is drawn between half the ceiling and the ceiling)
RETRY_BASE_SECONDS = 10
RETRY_CAP_SECONDS = 120
#: the SQS client of the producer (on the socket operation's path): seconds and attempts
QUEUE_CONNECT_TIMEOUT = 1.0
QUEUE_READ_TIMEOUT = 2.0
QUEUE_MAX_ATTEMPTS = 2
USER_AGENT = "realtime-webhooks/1.0"

#: outcomes of one job
DELIVERED, RETRY, DROPPED = "delivered", "retry", "dropped"


def target_id(url: str) -> str:
    """The id a job gives its target: 16 hex digits of the SHA-256 of the URL."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: all of a target's URL a log line may carry (its
    path and query may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def wants(target: webhook_settings.WebhookTarget, event: Mapping[str, Any]) -> bool:
    """Whether ``target`` receives ``event``: its name is among the target's ``event_types``
    and its channel passes the target's ``filter`` (soketi's ``channel_name_starts_with`` /
    ``channel_name_ends_with``)."""
    if event.get("name") not in target.event_types:
        return False
    channel = event.get("channel")
    channel = channel if isinstance(channel, str) else ""
    if target.channel_name_starts_with is not None \
            and not channel.startswith(target.channel_name_starts_with):
        return False
    if target.channel_name_ends_with is not None \
            and not channel.endswith(target.channel_name_ends_with):
        return False
    return True


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- producer -----------------------------------------------------------------------------------

class _Batch:
    """The events collected by one :func:`batch` scope: ``[(time_ms, events), ...]``."""

    __slots__ = ("lock", "items", "closed")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: List[Tuple[int, List[Dict[str, Any]]]] = []
        self.closed = False


_scope: contextvars.ContextVar[Optional[_Batch]] = contextvars.ContextVar(
    "webhook_batch", default=None)


@contextmanager
def batch() -> Iterator[None]:
    """``with batch():`` collects the webhooks submitted inside the block (in this context) and
    queues them when it ends, however it ends. Events submitted from other threads, or after
    the end, are queued at once: never lost."""
    current = _Batch()
    token = _scope.set(current)
    try:
        yield
    finally:
        _scope.reset(token)
        with current.lock:
            current.closed = True
            items, current.items = current.items, []
        if items:
            _enqueue(items)


def submit(events: Sequence[Dict[str, Any]], time_ms: int) -> None:
    """Queue ``events`` (Pusher webhook events) for the targets that want them.

    Args:
        events: ``[{"name", "channel", ...}]``.
        time_ms: when they were raised, milliseconds since the epoch.
    Never raises: a bad ``PUSHER_WEBHOOKS`` or a queue failure is logged and counted.
    """
    try:
        targets = webhook_settings.webhook_targets()
    except ConfigError as err:
        log.error("webhook events not queued for external targets: %s", err)
        observability.count("WebhooksNotQueued", len(events))
        return
    if not any(wants(target, event) for target in targets for event in events):
        return
    copies = [dict(event) for event in events]  # the app's handlers get the same events
    current = _scope.get()
    if current is not None:
        with current.lock:
            if not current.closed:
                current.items.append((time_ms, copies))
                return
    _enqueue([(time_ms, copies)])


def jobs_for(targets: Sequence[webhook_settings.WebhookTarget],
             items: Sequence[Tuple[int, Sequence[Dict[str, Any]]]]) -> Tuple[List[str], int]:
    """The job messages (bodies) for a batch of events.

    Args:
        targets: the configured targets.
        items: ``[(time_ms, events), ...]`` in the order they were raised.
    Returns:
        (messages, events left out): each message at most :data:`MAX_JOB_BYTES` and
        :data:`MAX_EVENTS_PER_JOB` events; an event too large for any message alone is left
        out (counted).
    """
    messages: List[str] = []
    too_large = 0
    for target in targets:
        chosen = [(time_ms, event) for time_ms, events in items for event in events
                  if wants(target, event)]
        if not chosen:
            continue
        head = {"target": target_id(target.url), "time_ms": chosen[0][0]}
        base = len(_dumps({JOB_KEY: {**head, "events": []}}))
        current: List[str] = []
        size = base
        for _, event in chosen:
            text = _dumps(event)
            cost = len(text) + 1
            if base + cost > MAX_JOB_BYTES:
                too_large += 1
                continue
            if current and (len(current) >= MAX_EVENTS_PER_JOB or size + cost > MAX_JOB_BYTES):
                messages.append(_message(head, current))
                current, size = [], base
            current.append(text)
            size += cost
        if current:
            messages.append(_message(head, current))
    return messages, too_large


def _message(head: Mapping[str, Any], event_texts: Sequence[str]) -> str:
    return (f'{{"{JOB_KEY}":{{"target":{_dumps(head["target"])},"time_ms":{int(head["time_ms"])},'
            f'"events":[{",".join(event_texts)}]}}}}')


def _region() -> str:
    return settings.websocket_settings().region


def _sqs(region: Optional[str] = None):
    from chalicelib import aws

    return aws.client("sqs", region or _region(), max_attempts=QUEUE_MAX_ATTEMPTS,
                      connect_timeout=QUEUE_CONNECT_TIMEOUT, read_timeout=QUEUE_READ_TIMEOUT)


def _queue_url(name: str, region: Optional[str] = None) -> str:
    from chalicelib import aws

    region = region or _region()
    return aws.queue_url(_sqs(region), name, region)


def reset() -> None:
    """Forget the cached queue URLs (tests; a changed ``PUSH_QUEUE_NAME``)."""
    from chalicelib import aws

    aws.forget_queue_urls()


def _event_count(message: str) -> int:
    return len(json.loads(message)[JOB_KEY]["events"])


def _enqueue(items: Sequence[Tuple[int, Sequence[Dict[str, Any]]]]) -> None:
    """Put the jobs of ``items`` on the push queue; never raises."""
    total = sum(len(events) for _, events in items)
    try:
        messages, too_large = jobs_for(webhook_settings.webhook_targets(), items)
    except Exception as exc:  # settings changed under us, an event that is not JSON
        log.error("webhook events not queued: %s", type(exc).__name__)
        observability.count("WebhooksNotQueued", total)
        return
    if too_large:
        log.error("%d webhook events not queued: each alone is over %d bytes", too_large,
                  MAX_JOB_BYTES)
        observability.count("WebhooksNotQueued", too_large)
    if not messages:
        return
    left: List[int] = list(range(len(messages)))
    reason = ""
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        from chalicelib import aws

        url, sqs = _queue_url(settings.push_queue_name()), _sqs()
        for attempt in range(2):  # entries SQS reports as failed are sent once more
            failed: List[int] = []
            for group in aws.sqs_batches([messages[i] for i in left]):
                indexes = [left[i] for i in group]
                answer = sqs.send_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "MessageBody": messages[i]} for i in indexes])
                failed.extend(int(entry["Id"]) for entry in answer.get("Failed") or [])
            left = failed
            if not left:
                break
            reason = "SQS refused entries"
    except ClientError as exc:
        reason = f"SQS refused them: {exc.response.get('Error', {}).get('Code', 'ClientError')}"
    except BotoCoreError as exc:
        reason = f"SQS failed: {type(exc).__name__}"
    except Exception as exc:  # settings (no region), anything else: never fail the socket
        reason = type(exc).__name__
    if left:
        events = sum(_event_count(messages[i]) for i in left)
        log.error("webhook events not queued: %d events in %d jobs (%s)", events, len(left),
                  for_log(reason))
        observability.count("WebhooksNotQueued", events)
    else:
        log.info("webhooks queued: %d jobs", len(messages))


# --- consumer -----------------------------------------------------------------------------------

class PoisonJob(ValueError):
    """A webhook job that can never be delivered (its fields are missing or wrong)."""


class DeliveryFailed(Exception):
    """A POST that got no answer: a timeout, a connection or TLS error. ``str()`` is the kind
    of failure (``"timed out"`` or an exception class name), never the URL."""


def parse_job(job: Any) -> Tuple[str, int, List[Any]]:
    """Validate a job's ``"webhook"`` object.

    Returns:
        (target id, time_ms, events).
    Raises:
        PoisonJob: a field is missing or wrong.
    """
    if not isinstance(job, Mapping):
        raise PoisonJob('"webhook" must be an object')
    target, time_ms, events = job.get("target"), job.get("time_ms"), job.get("events")
    if not isinstance(target, str) or not target:
        raise PoisonJob('"target" must be a non-empty string')
    if not isinstance(time_ms, int) or isinstance(time_ms, bool) or time_ms <= 0:
        raise PoisonJob('"time_ms" must be a positive integer')
    if not isinstance(events, list) or not events or not all(
            isinstance(event, dict) and isinstance(event.get("name"), str) for event in events):
        raise PoisonJob('"events" must be a non-empty list of events')
    return target, time_ms, events


def body_of(time_ms: int, events: Sequence[Any]) -> bytes:
    """The POST body: ``{"time_ms", "events"}``, compact JSON (the same bytes on every retry of
    a job)."""
    return _dumps({"time_ms": time_ms, "events": list(events)}).encode("utf-8")


def classify(status: int) -> str:
    """:data:`DELIVERED` (2xx), :data:`RETRY` (408, 429, 5xx) or :data:`DROPPED` (any other
    answer: the target refused the webhook)."""
    if 200 <= status < 300:
        return DELIVERED
    if status in (408, 429) or status >= 500:
        return RETRY
    return DROPPED


_tls_lock = threading.Lock()
_tls: List[Any] = []


def _tls_context():
    import ssl

    with _tls_lock:
        if not _tls:
            _tls.append(ssl.create_default_context())  # certificates and host names verified
        return _tls[0]


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """The wait a ``Retry-After`` header asks for, seconds (RFC 9110 section 10.2.3: a number
    of seconds, or an HTTP date), or None when absent or unreadable. A date in the past is 0.

    Args:
        value: the header's value.
        now: the current Unix time, seconds (tests).
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT (RFC 9110 section 5.6.7)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def post(url: str, body: bytes, headers: Mapping[str, str]) -> Tuple[int, Optional[float]]:
    """POST ``body`` to ``url``, within :data:`CONNECT_TIMEOUT` to connect and
    :data:`TOTAL_TIMEOUT` in all; redirects are not followed, the answer's body is not read.

    Returns:
        ``(status, retry_after)``: the HTTP status and, for a 429 or 503, the seconds its
        ``Retry-After`` asks to wait (:func:`retry_after_seconds`), else None.
    Raises:
        DeliveryFailed: no answer (timeout, connection or TLS error).
    """
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connect_timeout, total_timeout = CONNECT_TIMEOUT, TOTAL_TIMEOUT
    if parts.scheme.lower() == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=connect_timeout, context=_tls_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=connect_timeout)
    deadline = time.monotonic() + total_timeout
    timed_out = threading.Event()

    def abort() -> None:
        timed_out.set()
        sock = conn.sock
        if sock is not None:
            try:  # the plain socket's shutdown: wakes a read blocked in another thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(total_timeout, abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if timed_out.is_set():
            raise DeliveryFailed("timed out")
        conn.sock.settimeout(max(0.05, deadline - time.monotonic()))
        conn.request("POST", path, body=body, headers=dict(headers))
        response = conn.getresponse()
        wait = retry_after_seconds(response.getheader("Retry-After")) \
            if response.status in (429, 503) else None
        return response.status, wait
    except DeliveryFailed:
        raise
    except Exception as exc:  # OSError, HTTPException, SSL errors, a socket closed under a read
        if timed_out.is_set() or isinstance(exc, (socket.timeout, TimeoutError)):
            raise DeliveryFailed("timed out") from None
        raise DeliveryFailed(type(exc).__name__) from None
    finally:
        watchdog.cancel()
        conn.close()


def retry_delay(receive_count: int) -> int:
    """Seconds before a failed job's next delivery: the ceiling ``min(RETRY_CAP_SECONDS,
    RETRY_BASE_SECONDS * 2 ** (receive_count - 1))``, drawn uniformly between half of it and
    all of it (jitter, so workers retrying one endpoint spread out; AWS Architecture Blog,
    "Exponential Backoff And Jitter"), rounded up to whole seconds (SQS's unit), at least 1."""
    count = max(1, int(receive_count))
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** min(count - 1, 30))
    return max(1, math.ceil(random.uniform(ceiling / 2, ceiling)))


def _receive_count(record: Mapping[str, Any]) -> int:
    attributes = record.get("attributes")
    try:
        return int(attributes.get("ApproximateReceiveCount"))  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return 1


def _back_off(record: Mapping[str, Any], label: str, asked: Optional[float] = None) -> None:
    """Hide the record for :func:`retry_delay` seconds, or for the ``asked`` seconds of a
    ``Retry-After`` when longer (up to :data:`RETRY_CAP_SECONDS`: Pusher's receivers accept a
    webhook's ``time_ms`` for 5 minutes), with ``ChangeMessageVisibility``; on failure SQS
    delivers it again after the queue's visibility timeout."""
    delay = retry_delay(_receive_count(record))
    if asked is not None:
        delay = max(delay, min(RETRY_CAP_SECONDS, math.ceil(asked)))
    arn = record.get("eventSourceARN")
    parts = arn.split(":") if isinstance(arn, str) else []
    name, region = (parts[5], parts[3]) if len(parts) == 6 and parts[5] else \
        (settings.push_queue_name(), None)
    try:
        _sqs(region).change_message_visibility(
            QueueUrl=_queue_url(name, region), ReceiptHandle=record.get("receiptHandle"),
            VisibilityTimeout=delay)
    except Exception as exc:
        log.warning("%s: back-off not set (%s); SQS retries it after the queue's visibility "
                    "timeout", label, type(exc).__name__)
        return
    log.info("%s: next attempt in %d s", label, delay)


def deliver(job: Any, record: Mapping[str, Any]) -> str:
    """Deliver one webhook job (see the module docstring); thread-safe, counts nothing.

    Args:
        job: the message's ``"webhook"`` value.
        record: the SQS record (``messageId``, ``receiptHandle``, ``eventSourceARN``,
            ``attributes.ApproximateReceiveCount``).
    Returns:
        :data:`DELIVERED`, :data:`RETRY` (back-off set: report the record as failed) or
        :data:`DROPPED`.
    """
    label = f"webhook job {for_log(record.get('messageId', '-'))}"
    try:
        wanted, time_ms, events = parse_job(job)
    except PoisonJob as err:
        log.warning("%s dropped: %s", label, err)
        return DROPPED
    try:
        targets = webhook_settings.webhook_targets()
        pusher_config = settings.pusher_settings()
    except ConfigError as err:
        log.error("%s will be retried: %s", label, err)
        _back_off(record, label)
        return RETRY
    target = next((t for t in targets if target_id(t.url) == wanted), None)
    if target is None:
        log.warning("%s dropped: its target is no longer configured in PUSHER_WEBHOOKS",
                    label)
        return DROPPED
    from pusher.signature import sign  # what Pusher.validate_webhook verifies with

    label = f"{label} to {origin(target.url)}"
    body = body_of(time_ms, events)
    headers = dict(target.headers)
    headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT,
                    "X-Pusher-Key": pusher_config.key,
                    "X-Pusher-Signature": sign(pusher_config.secret, body.decode("utf-8"))})
    started = time.monotonic()
    try:
        status, asked = post(target.url, body, headers)
    except DeliveryFailed as err:
        log.warning("%s (%d events) will be retried: %s after %.1f s", label, len(events), err,
                    time.monotonic() - started)
        _back_off(record, label)
        return RETRY
    outcome = classify(status)
    if outcome == DELIVERED:
        log.info("%s delivered: %d events, status %d", label, len(events), status)
    elif outcome == RETRY:
        log.warning("%s (%d events) will be retried: answered %d%s", label, len(events), status,
                    "" if asked is None else f", Retry-After {asked:.0f} s")
        _back_off(record, label, asked)
    else:
        log.error("%s dropped: refused with %d (%d events; only 408, 429 and 5xx are retried)",
                  label, status, len(events))
    return outcome


_METRICS = {DELIVERED: "WebhooksDelivered", RETRY: "WebhooksRetried", DROPPED: "WebhooksDropped"}


def handle(job: Any, record: Mapping[str, Any]) -> bool:
    """:func:`deliver` one job and count its outcome. Returns False when SQS should deliver it
    again (the worker reports it as a batch item failure)."""
    outcome = deliver(job, record)
    observability.count(_METRICS[outcome])
    return outcome != RETRY


def handle_many(jobs: Sequence[Tuple[Any, Mapping[str, Any]]]) -> List[bool]:
    """:func:`handle` several jobs ``[(job, record), ...]`` in parallel (one thread each, at most
    10: a batch of the push queue), so a batch of slow targets costs one
    :data:`TOTAL_TIMEOUT`, not one each. Returns the results in order."""
    if len(jobs) <= 1:
        return [handle(job, record) for job, record in jobs]
    from concurrent.futures import ThreadPoolExecutor

    def safe(pair: Tuple[Any, Mapping[str, Any]]) -> str:
        try:
            return deliver(*pair)
        except Exception:  # one job's surprise: retried, the others unaffected
            log.exception("webhook job %s will be retried: unexpected failure",
                          for_log(pair[1].get("messageId", "-")))
            return RETRY

    with ThreadPoolExecutor(max_workers=min(10, len(jobs)),
                            thread_name_prefix="webhook") as pool:
        outcomes = list(pool.map(safe, jobs))
    for outcome in outcomes:  # counted here: an invocation's counts belong to its thread
        observability.count(_METRICS[outcome])
    return [outcome != RETRY for outcome in outcomes]

"""What the Pusher-dialect benchmarks share: the local stack with its work counted, and a
protocol 7 client.

* :class:`CountedStack`: :class:`devtools.stack.Stack` on free ports (optionally with
  ``--post-latency``), whose work is counted where it happens: every DynamoDB request that
  reaches moto, read from moto's request recorder (``MOTO_RECORDER_FILEPATH``,
  ``/moto-api/recorder/start-recording``; the operation is the ``X-Amz-Target`` header, so SDK
  retries count too), and every function invocation and management API call of the local
  gateway (``GET /_local/counters``, :meth:`devtools.local_gateway.LocalWebSocketGateway.counters`).
  :meth:`CountedStack.counts` answers the totals so far; a benchmark takes differences.
* :class:`PusherSocket`: a ``websockets`` client speaking protocol 7 (pusher-js's URL, the
  first frame's ``socket_id``, subscribe with ``auth`` signed by the ``pusher`` library exactly
  as our ``/pusher/auth`` signs it), which keeps reading frames and counts the member events.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
#: the operation of a DynamoDB request: ``X-Amz-Target: DynamoDB_20120810.<Operation>``
DYNAMODB_TARGET = "DynamoDB_20120810."


def pct(values: List[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def p50_p99(values: List[float]) -> tuple:
    """(median, 99th percentile) of ``values``."""
    return statistics.median(values), pct(values, 0.99)


def figure_table(rows: List[tuple]) -> List[str]:
    """``(figure, measured, expected on AWS)`` rows as a Markdown table (what docs/benchmarks.md shows)."""
    lines = ["| figure | measured | expected on AWS |", "|---|---|---|"]
    return lines + [f"| {figure} | {measured} | {expected} |"
                    for figure, measured, expected in rows]


class Counts(dict):
    """``{"dynamodb": Counter(operation), "invocations": Counter(function), "management":
    Counter("<Operation> <status>")}``; ``a - b`` is the work done between two readings."""

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts({group: Counter({k: v - other.get(group, {}).get(k, 0)
                                       for k, v in self[group].items()
                                       if v - other.get(group, {}).get(k, 0)})
                       for group in self})

    def total(self, group: str, prefix: str = "") -> int:
        """The sum of ``group``'s counts whose name starts with ``prefix``."""
        return sum(v for k, v in self[group].items() if k.startswith(prefix))

    @property
    def posts(self) -> int:
        """PostToConnection calls, whatever they answered."""
        return self.total("management", "PostToConnection")


class CountedStack:
    """The local stack on free ports with its DynamoDB requests, invocations and management
    calls counted (see the module docstring). A context manager; stops everything on exit.

    Args:
        post_latency: seconds the local management API (and Lambda ``Invoke``) waits per call.
    """

    def __init__(self, post_latency: float = 0.0) -> None:
        self.post_latency = post_latency
        self.stack = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        self._recording: Optional[Path] = None
        self._offset = 0
        self._dynamodb: Counter = Counter()

    def __enter__(self) -> "CountedStack":
        from devtools.stack import Ports, Stack

        self._dir = tempfile.TemporaryDirectory(prefix="bench-pusher-")
        run_dir = Path(self._dir.name)
        self._recording = run_dir / "moto-requests.jsonl"
        args = ["--post-latency", str(self.post_latency)] if self.post_latency else []
        self.stack = Stack(Ports.free(), run_dir=run_dir, out=lambda line: None,
                           gateway_args=args)
        saved = os.environ.get("MOTO_RECORDER_FILEPATH")
        os.environ["MOTO_RECORDER_FILEPATH"] = str(self._recording)  # moto's child env
        try:
            self.stack.start()
        except BaseException:
            self._dir.cleanup()
            raise
        finally:
            if saved is None:
                os.environ.pop("MOTO_RECORDER_FILEPATH", None)
            else:
                os.environ["MOTO_RECORDER_FILEPATH"] = saved
        try:
            self._moto_api("start-recording")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _moto_api(self, action: str) -> None:
        request = urllib.request.Request(
            f"{self.stack.dynamodb_url}/moto-api/recorder/{action}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    # -- addresses -------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The stage's ``PUSHER_KEY``."""
        return self.stack.env["PUSHER_KEY"]

    @property
    def pusher_url(self) -> str:
        """What pusher-js opens: ``ws://127.0.0.1:<port>/app/<key>?protocol=7…``."""
        return (f"ws://127.0.0.1:{self.stack.ports.websocket}/app/{self.key}"
                "?protocol=7&client=bench&version=1&flash=false")

    def pusher_library(self):
        """The ``pusher`` server library with the stage's app id, key and secret: it signs
        subscriptions as our ``/pusher/auth`` does (``Pusher.authenticate``)."""
        import pusher

        env = self.stack.env
        return pusher.Pusher(app_id=env["PUSHER_APP_ID"], key=env["PUSHER_KEY"],
                             secret=env["PUSHER_SECRET"])

    # -- counting --------------------------------------------------------------------------
    def _read_recording(self) -> None:
        if not self._recording.exists():
            return
        with open(self._recording, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offset += end
        for line in data[:end].splitlines():
            try:
                headers = json.loads(line).get("headers") or {}
            except ValueError:
                self._dynamodb["(unreadable recording line)"] += 1
                continue
            target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
            if target.startswith(DYNAMODB_TARGET):
                self._dynamodb[target[len(DYNAMODB_TARGET):]] += 1

    def counts(self) -> Counts:
        """The totals so far: DynamoDB requests by operation, invocations by function,
        management calls by operation and status."""
        url = f"http://127.0.0.1:{self.stack.ports.management}/_local/counters"
        with urllib.request.urlopen(url, timeout=10) as response:
            gateway = json.loads(response.read())
        # invocations running and sockets waiting for their $disconnect, at this reading
        self._running = sum(gateway.get("running", {}).values()) + \
            sum(gateway.get("pending", {}).values())
        self._read_recording()
        return Counts({"dynamodb": Counter(self._dynamodb),
                       "invocations": Counter(gateway["invocations"]),
                       "management": Counter(gateway["management"])})

    def idle_counts(self, timeout: float = 10.0) -> Counts:
        """The totals once no invocation of the app is running and no closed socket waits for
        its ``$disconnect`` (a handler may still work after its client saw the answer: a
        presence join posts its ``member_added`` fan-out after the joiner's
        ``subscription_succeeded``)."""
        deadline = time.monotonic() + timeout
        now = self.counts()
        while self._running and time.monotonic() < deadline:
            time.sleep(0.005)
            now = self.counts()
        return now

    def settle(self, quiet: float = 0.15, timeout: float = 10.0) -> Counts:
        """The totals once nothing has changed for ``quiet`` seconds and no invocation is
        running (work still running in the background, a ``$disconnect`` or an asynchronous
        invoke, is counted too: under load a ``$disconnect`` of an earlier phase could start
        after a quiet spell and land in the next measurement)."""
        deadline = time.monotonic() + timeout
        last = self.counts()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.counts()
            if now == last and not self._running:
                return now
            last = now
        return last


_progress: Dict[int, asyncio.Event] = {}


def _progress_event() -> asyncio.Event:
    """The event of the running loop that is set whenever a socket receives a frame (each
    ``asyncio.run`` of a benchmark has its own loop)."""
    loop = asyncio.get_running_loop()
    event = _progress.get(id(loop))
    if event is None:
        _progress.clear()  # an earlier run's loop is gone
        event = _progress[id(loop)] = asyncio.Event()
    return event


class PusherSocket:
    """One protocol 7 connection: opened with :meth:`open`, its frames read by a task.

    Attributes:
        socket_id: from ``pusher:connection_established``.
        added, removed: ``pusher_internal:member_added`` / ``member_removed`` frames received.
        unexpected: answers no :meth:`subscribe` was waiting for.
    """

    def __init__(self, ws) -> None:
        self.ws = ws
        self.socket_id = ""
        self.added = 0
        self.removed = 0
        self.unexpected: List[Dict[str, Any]] = []
        self._waiting: Dict[str, asyncio.Future] = {}
        self._reader: Optional[asyncio.Task] = None

    @classmethod
    async def open(cls, url: str) -> "PusherSocket":
        """Connect and wait for ``pusher:connection_established``.

        Raises:
            AssertionError: the first frame is something else.
        """
        from websockets.asyncio.client import connect

        ws = await connect(url, open_timeout=30, max_queue=None)
        sock = cls(ws)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame.get("event") == "pusher:connection_established", frame
        sock.socket_id = json.loads(frame["data"])["socket_id"]
        sock._reader = asyncio.create_task(sock._read())
        return sock

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        progress = _progress_event()
        try:
            async for message in self.ws:
                frame = json.loads(message)
                event = frame.get("event")
                if event == "pusher_internal:member_added":
                    self.added += 1
                elif event == "pusher_internal:member_removed":
                    self.removed += 1
                elif event in ("pusher_internal:subscription_succeeded",
                               "pusher:subscription_error", "pusher:error"):
                    # pusher:error names no channel: it answers the oldest subscribe
                    channel = frame.get("channel") if event != "pusher:error" \
                        else next(iter(self._waiting), None)
                    waiter = self._waiting.pop(channel, None) if channel else None
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                    else:
                        self.unexpected.append(frame)
                progress.set()
        except ConnectionClosed:
            pass

    async def subscribe(self, channel: str, auth: Optional[Dict[str, str]] = None,
                        timeout: float = 30.0) -> Dict[str, Any]:
        """Send ``pusher:subscribe`` (with ``auth``/``channel_data`` when given) and wait for
        the answer about this channel.

        Returns:
            the ``pusher_internal:subscription_succeeded`` frame.
        Raises:
            AssertionError: ``pusher:subscription_error`` or ``pusher:error`` instead.
        """
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[channel] = waiter
        await self.ws.send(json.dumps({"event": "pusher:subscribe",
                                       "data": dict({"channel": channel}, **(auth or {}))}))
        frame = await asyncio.wait_for(waiter, timeout)
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        return frame

    async def close(self) -> None:
        """Close the socket (the server runs ``$disconnect``) and wait for the reader."""
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)


async def wait_until(predicate, timeout: float = 30.0) -> None:
    """Wait until ``predicate()`` holds, re-checking whenever a socket receives a frame.

    Raises:
        TimeoutError: not within ``timeout`` seconds.
    """
    progress = _progress_event()
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("benchmark condition not met in time")
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), min(remaining, 0.5))
        except asyncio.TimeoutError:
            pass

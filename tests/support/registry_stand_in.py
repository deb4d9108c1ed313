"""A stand-in for the DynamoDB registry's fan-out calls, for large fan-out tests and benchmarks.

moto's server needs ~9 s of Python to answer a Query of 10,000 index items on a shared core and
~90 s to be filled: it would measure moto, not the push engine. This server speaks DynamoDB's
JSON protocol (``X-Amz-Target: DynamoDB_20120810.<Operation>``) for the calls a fan-out makes,
so the real client code (boto3, :mod:`chalicelib.registry.connections`) runs against it:

* ``Query`` on ``audience-index``: every audience has the same ``items`` subscribers
  (``{"connection_id": {"S": "fan-00000="}}``, ...; :func:`subscriber_id`), answered in pages
  of ``page`` items with ``LastEvaluatedKey`` as DynamoDB pages a result (1 MB per page: about
  10,000 index items of this table);
* ``Query`` of a shard's progress marker (``connection_id = fanout#...``) and ``UpdateItem``
  ``ADD reached`` on it (:func:`chalicelib.registry.progress.shard_progress` /
  ``add_shard_progress``), kept in memory;
* the event history of a publication (:func:`chalicelib.registry.history.record`):
  ``UpdateItem`` ``ADD seq 1`` on a ``history#...`` head answers the next id, ``PutItem`` of
  the event is kept (``events``);
* any other ``Query`` answers no items, ``BatchWriteItem`` answers nothing unprocessed (a gone
  connection's removal finds nothing to delete); other operations answer 400
  ``ValidationException``.

In-process (tests)::

    with RegistryStandIn(items=20_000) as registry:
        ... registry.endpoint_url ...   # AWS_ENDPOINT_URL_DYNAMODB

or as a process (benchmarks)::

    python -m tests.support.registry_stand_in --items 100000 --page 10000 --latency 0.02
    # prints the endpoint URL; stops when stdin closes
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Dict, Optional, Set

from devtools.loopback import LoopbackHTTPServer

#: DynamoDB's page limit is 1 MB of items read; an index item of this table is ~100 bytes
DEFAULT_PAGE = 10_000


def subscriber_id(index: int) -> str:
    """The connection id of subscriber number ``index``."""
    return f"fan-{index:06d}="


class RegistryStandIn:
    """The server (see the module docstring).

    Args:
        items: subscribers of every audience.
        page: items per Query page.
        latency: seconds before each answer.
    Attributes:
        progress: marker key -> connection ids reached.
        queries: audience Queries answered (pages).
    """

    def __init__(self, items: int, page: int = DEFAULT_PAGE, latency: float = 0.0) -> None:
        self.ids = [subscriber_id(i) for i in range(items)]
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        self.page = max(1, page)
        self.latency = latency
        self.progress: Dict[str, Set[str]] = {}
        self.heads: Dict[str, int] = {}
        self.events: Dict[str, list] = {}
        self.queries = 0
        self._pages: Dict[tuple, bytes] = {}
        self.lock = threading.Lock()
        self._server: Optional[LoopbackHTTPServer] = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.port}"

    def answer(self, operation: str, request: dict):
        """``(status, body)`` for one DynamoDB call (body: a JSON value, or bytes)."""
        values = request.get("ExpressionAttributeValues") or {}
        if operation == "Query" and request.get("IndexName") == "audience-index":
            audience = values.get(":a", {}).get("S", "")
            start = 0
            last = (request.get("ExclusiveStartKey") or {}).get("connection_id", {}).get("S")
            if last is not None:
                start = self.position.get(last, len(self.ids) - 1) + 1
            with self.lock:
                self.queries += 1
                page = self._pages.get((audience, start))
            if page is None:  # serialized once: the stand-in should not set the pace
                chunk = self.ids[start:start + self.page]
                body = {"Items": [{"connection_id": {"S": cid}} for cid in chunk],
                        "Count": len(chunk), "ScannedCount": len(chunk)}
                if start + self.page < len(self.ids):
                    body["LastEvaluatedKey"] = {"audience": {"S": audience},
                                                "connection_id": {"S": chunk[-1]},
                                                "sk": {"S": "channel#x"}}
                page = json.dumps(body).encode()
                with self.lock:
                    self._pages[(audience, start)] = page
            return 200, page
        if operation == "Query":
            key = values.get(":c", {}).get("S", "")
            with self.lock:
                reached = sorted(self.progress.get(key, ()))
            items = [{"reached": {"SS": reached}}] if reached else []
            return 200, {"Items": items, "Count": len(items), "ScannedCount": len(items)}
        if operation == "UpdateItem" and request.get("Key", {}).get(
                "connection_id", {}).get("S", "").startswith("fanout#"):
            key = request["Key"]["connection_id"]["S"]
            with self.lock:
                self.progress.setdefault(key, set()).update(values[":ids"]["SS"])
            return 200, {}
        key = request.get("Key", {}).get("connection_id", {}).get("S", "")
        if operation == "UpdateItem" and key.startswith("history#"):
            with self.lock:
                self.heads[key] = self.heads.get(key, 0) + 1
                seq = self.heads[key]
            return 200, {"Attributes": {"seq": {"N": str(seq)}}}
        item = request.get("Item", {})
        if operation == "PutItem" and item.get("connection_id", {}).get(
                "S", "").startswith("history#"):
            with self.lock:
                self.events.setdefault(item["connection_id"]["S"], []).append(item)
            return 200, {}
        if operation == "BatchWriteItem":
            return 200, {"UnprocessedItems": {}}
        return 400, {"__type": "com.amazon.coral.validate#ValidationException",
                     "message": f"{operation} is not served by this stand-in"}

    def start(self) -> "RegistryStandIn":
        """Serve on a free port of 127.0.0.1 in daemon threads; returns self."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server API)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                if stand_in.latency:
                    time.sleep(stand_in.latency)
                try:
                    status, body = stand_in.answer(operation, json.loads(raw or b"{}"))
                except (ValueError, KeyError, TypeError) as exc:
                    status, body = 400, {"__type": "ValidationException", "message": str(exc)}
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self._server = LoopbackHTTPServer(Handler).start(poll_interval=0.1)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "RegistryStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=DEFAULT_PAGE)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--channel", default="bench", help="audience whose pages are "
                        "serialized before the server starts")
    args = parser.parse_args(argv)
    with RegistryStandIn(args.items, args.page, args.latency) as registry:
        for start in range(0, args.items, registry.page):  # serialize the pages up front
            last = {"connection_id": {"S": registry.ids[start - 1]}} if start else None
            registry.answer("Query", {"IndexName": "audience-index", "ExclusiveStartKey": last,
                                      "ExpressionAttributeValues": {":a": {"S": "channel#"
                                                                           + args.channel}}})
        registry.queries = 0
        print(registry.endpoint_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

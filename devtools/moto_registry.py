"""The local stack's moto server (DynamoDB registry and SQS), with DynamoDB transactions that
do not undo other writes.

``python -m devtools.moto_registry --port 4567`` serves what ``python -m moto.server -H
127.0.0.1 -p 4567`` serves — the same moto application, threaded — with one difference:
moto runs ``TransactWriteItems`` by deep-copying the tables it touches and, when a condition
fails, putting that copy back, which erases every write other requests made to those tables
in the meantime (on DynamoDB a transaction changes its own items only). The presence joins'
transactions lose such races by design (``chalicelib.registry.presence.presence_enter``),
so here a ``TransactWriteItems`` runs alone among the DynamoDB requests: it waits for those in
progress and holds new ones back until it is done (a readers-writer lock; the other DynamoDB
requests run in parallel as before). Requests to other services (the SQS push queue's long
polls, which hold a request open for a second) take no lock: a transaction waiting for a long
poll made every presence join a second slower. Dev-only: not part of the Lambda zip.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable

#: the ``X-Amz-Target`` of the requests that run alone, and the prefix of the DynamoDB ones
#: that share the lock (every DynamoDB API call carries one: DynamoDB's JSON protocol)
EXCLUSIVE_TARGETS = frozenset({"DynamoDB_20120810.TransactWriteItems"})
DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."


class ReadersWriterLock:
    """Many shared holders or one exclusive holder; a waiting exclusive holder goes before new
    shared ones (so transactions are not starved by a steady stream of other requests)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    def acquire_shared(self) -> None:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            if not self._shared:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True

    def release_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()


def atomic_transactions(app: Callable, lock: ReadersWriterLock = None) -> Callable:
    """Wrap a moto WSGI application so that :data:`EXCLUSIVE_TARGETS` requests run alone
    among the DynamoDB requests; other services' requests pass untouched.

    moto builds each answer inside the call, so the lock covers the whole request."""
    lock = lock or ReadersWriterLock()

    def wrapped(environ: dict, start_response: Callable) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(DYNAMODB_TARGET_PREFIX):
            return app(environ, start_response)
        exclusive = target in EXCLUSIVE_TARGETS
        if exclusive:
            lock.acquire_exclusive()
        else:
            lock.acquire_shared()
        try:
            return list(app(environ, start_response))
        finally:
            if exclusive:
                lock.release_exclusive()
            else:
                lock.release_shared()

    return wrapped


def main(argv: Any = None) -> int:
    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                               MotoRequestHandler, create_backend_app)
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4567)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, atomic_transactions(app), threaded=True,
               request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

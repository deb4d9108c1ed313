"""Processes of a local push queue, for fan-out tests and benchmarks that need several workers.

``python -m tests.support.queue_processes sqs`` — a moto server (SQS and the rest of moto) on
127.0.0.1; prints its URL (``AWS_ENDPOINT_URL_SQS``).

``python -m tests.support.queue_processes worker QUEUE [BATCH_SIZE]`` — the app's real
``push_worker`` fed by :class:`devtools.local_sqs.SqsPoller` from ``QUEUE`` (the stand-in for
one Lambda event source poller; failed messages come back after 0 s); prints ``ready``.

Both stop when their stdin closes (the parent's lifetime). :func:`start` and :func:`stop` run
them from a test.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

from tests.support import children

ROOT = Path(__file__).resolve().parents[2]


def start(args: List[str], env: Optional[Dict[str, str]] = None) -> "tuple":
    """Start ``python -m tests.support.queue_processes *args``; returns ``(process, first
    line printed)``."""
    return children.start(["-m", "tests.support.queue_processes", *args], env=env)


stop = children.stop


def _sqs() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()


def _worker(queue: str, batch_size: int) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.path.insert(0, str(ROOT))
    import app as app_module
    from devtools.local_sqs import SqsPoller

    poller = SqsPoller(app_module.app, "push_worker", queue, batch_size=batch_size,
                       wait_seconds=1, retry_delay=0).start()
    print("ready", flush=True)
    sys.stdin.read()
    poller.stop()


def main(argv: List[str]) -> int:
    if argv[:1] == ["sqs"]:
        _sqs()
    elif argv[:1] == ["worker"] and len(argv) >= 2:
        _worker(argv[1], int(argv[2]) if len(argv) > 2 else 10)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

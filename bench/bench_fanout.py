"""Fan-out of one frame to a channel of 1,000 subscribers (``make bench`` / ``python -m bench fanout``).

Setup: the registry is a moto server on 127.0.0.1 reached through ``AWS_ENDPOINT_URL_DYNAMODB``
(1,000 connections subscribed through ``chalicelib.registry.connections``; a server rather than
``mock_aws``, whose request hooks would add ~0.8 ms of CPU to every post); the management API is
``tests.support.management_api`` in a separate process on 127.0.0.1 (so it does not share this
process's GIL), answering every PostToConnection after 20 ms — a realistic round trip from
Lambda to API Gateway.

Compared:

* the seeds' loop: read the subscribers, then ``post_to_connection`` one after the other with a
  default boto3 client (GoneException -> delete), i.e. >= 1,000 x 20 ms;
* ``chalicelib.delivery.push.publish_to_channel`` with ``PUSH_MAX_WORKERS`` posts in flight
  (default and a sweep).

Target: <= 1.5 s for our fan-out.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBERS = 1000
LATENCY = 0.020
CHANNEL = "presence-bench"
TARGET_SECONDS = 1.5
SWEEP = (8, 16, 32, 64, 128, 256)
REPEAT = 3  # runs per pool size; the median is shown


def _environment(endpoint: str, dynamodb: str) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name in ("PUSH_MAX_WORKERS",
                                                           "PUSH_MAX_ATTEMPTS", "AWS_PROFILE"):
            del os.environ[name]
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "dev",
        "CONNECTIONS_TABLE": "realtime-connections-bench", "WEBSOCKET_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
    })


def _reset(workers: int = 0) -> None:
    from chalicelib import settings
    from chalicelib.registry import table
    from chalicelib.delivery import post

    if workers:
        os.environ["PUSH_MAX_WORKERS"] = str(workers)
    else:
        os.environ.pop("PUSH_MAX_WORKERS", None)
    settings.reset()
    table.reset_clients()
    post.reset_clients()


def seeds_sequential_loop(channel: str, endpoint: str) -> Dict[str, int]:
    """The seeds' pattern: one default client, one post after the other."""
    import boto3

    from chalicelib.registry import connections, subscriptions

    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)
    summary = {"delivered": 0, "gone": 0, "failed": 0}
    data = b'{"type":"event","channel":"presence-bench","event":"tick","data":{"n":1}}'
    for connection_id in subscriptions.subscribers_of_channel(channel):
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
            summary["delivered"] += 1
        except client.exceptions.GoneException:
            connections.remove_connection(connection_id)
            summary["gone"] += 1
        except Exception:
            summary["failed"] += 1
    return summary


def ours(channel: str) -> Dict[str, int]:
    from chalicelib.delivery import push

    return push.publish_to_channel(channel, {"type": "event", "channel": channel,
                                             "event": "tick", "data": {"n": 1}})


def _timed(run: Callable[[], Dict[str, int]]) -> Tuple[float, Dict[str, int]]:
    started = time.perf_counter()
    summary = run()
    return time.perf_counter() - started, summary


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("realtime").setLevel(logging.WARNING)  # one line per fan-out otherwise
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per registry call

    saved = dict(os.environ)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.management_api", "--latency", str(LATENCY)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        endpoint = server.stdout.readline().strip()
        if not endpoint.startswith("http://127.0.0.1:"):
            raise RuntimeError("the management API did not start")
        registry = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        registry.start()
        try:
            host, port = registry.get_host_and_port()
            _environment(endpoint, f"http://{host}:{port}")
            _run(endpoint)
        finally:
            registry.stop()
    finally:
        os.environ.clear()  # leave the environment as found for the next benchmark
        os.environ.update(saved)
        _reset()
        server.stdin.close()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


def _run(endpoint: str) -> None:
    from chalicelib import settings
    from chalicelib.registry import connections, subscriptions, table
    from chalicelib.auth.principal import Principal

    _reset()
    table.create_table()
    principal = Principal(sub="bench-user", issuer="http://127.0.0.1")
    for index in range(SUBSCRIBERS):
        connection = connections.register(f"bench-{index:04d}=", principal)
        subscriptions.subscribe(connection, CHANNEL)
    default_workers = settings.websocket_settings().push_max_workers

    rows: List[Tuple[str, int, float, Dict[str, int]]] = []
    _reset()
    ours(CHANNEL)  # warm-up: client creation, connection pool, moto's first query
    for workers in SWEEP:
        _reset(workers)
        ours(CHANNEL)  # fill this client's pool
        runs = sorted((_timed(lambda: ours(CHANNEL)) for _ in range(REPEAT)),
                      key=lambda run: run[0])
        seconds, summary = runs[len(runs) // 2]  # the median run
        rows.append((f"publish_to_channel{' (default)' if workers == default_workers else ''}",
                     workers, seconds, summary))
    _reset()
    query_seconds = min(_timed(lambda: {"n": len(subscriptions.subscribers_of_channel(CHANNEL))})[0]
                        for _ in range(REPEAT))
    seconds, summary = _timed(lambda: seeds_sequential_loop(CHANNEL, endpoint))
    rows.append(("seeds' sequential loop", 1, seconds, summary))

    print(f"fan-out of one frame to {SUBSCRIBERS} subscribers; management API on 127.0.0.1 "
          f"answers each post after {LATENCY * 1000:.0f} ms; registry: moto server on "
          f"127.0.0.1 (one Query included); {os.cpu_count()} cores")
    print(f"publish_to_channel: median of {REPEAT} runs; the registry Query alone takes "
          f"{query_seconds:.2f} s")
    print(f"| {'implementation':<31} | {'in flight':>9} | {'wall s':>7} | {'posts/s':>7} "
          f"| {'delivered':>9} | {'vs seeds':>8} |")
    print(f"|{'-' * 33}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
    baseline = rows[-1][2]
    for name, workers, seconds, summary in rows:
        print(f"| {name:<31} | {workers:>9} | {seconds:>7.2f} | "
              f"{SUBSCRIBERS / seconds:>7.0f} | {summary['delivered']:>9} | "
              f"{baseline / seconds:>7.1f}x |")
    ours_default = next(r for r in rows if r[1] == default_workers)
    verdict = "meets" if ours_default[2] <= TARGET_SECONDS else "MISSES"
    print(f"PUSH_MAX_WORKERS={default_workers}: {ours_default[2]:.2f} s, {verdict} the "
          f"{TARGET_SECONDS} s target; ideal at {LATENCY * 1000:.0f} ms/post would be "
          f"{SUBSCRIBERS / default_workers * LATENCY:.2f} s")


if __name__ == "__main__":
    main()

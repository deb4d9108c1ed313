"""The push engine per CPU (issue 11, items 1 and 2): ``make bench`` / ``python -m bench engine``.

Every figure comes from a worker process (``python -m bench.bench_engine --worker ...``)
pinned to core 0 with ``taskset``; the servers run on core 1:

1. **CPU per post** — the management API (:mod:`bench.management_server`) answers at once;
   one fixed frame (74 bytes) to :data:`CPU_POSTS` targets; process CPU time (all threads,
   ``time.process_time``) divided by the posts; median of :data:`REPEAT` runs after a warm-up.
   Compared in the same run: a plain boto3 client posting one after the other, the previous
   engine (one boto3 client on a thread pool of 32), and ``post.send_to_connections``.
   Target: <= 150 µs per post. Then the plain client and ours again over TLS, as on AWS (the
   management API serves a self-signed certificate for 127.0.0.1, trusted through
   ``AWS_CA_BUNDLE``, which botocore and the sender both read): encryption and the TLS
   records' handling, for information.
2. **One core, 10,000 subscribers** — the management API answers each post after 20 ms; the
   registry Query is answered after 20 ms with 10,000 subscribers by :mod:`bench.registry_server`
   (core 1; moto would need ~9 s for it); wall time of
   ``push.publish_to_channel`` (registry Query included) with the default settings
   (``PUSH_MAX_WORKERS``: 256 in flight), beside the
   boto3-client engine (the same Query, then a boto3 client on 128 threads). Peak memory is
   the worker's maximum resident set. Target: <= 2.5 s.

Credentials are static fake keys (no refresh happens in a run); botocore signs every post.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

from tests.support import children, tls

ROOT = Path(__file__).resolve().parent.parent
CPU_POSTS = 2000
REPEAT = 3
FAN_OUT = 10_000
LATENCY = 0.020
CHANNEL = "presence-bench-10k"
CPU_TARGET_US = 150.0
WALL_TARGET_S = 2.5
FRAME = {"type": "event", "channel": "presence-bench", "event": "tick", "data": {"n": 1}}
BENCH_CORE, SERVER_CORE = "0", "1"


def _env(endpoint: str, dynamodb: str = "", ca_bundle: str = "") -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k not in ("PUSH_MAX_WORKERS", "PUSH_MAX_ATTEMPTS")}
    env.update({
        "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "dev",
        "CONNECTIONS_TABLE": "realtime-connections-bench", "WEBSOCKET_ENDPOINT_URL": endpoint,
        "PYTHONPATH": str(ROOT),
    })
    if dynamodb:
        env["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb
    if ca_bundle:
        env["AWS_CA_BUNDLE"] = ca_bundle
    return env


# --- engines (run inside the worker) -----------------------------------------------------------

def _data() -> bytes:
    from chalicelib.delivery import post

    return post.encode_frame(FRAME)


def plain_boto3(ids: List[str], endpoint: str) -> int:
    """A plain boto3 client, one post after the other."""
    import boto3

    client = _CLIENTS.get("plain") or _CLIENTS.setdefault(
        "plain", boto3.client("apigatewaymanagementapi", endpoint_url=endpoint))
    data = _data()
    for cid in ids:
        client.post_to_connection(ConnectionId=cid, Data=data)
    return len(ids)


def boto3_engine(ids: List[str], endpoint: str, workers: int) -> int:
    """The previous engine: one boto3 client (pool of ``workers`` connections, botocore retries
    off) shared by a thread pool of ``workers`` threads."""
    import boto3
    from botocore.config import Config

    key = f"pool-{workers}"
    client = _CLIENTS.get(key) or _CLIENTS.setdefault(key, boto3.session.Session().client(
        "apigatewaymanagementapi", endpoint_url=endpoint,
        config=Config(max_pool_connections=workers, retries={"total_max_attempts": 1})))
    data = _data()

    def post(cid: str) -> bool:
        client.post_to_connection(ConnectionId=cid, Data=data)
        return True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(post, ids))


def ours(ids: List[str]) -> int:
    from chalicelib.delivery import post

    return post.send_to_connections(ids, FRAME)["delivered"]


_CLIENTS: Dict[str, object] = {}


def _worker_cpu(engine: str, endpoint: str) -> dict:
    ids = [f"cpu-{i:05d}=" for i in range(CPU_POSTS)]
    run = {"plain": lambda: plain_boto3(ids, endpoint),
           "engine32": lambda: boto3_engine(ids, endpoint, 32),
           "ours": lambda: ours(ids)}[engine]
    run()  # warm-up: imports, clients, connections
    samples = []
    for _ in range(REPEAT):
        started = time.process_time()
        delivered = run()
        samples.append((time.process_time() - started) / CPU_POSTS * 1e6)
        assert delivered == CPU_POSTS, delivered
    return {"us": statistics.median(samples), "samples": samples}


def _worker_fanout(engine: str, endpoint: str) -> dict:
    from chalicelib.registry import subscriptions
    from chalicelib.delivery import push

    def run():
        if engine == "ours":
            return push.publish_to_channel(CHANNEL, FRAME)["delivered"]
        return boto3_engine(subscriptions.subscribers_of_channel(CHANNEL), endpoint, 128)

    runs = []
    for label in ("first", "second"):
        cpu, wall = time.process_time(), time.perf_counter()
        delivered = run()
        runs.append({"run": label, "wall": time.perf_counter() - wall,
                     "cpu": time.process_time() - cpu, "delivered": delivered})
    cpu, wall = time.process_time(), time.perf_counter()
    assert len(subscriptions.subscribers_of_channel(CHANNEL)) == FAN_OUT
    query = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    from chalicelib.settings import websocket_settings

    return {"runs": runs, "query": query, "in_flight": websocket_settings().push_max_workers,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --- orchestration -----------------------------------------------------------------------------

def _stop(process: subprocess.Popen) -> None:
    children.stop(process, timeout=5)


def _management_api(latency: float, tls_files=None):
    extra = ["--cert", tls_files[0], "--key", tls_files[1]] if tls_files else []
    return children.start(["-m", "bench.management_server", "--latency", str(latency), *extra],
                          cpu=SERVER_CORE,
                          expect="https://127.0.0.1:" if tls_files else "http://127.0.0.1:")


def _worker(kind: str, engine: str, endpoint: str, dynamodb: str = "",
            ca_bundle: str = "") -> dict:
    out = subprocess.run(["taskset", "-c", BENCH_CORE, sys.executable, "-m", "bench.bench_engine",
                          "--worker", kind, engine, endpoint], cwd=ROOT,
                         env=_env(endpoint, dynamodb, ca_bundle), capture_output=True,
                         text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"worker {kind} {engine} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _registry():
    return children.start(["-m", "bench.registry_server", "--items", str(FAN_OUT),
                           "--latency", str(LATENCY)], cpu=SERVER_CORE,
                          expect="http://127.0.0.1:")


def main() -> None:
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        print("needs Linux and 2 cores (taskset); skipped")
        return
    print(f"workers pinned to core {BENCH_CORE} (taskset), servers on core {SERVER_CORE}; "
          f"frame {len(json.dumps(FRAME, separators=(',', ':')))} bytes")

    # 1. CPU per post
    server, endpoint = _management_api(0.0)
    try:
        cpu = {engine: _worker("cpu", engine, endpoint)
               for engine in ("plain", "engine32", "ours")}
    finally:
        _stop(server)
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        tls_files = tls.loopback_certificate(Path(tmp))
        server, endpoint = _management_api(0.0, tls_files)
        try:
            cpu.update({f"{engine}-tls": _worker("cpu", engine, endpoint,
                                                 ca_bundle=tls_files[0])
                        for engine in ("plain", "ours")})
        finally:
            _stop(server)
    print(f"\n1. CPU per PostToConnection: {CPU_POSTS} posts of one frame, management API "
          f"answering at once; process CPU, all threads; median of {REPEAT}")
    print(f"| {'engine':<64} | {'µs CPU/post':>11} | {'vs plain boto3':>14} |")
    print(f"|{'-' * 66}|{'-' * 13}|{'-' * 16}|")
    rows = (("plain boto3 client, one post after the other (reference)", "plain"),
            ("previous engine: boto3 client on a thread pool of 32", "engine32"),
            ("post.send_to_connections (botocore SigV4, httptools answers)", "ours"),
            ("over TLS, as on AWS: plain boto3 client (reference)", "plain-tls"),
            ("over TLS, as on AWS: post.send_to_connections", "ours-tls"))
    for label, key in rows:
        reference = cpu["plain-tls" if key.endswith("-tls") else "plain"]["us"]
        print(f"| {label:<64} | {cpu[key]['us']:>11.0f} | "
              f"{reference / cpu[key]['us']:>13.1f}x |")
    verdict = "meets" if cpu["ours"]["us"] <= CPU_TARGET_US else "MISSES"
    print(f"ours: {cpu['ours']['us']:.0f} µs per post (runs "
          f"{', '.join(f'{s:.0f}' for s in cpu['ours']['samples'])}), {verdict} the "
          f"<= {CPU_TARGET_US:.0f} µs target")
    print(f"over TLS (for information): ours {cpu['ours-tls']['us']:.0f} µs per post (runs "
          f"{', '.join(f'{s:.0f}' for s in cpu['ours-tls']['samples'])}): TLS adds "
          f"{cpu['ours-tls']['us'] - cpu['ours']['us']:.0f} µs to ours, "
          f"{cpu['plain-tls']['us'] - cpu['plain']['us']:.0f} µs to the plain boto3 client")

    # 2. one core, 10,000 subscribers
    server, endpoint = _management_api(LATENCY)
    registry = None
    try:
        registry, dynamodb = _registry()
        fan = {engine: _worker("fanout", engine, endpoint, dynamodb)
               for engine in ("ours", "engine128")}
    finally:
        _stop(server)
        if registry is not None:
            _stop(registry)
    print(f"\n2. One core, {FAN_OUT:,} subscribers: management API answering each post after "
          f"{LATENCY * 1000:.0f} ms; registry: one DynamoDB Query answered after "
          f"{LATENCY * 1000:.0f} ms by bench.registry_server (core {SERVER_CORE}), parsed here")
    print(f"| {'engine':<52} | {'run':<6} | {'wall s':>6} | {'CPU s':>6} | {'CPU/wall':>8} "
          f"| {'posts/s':>7} | {'peak MB':>7} |")
    print(f"|{'-' * 54}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
    in_flight = fan["ours"]["in_flight"]
    labels = {"ours": f"publish_to_channel (default: {in_flight} in flight)",
              "engine128": "boto3-client engine, 128 threads (same Query)"}
    for key in ("ours", "engine128"):
        for run in fan[key]["runs"]:
            assert run["delivered"] == FAN_OUT, run
            print(f"| {labels[key]:<52} | {run['run']:<6} | {run['wall']:>6.2f} | "
                  f"{run['cpu']:>6.2f} | {run['cpu'] / run['wall']:>8.0%} | "
                  f"{FAN_OUT / run['wall']:>7.0f} | "
                  f"{fan[key]['maxrss_mb']:>7.0f} |")
    query = fan["ours"]["query"]
    print(f"the registry Query alone: {query['wall']:.2f} s wall, {query['cpu']:.2f} s CPU")
    worst = max(run["wall"] for run in fan["ours"]["runs"])
    verdict = "meets" if worst <= WALL_TARGET_S else "MISSES"
    floor = FAN_OUT / in_flight * LATENCY
    print(f"publish_to_channel: {worst:.2f} s at worst (first run: new connections), {verdict} "
          f"the <= {WALL_TARGET_S} s target; ideal at {LATENCY * 1000:.0f} ms per post and "
          f"{in_flight} in flight: {floor:.2f} s. CPU/wall near 100 % means CPU-bound; "
          f"well below it while CPU s > {floor:.2f}, the worker did not get "
          f"core {BENCH_CORE} to itself (other processes ran there)")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--worker":
        kind, engine, endpoint = sys.argv[2:5]
        import logging

        logging.getLogger("realtime").setLevel(logging.WARNING)
        result = (_worker_cpu if kind == "cpu" else _worker_fanout)(engine, endpoint)
        print(json.dumps(result))
    else:
        main()

"""Sharded fan-out to 100,000 subscribers (issue 11, item 3): ``make bench`` /
``python -m bench shards``.

Every figure comes from a worker process pinned to core 0 (``taskset``); the stand-ins run on
core 1:

* the registry: :mod:`tests.support.registry_stand_in`, DynamoDB's JSON protocol, 100,000
  subscribers in Query pages of 10,000 items (DynamoDB's 1 MB page), each page answered after
  20 ms; the Query asks for ``connection_id`` only (the one attribute fan-out needs);
* the push queue: a moto SQS server (:mod:`tests.support.queue_processes`);
* the management API: :mod:`bench.management_server`, every post answered after 20 ms.

Measured:

1. **producer** — ``push.deliver`` of one channel message, as ``POST /notifications`` runs
   it: the paged audience Query, then the shards planned and queued with SendMessageBatch.
   Target: on AWS at 512 MB (CPU time here scaled to the share), the API call answers in
   <= 5 s (REST APIs time out at 29 s).
2. **shards** — one worker process takes every shard from the queue and runs the real
   ``push_worker`` record handler on each: wall and CPU per shard of 1,000 posts, posts per
   second per shard. Reference: 1,000 posts / 256 in flight x 20 ms = 0.08 s (12,800 posts/s).
3. **model** — wall time of the whole fan-out on AWS against Lambda concurrency, function
   memory and API Gateway's account throttle quota (10,000 requests per second by default,
   shared by every API of the account in the region: 100,000 messages take >= 10 s).
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from tests.support import children

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBERS = 100_000
PAGE = 10_000
LATENCY = 0.020
IN_FLIGHT = 256  # PUSH_MAX_WORKERS's default
CHANNEL = "presence-bench-100k"
QUEUE = "realtime-push-bench"
PRODUCER_TARGET_S = 5.0
DEFAULT_QUOTA = 10_000
#: Lambda gives one vCPU at 1,769 MB, CPU in proportion below (Lambda docs, "Memory and
#: computing power")
VCPU_MB = 1769
#: SQS event source: 5 concurrent batches at first, up to 300 more per minute (Lambda docs,
#: "Configuring scaling behavior for SQS event source mappings"); batch size of push_worker
BATCH_SIZE = 10
BENCH_CORE, SERVER_CORE = "0", "1"
FRAME_DATA = {"score": [1, 0], "minute": 88}


def _env(sqs: str, dynamodb: str, endpoint: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "PUSH_", "WEBSOCKET_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "dev",
        "CONNECTIONS_TABLE": "realtime-connections-bench", "WEBSOCKET_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_SQS": sqs, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
        "PUSH_QUEUE_NAME": QUEUE, "PYTHONPATH": str(ROOT),
    })
    return env


# --- workers (pinned to core 0) ---------------------------------------------------------------

def _worker_produce() -> dict:
    from chalicelib.registry import subscriptions
    from chalicelib.delivery import push

    cpu, wall = time.process_time(), time.perf_counter()
    ids = subscriptions.subscribers_of_channel(CHANNEL)
    query = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
             "ids": len(ids)}
    import boto3

    boto3.client("sqs").create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "300"})
    notification = push.parse_notification({"channel": CHANNEL, "event": "goal",
                                            "data": FRAME_DATA})
    from chalicelib.delivery import shards

    shards.send_bodies([])  # the SQS client and queue URL, as a warm function has them
    cpu, wall = time.process_time(), time.perf_counter()
    summary = push.deliver(notification)
    produce = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    return {"query": query, "produce": produce, "summary": summary}


def _worker_deliver() -> dict:
    import boto3

    from chalicelib.doors import queue

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    runs: List[dict] = []
    empty = 0
    started = time.perf_counter()
    while empty < 2:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=BATCH_SIZE,
                                       AttributeNames=["All"]).get("Messages", [])
        if not messages:
            empty += 1
            continue
        empty = 0
        for message in messages:
            record = {"messageId": message["MessageId"], "body": message["Body"],
                      "attributes": message["Attributes"]}
            posts = len(json.loads(message["Body"])["shard"]["ids"])
            cpu, wall = time.process_time(), time.perf_counter()
            done = queue.handle_record(record)
            runs.append({"wall": time.perf_counter() - wall,
                         "cpu": time.process_time() - cpu, "posts": posts, "done": done})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return {"runs": runs, "total": time.perf_counter() - started}


# --- orchestration ----------------------------------------------------------------------------

def _start(args: List[str]) -> "tuple":
    return children.start(args, cpu=SERVER_CORE, expect="http://127.0.0.1:")


_stop = children.stop


def _worker(kind: str, env: Dict[str, str]) -> dict:
    out = subprocess.run(["taskset", "-c", BENCH_CORE, sys.executable, "-m",
                          "bench.bench_shards", "--worker", kind], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"worker {kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def produce_on_aws(cpu_s: float, memory_mb: int, pages: int, shards: int) -> float:
    """Modelled time of the producer on AWS, seconds: its CPU time here scaled to the
    function's CPU share, plus one :data:`LATENCY` round trip per Query page and per
    SendMessageBatch call."""
    return cpu_s * VCPU_MB / memory_mb + (pages + math.ceil(shards / BATCH_SIZE)) * LATENCY


def model(posts: int, rate_per_vcpu: float, produce_s: float, memory_mb: int,
          concurrency: int, quota: int, shard_size: int) -> tuple:
    """Modelled wall time of a fan-out on AWS, seconds, and what bounds it: ``produce_s``,
    then the shards' posts.

    One invocation posts at ``min(IN_FLIGHT / LATENCY, rate_per_vcpu x memory / 1,769)`` posts
    per second; ``min(concurrency, batches)`` invocations run at once (a batch is
    :data:`BATCH_SIZE` shards); together they are capped by the account's ``quota``.
    """
    invocation = min(IN_FLIGHT / LATENCY, rate_per_vcpu * memory_mb / VCPU_MB)
    batches = math.ceil(math.ceil(posts / shard_size) / BATCH_SIZE)
    parallel = min(concurrency, batches)
    fleet = parallel * invocation
    bound = "quota" if fleet >= quota else ("latency" if invocation == IN_FLIGHT / LATENCY
                                            else "CPU")
    return produce_s + posts / min(fleet, quota), bound


def main() -> None:
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        print("needs Linux and 2 cores (taskset); skipped")
        return
    processes = []
    try:
        registry, dynamodb = _start(["-m", "tests.support.registry_stand_in", "--items",
                                     str(SUBSCRIBERS), "--page", str(PAGE), "--latency",
                                     str(LATENCY), "--channel", CHANNEL])
        processes.append(registry)
        queue, sqs = _start(["-m", "tests.support.queue_processes", "sqs"])
        processes.append(queue)
        management, endpoint = _start(["-m", "bench.management_server", "--latency",
                                       str(LATENCY)])
        processes.append(management)
        env = _env(sqs, dynamodb, endpoint)
        produced = _worker("produce", env)
        delivered = _worker("deliver", env)
    finally:
        for process in processes:
            _stop(process)

    query, produce, summary = produced["query"], produced["produce"], produced["summary"]
    runs = delivered["runs"]
    posts = sum(run["posts"] for run in runs)
    assert summary["queued"] == SUBSCRIBERS and posts == SUBSCRIBERS, (summary, posts)
    assert all(run["done"] for run in runs)
    shard_size = max(run["posts"] for run in runs)
    walls = sorted(run["wall"] for run in runs)
    cpus = [run["cpu"] for run in runs]
    cpu_per_post = sum(cpus) / posts
    print(f"worker pinned to core {BENCH_CORE} (taskset); registry stand-in, moto SQS and "
          f"management API on core {SERVER_CORE}; {SUBSCRIBERS:,} subscribers, registry pages "
          f"of {PAGE:,} and posts answered after {LATENCY * 1000:.0f} ms")

    print(f"\n3a. Producer: push.deliver of one channel message (as POST /notifications)")
    print(f"| {'step':<58} | {'wall s':>6} | {'CPU s':>6} |")
    print(f"|{'-' * 60}|{'-' * 8}|{'-' * 8}|")
    print(f"| {f'registry Query, {SUBSCRIBERS // PAGE} pages, connection_id only':<58} | "
          f"{query['wall']:>6.2f} | {query['cpu']:>6.2f} |")
    label = f"deliver: Query + {summary['shards']} shards queued (SendMessageBatch)"
    print(f"| {label:<58} | {produce['wall']:>6.2f} | {produce['cpu']:>6.2f} |")
    pages = math.ceil(SUBSCRIBERS / PAGE)
    aws = {mb: produce_on_aws(produce["cpu"], mb, pages, summary["shards"])
           for mb in (512, VCPU_MB)}
    verdict = "meets" if aws[512] <= PRODUCER_TARGET_S else "MISSES"
    print(f"the API call answers 202 after {produce['wall']:.2f} s here; on AWS (CPU scaled to "
          f"the memory, {LATENCY * 1000:.0f} ms per page and per batch call): "
          f"{aws[512]:.2f} s at 512 MB, {aws[VCPU_MB]:.2f} s at {VCPU_MB} MB — {verdict} the "
          f"<= {PRODUCER_TARGET_S:.0f} s target at 512 MB (REST API timeout: 29 s)")

    floor = shard_size / IN_FLIGHT * LATENCY
    print(f"\n3b. Shards: {len(runs)} shards of {shard_size:,}, each through the real "
          f"push_worker record handler, one after the other on core {BENCH_CORE}")
    print(f"| {'per shard':<22} | {'median':>7} | {'p90':>7} | {'reference':>16} |")
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 9}|{'-' * 18}|")
    p90 = walls[int(len(walls) * 0.9) - 1]
    print(f"| {'wall s':<22} | {statistics.median(walls):>7.3f} | {p90:>7.3f} | "
          f"{f'>= {floor:.3f} (latency)':>16} |")
    print(f"| {'posts/s':<22} | {shard_size / statistics.median(walls):>7.0f} | "
          f"{shard_size / p90:>7.0f} | {f'<= {IN_FLIGHT / LATENCY:,.0f}':>16} |")
    print(f"| {'CPU µs per post':<22} | {statistics.median(cpus) / shard_size * 1e6:>7.0f} | "
          f"{'':>7} | {'<= 150 (item 1)':>16} |")
    print(f"all {posts:,} posts delivered by one process in {delivered['total']:.1f} s "
          f"({posts / delivered['total']:,.0f} posts/s, queue reads included)")

    rate_per_vcpu = 1 / cpu_per_post
    print(f"\n3c. Model: {SUBSCRIBERS:,} subscribers on AWS — the producer as above (same "
          f"memory), then shards of {shard_size:,} in batches of "
          f"{BATCH_SIZE}; an invocation posts at min({IN_FLIGHT} / {LATENCY * 1000:.0f} ms, "
          f"{rate_per_vcpu:,.0f} posts/s per vCPU measured x memory / {VCPU_MB} MB)")
    columns = [(512, DEFAULT_QUOTA), (VCPU_MB, DEFAULT_QUOTA), (VCPU_MB, 30_000)]
    header = " | ".join(f"{f'{mb} MB, {quota // 1000}k rps':>20}" for mb, quota in columns)
    print(f"| {'concurrent invocations':<34} | {header} |")
    print(f"|{'-' * 36}|" + "|".join("-" * 22 for _ in columns) + "|")
    for concurrency, note in ((1, ""), (5, " (SQS's first pollers)"), (10, ""), (20, ""),
                              (50, "")):
        cells = []
        for mb, quota in columns:
            wall, bound = model(SUBSCRIBERS, rate_per_vcpu, aws[mb], mb, concurrency,
                                quota, shard_size)
            cells.append(f"{f'{wall:.1f} s ({bound})':>20}")
        print(f"| {f'{concurrency}{note}':<34} | " + " | ".join(cells) + " |")
    print(f"physical limit at the default quota: {SUBSCRIBERS:,} / {DEFAULT_QUOTA:,} rps = "
          f"{SUBSCRIBERS / DEFAULT_QUOTA:.0f} s (the quota is shared with every API of the "
          f"account in the region; raise it in Service Quotas). "
          f"{math.ceil(SUBSCRIBERS / shard_size / BATCH_SIZE)} batches can run at once; SQS "
          f"starts 5 and adds up to 300 a minute")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        import logging

        logging.getLogger("realtime").setLevel(logging.WARNING)
        result = _worker_produce() if sys.argv[2] == "produce" else _worker_deliver()
        print(json.dumps(result))
    else:
        main()

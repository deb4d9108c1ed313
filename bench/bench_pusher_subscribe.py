"""Pusher dialect: ``pusher:subscribe`` -> ``pusher_internal:subscription_succeeded`` on the
local stack (``make bench`` / ``python -m bench subscribe``).

Setup: the whole local stack on free ports (:class:`bench.pusher_stack.CountedStack`: the local
gateway running the app's ``$default`` handler, moto for DynamoDB; every part its own
process), once with the management API answering at once and once with ``--post-latency
0.02`` (each PostToConnection takes 20 ms, like a Lambda -> API Gateway round trip).

Measured, sequential subscribes to new channels, each kind on a fresh connection (3 warm-up
subscribes first):

* a Python ``websockets`` client: from sending ``pusher:subscribe`` to receiving
  ``pusher_internal:subscription_succeeded``, for a public channel, a ``private-`` channel and
  a ``presence-`` channel (its only member; the answer carries the member list). ``auth`` is
  signed with the app secret by the ``pusher`` library (``Pusher.authenticate``), exactly what
  our ``/pusher/auth`` returns, so the figure is the socket round trip alone;
* the same with pusher-js 8 (Node, ``bench/pusher_subscribe.js``; its ``customHandler`` signs
  the same way): ``channel.subscribe()`` -> ``pusher:subscription_succeeded``;
* per subscribe, counted: DynamoDB requests (moto's request recorder) and PostToConnection
  calls (the local gateway's counters).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from typing import Dict, List

from bench.pusher_stack import ROOT, CountedStack, PusherSocket, figure_table, p50_p99

SUBSCRIBES = int(os.environ.get("BENCH_SUBSCRIBES", "30"))
NODE_SUBSCRIBES = int(os.environ.get("BENCH_NODE_SUBSCRIBES", "20"))
KINDS = ("public", "private", "presence")
PREFIX = {"public": "bench-", "private": "private-bench-", "presence": "presence-bench-"}
WARM = 3


def _auth(library, kind: str, channel: str, socket_id: str):
    if kind == "public":
        return None
    data = {"user_id": "bench-user", "user_info": {"name": "Bench"}} \
        if kind == "presence" else None
    return library.authenticate(channel=channel, socket_id=socket_id, custom_data=data)


async def _python_client(stack: CountedStack, kind: str, count: int) -> Dict[str, object]:
    library = stack.pusher_library()
    sock = await PusherSocket.open(stack.pusher_url)
    try:
        for i in range(WARM):
            channel = f"{PREFIX[kind]}warm-{i}"
            await sock.subscribe(channel, _auth(library, kind, channel, sock.socket_id))
        before = await asyncio.to_thread(stack.settle)
        times: List[float] = []
        for i in range(count):
            channel = f"{PREFIX[kind]}{i}"
            auth = _auth(library, kind, channel, sock.socket_id)
            started = time.perf_counter()
            await sock.subscribe(channel, auth)
            times.append((time.perf_counter() - started) * 1000)
        work = await asyncio.to_thread(stack.settle) - before
    finally:
        await sock.close()
    assert not sock.unexpected, sock.unexpected[:3]
    return {"ms": times, "dynamodb": work.total("dynamodb") / count,
            "posts": work.posts / count, "ops": work["dynamodb"]}


def _node_client(stack: CountedStack, count: int) -> Dict[str, List[float]]:
    node = shutil.which("node")
    if node is None or not (ROOT / "devtools" / "node" / "node_modules" / "pusher-js").exists():
        return {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"NODE_PATH": str(ROOT / "devtools" / "node" / "node_modules"),
                "PUSHER_KEY": stack.key, "PUSHER_SECRET": stack.stack.env["PUSHER_SECRET"],
                "WS_PORT": str(stack.stack.ports.websocket), "COUNT": str(count),
                "KINDS": ",".join(KINDS)})
    out = subprocess.run([node, str(ROOT / "bench" / "pusher_subscribe.js")],
                         cwd=ROOT / "devtools" / "node", env=env, capture_output=True,
                         text=True, timeout=150)
    times: Dict[str, List[float]] = {}
    for line in out.stdout.splitlines():
        message = json.loads(line)
        if message.get("step") == "times":
            times[message["kind"]] = message["ms"]
    if out.returncode != 0 or set(times) != set(KINDS):
        raise RuntimeError(f"pusher-js subscribe timing failed: {out.stdout[-500:]} "
                           f"{out.stderr[-500:]}")
    return times


def measure(post_latency: float, count: int = SUBSCRIBES,
            node_count: int = NODE_SUBSCRIBES) -> Dict[str, Dict[str, object]]:
    """Both clients on a fresh stack: ``{kind: {"ms", "dynamodb", "posts", "ops",
    "pusher_js"}}`` (milliseconds; DynamoDB requests and posts per subscribe)."""
    with CountedStack(post_latency) as stack:
        async def run():
            return {kind: await _python_client(stack, kind, count) for kind in KINDS}

        result = asyncio.run(run())
        for kind, times in (_node_client(stack, node_count) if node_count else {}).items():
            result[kind]["pusher_js"] = times
    return result


#: what a subscribe should take on AWS, and why (printed beside the local figures)
EXPECTED = {
    "public": "~25-45 ms p50: API Gateway -> warm $default ~5-10 ms, 4 DynamoDB requests in "
              "sequence ~3-6 ms each, PostToConnection ~10-20 ms",
    "private": "same as public + an HMAC check (µs)",
    "presence": "~40-70 ms p50: 8 DynamoDB requests in sequence (the roster and member read, "
                "one transaction, one Query of the member list) + the post",
}


def main() -> None:
    print("load average at start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    rows = []
    for latency in (0.0, 0.02):
        result = measure(latency)
        label = "answers at once" if not latency else "20 ms per PostToConnection"
        for kind in KINDS:
            p50, p99 = p50_p99(result[kind]["ms"])
            rows.append((label, kind, "Python websockets", len(result[kind]["ms"]), p50, p99,
                         result[kind]["dynamodb"], result[kind]["posts"]))
            if result[kind].get("pusher_js"):
                p50, p99 = p50_p99(result[kind]["pusher_js"])
                rows.append((label, kind, "pusher-js", len(result[kind]["pusher_js"]), p50,
                             p99, None, None))
        if not latency:
            ops = {kind: " ".join(f"{op} {n / SUBSCRIBES:g}" for op, n in
                                  sorted(result[kind]["ops"].items())) for kind in KINDS}
            posts_per = {kind: result[kind]["posts"] for kind in KINDS}
    print(f"{'management API':27} {'channel':9} {'client':18} {'n':>3} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'DynamoDB':>9} {'posts':>6}")
    for label, kind, client, n, p50, p99, dynamodb, posts in rows:
        counted = f"{dynamodb:>9.2f} {posts:>6.2f}" if dynamodb is not None else f"{'':>9} {'':>6}"
        print(f"{label:27} {kind:9} {client:18} {n:>3} {p50:>7.1f} {p99:>7.1f} {counted}")
    print("subscribe -> subscription_succeeded; DynamoDB requests and posts per subscribe")
    for kind in KINDS:
        print(f"  {kind}: DynamoDB {ops[kind]}")
    for kind in KINDS:
        print(f"expected on AWS, {kind}: {EXPECTED[kind]}")
    print("  p99 on AWS: cold starts of the $default function (~0.3-1 s, Python 3.11 + "
          "botocore), not the work")
    print()
    figures = []
    for label, kind, client, n, p50, p99, dynamodb, posts in rows:
        figures.append((f"{client} subscribe -> subscription_succeeded, {kind}, {label}, "
                        f"p50 / p99 (n={n})", f"{p50:.0f} / {p99:.0f} ms",
                        EXPECTED[kind]))
    for kind in KINDS:
        figures.append((f"DynamoDB requests / PostToConnection per subscribe, {kind}",
                        f"{ops[kind]} / {posts_per[kind]:g}", "same"))
    for line in figure_table(figures):
        print(line)
    print("load average at end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

"""Pusher dialect: a presence channel of 100 members joining, then leaving, on the local stack
(``make bench`` / ``python -m bench presence``).

Setup: the whole local stack on free ports (:class:`bench.pusher_stack.CountedStack`: the local
gateway running the app's handlers, moto for DynamoDB, every part its own process), management
API answering at once. 100 protocol 7 sockets (Python ``websockets``), each subscribing with a
different ``user_id``, its ``auth`` signed by the ``pusher`` library as our ``/pusher/auth``
signs it.

Measured, one member at a time:

* join: ``pusher:subscribe`` -> ``pusher_internal:subscription_succeeded`` (with the member
  list), then every earlier member has its ``member_added``;
* leave: the socket closes -> every remaining member has its ``member_removed`` (the
  ``$disconnect`` handler's work);
* per join and per leave, counted where the work happens (not estimated): DynamoDB requests
  reaching moto (by operation), invocations of the app's functions and PostToConnection calls
  made through the local gateway; the member events received are checked against the protocol
  (k-1 ``member_added`` for the k-th member...), so a figure from a broken run is not printed.

The cost model printed: DynamoDB requests per join and per leave do not grow with the channel
(O(1)), PostToConnection calls do (the k-th join posts k-1 ``member_added`` + its own
``subscription_succeeded``; the leave of a member with m left posts m ``member_removed``), so a
channel filled to N and emptied costs N(N+1)/2 + N(N-1)/2 = N² posts.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Dict, List

from bench.pusher_stack import (Counts, CountedStack, PusherSocket, figure_table, p50_p99,
                                wait_until)

MEMBERS = int(os.environ.get("BENCH_PRESENCE_MEMBERS", "100"))
CHANNEL = "presence-bench"
#: joins whose counts are printed one by one (the k-th member; the last one is added)
SHOWN = (1, 2, 10, 50)


async def _run(stack: CountedStack, members: int) -> Dict[str, object]:
    library = stack.pusher_library()
    sockets: List[PusherSocket] = []
    for _ in range(members):
        sockets.append(await PusherSocket.open(stack.pusher_url))
    before = await asyncio.to_thread(stack.settle)

    joins: List[Dict[str, object]] = []
    started = time.perf_counter()
    last = before
    for k, sock in enumerate(sockets, start=1):
        auth = library.authenticate(channel=CHANNEL, socket_id=sock.socket_id, custom_data={
            "user_id": f"user-{k:03d}", "user_info": {"name": f"Member {k}"}})
        sent = time.perf_counter()
        frame = await sock.subscribe(CHANNEL, auth)
        answered = time.perf_counter()
        presence = json.loads(frame["data"])["presence"]
        assert presence["count"] == k and len(presence["ids"]) == k, presence
        expected = k * (k - 1) // 2  # member j got one member_added for each later member
        await wait_until(lambda: sum(s.added for s in sockets) == expected)
        now = await asyncio.to_thread(stack.idle_counts)
        joins.append({"k": k, "ms": (answered - sent) * 1000,
                      "all_ms": (time.perf_counter() - sent) * 1000, "counts": now - last})
        last = now
    join_wall = time.perf_counter() - started
    after_joins = await asyncio.to_thread(stack.settle)

    leaves: List[Dict[str, object]] = []
    started = time.perf_counter()
    last = after_joins
    for k, sock in enumerate(sockets, start=1):
        left = members - k  # members still there after this one leaves
        sent = time.perf_counter()
        await sock.close()
        expected = sum(members - j for j in range(1, k + 1))
        await wait_until(lambda: sum(s.removed for s in sockets) == expected)
        done = time.perf_counter()
        now = await asyncio.to_thread(stack.settle if left == 0 else stack.idle_counts)
        leaves.append({"k": k, "left": left, "ms": (done - sent) * 1000,
                       "counts": now - last})
        last = now
    leave_wall = time.perf_counter() - started
    after_leaves = await asyncio.to_thread(stack.settle)
    unexpected = [frame for sock in sockets for frame in sock.unexpected]
    assert not unexpected, unexpected[:3]
    return {"joins": joins, "leaves": leaves, "join_wall": join_wall,
            "leave_wall": leave_wall, "join_total": after_joins - before,
            "leave_total": after_leaves - after_joins}


def measure(members: int = MEMBERS, post_latency: float = 0.0) -> Dict[str, object]:
    """Run the scenario on a fresh stack; answers the per-join and per-leave records and the
    phase totals (:class:`bench.pusher_stack.Counts`)."""
    with CountedStack(post_latency) as stack:
        return asyncio.run(_run(stack, members))


def _ops(counts: Counts) -> str:
    return " ".join(f"{op} {n}" for op, n in sorted(counts["dynamodb"].items()))


def report(result: Dict[str, object], members: int) -> List[str]:
    """The printed tables (also what docs/benchmarks.md shows)."""
    joins, leaves = result["joins"], result["leaves"]
    jt, lt = result["join_total"], result["leave_total"]
    lines = [f"{members} members on {CHANNEL}, one at a time; management API answering at once",
             "",
             f"{'phase':8} {'wall s':>7} {'p50 ms':>7} {'p99 ms':>7} {'DynamoDB':>9} "
             f"{'/member':>8} {'invocations':>12} {'posts':>6} {'/member':>8}"]
    for name, records, wall, total in (("join", joins, result["join_wall"], jt),
                                       ("leave", leaves, result["leave_wall"], lt)):
        # the last member's leave has nobody to tell: no member_removed to wait for
        p50, p99 = p50_p99([r["ms"] for r in records if r.get("left", 1)])
        lines.append(f"{name:8} {wall:>7.2f} {p50:>7.1f} {p99:>7.1f} "
                     f"{total.total('dynamodb'):>9} {total.total('dynamodb') / members:>8.2f} "
                     f"{total.total('invocations'):>12} {total.posts:>6} "
                     f"{total.posts / members:>8.2f}")
    lines += ["",
              "join = subscribe -> subscription_succeeded (member list); leave = socket closed ->"
              " every remaining member has member_removed",
              "", f"{'k-th join':10} {'ms':>6} {'DynamoDB':>9} {'invocations':>12} "
                  f"{'posts':>6}   DynamoDB operations"]
    for record in joins:
        if record["k"] in SHOWN or record["k"] == members:
            c = record["counts"]
            lines.append(f"{record['k']:>10} {record['ms']:>6.1f} {c.total('dynamodb'):>9} "
                         f"{c.total('invocations'):>12} {c.posts:>6}   {_ops(c)}")
    lines += ["", f"{'k-th leave':10} {'ms':>6} {'DynamoDB':>9} {'invocations':>12} "
                  f"{'posts':>6}   DynamoDB operations"]
    for record in leaves:
        if record["k"] in SHOWN or record["k"] == members:
            c = record["counts"]
            ms = f"{record['ms']:>6.1f}" if record["left"] else f"{'-':>6}"
            lines.append(f"{record['k']:>10} {ms} {c.total('dynamodb'):>9} "
                         f"{c.total('invocations'):>12} {c.posts:>6}   {_ops(c)}")
    join_db = sorted({r["counts"].total("dynamodb") for r in joins[1:]})
    leave_db = sorted({r["counts"].total("dynamodb") for r in leaves[:-1]})
    join_posts_ok = all(r["counts"].posts == r["k"] for r in joins)
    leave_posts_ok = all(r["counts"].posts == r["left"] for r in leaves)
    lines += ["",
              f"cost model: DynamoDB requests per join {'/'.join(map(str, join_db))} (first "
              f"member {joins[0]['counts'].total('dynamodb')}), per leave "
              f"{'/'.join(map(str, leave_db))} (last member "
              f"{leaves[-1]['counts'].total('dynamodb')}): O(1) in N; one invocation each "
              f"($default / $disconnect);",
              f"  posts: the k-th join posts k (k-1 member_added + subscription_succeeded)"
              f" {'[holds for every join]' if join_posts_ok else '[DOES NOT HOLD]'}, a leave "
              f"with m members left posts m member_removed "
              f"{'[holds for every leave]' if leave_posts_ok else '[DOES NOT HOLD]'}: "
              f"O(N) per join, N² = {members * members} posts to fill and empty the channel",
              "  expected on AWS: same counts (one Lambda invocation per join/leave; "
              "registry_stream is not invoked: its filter passes TTL deletes only); "
              "a join ~40-80 ms + the member_added fan-out (~100 posts in flight at once, "
              "~20-40 ms for 100 members)", ""]
    jp50, jp99 = p50_p99([r["ms"] for r in joins])
    lp50, lp99 = p50_p99([r["ms"] for r in leaves if r["left"]])
    per = {name: "/".join(map(str, values)) for name, values in
           (("join", join_db), ("leave", leave_db))}
    lines += figure_table([
        (f"{members} members joining one at a time: wall time", f"{result['join_wall']:.1f} s",
         f"~{members * 0.06:.1f}-{members * 0.1:.1f} s ({members} x a join)"),
        ("join -> subscription_succeeded with the member list, p50 / p99",
         f"{jp50:.0f} / {jp99:.0f} ms", f"~40-80 ms + the member_added fan-out (~20-40 ms for "
                                        f"{members - 1} posts in flight at once)"),
        ("DynamoDB requests per join", f"{per['join']} for every k: {_ops(joins[-1]['counts'])}",
         "same: O(1); read volume O(N) (one Query returns every member)"),
        ("invocations per join", f"{jt.total('invocations') / members:g}", "1 ($default)"),
        ("PostToConnection per join", f"k ({jt.posts} in all)" if join_posts_ok
         else f"{jt.posts / members:.2f} on average (NOT k: check the run)",
         "same: O(N) (API Gateway messages)"),
        (f"{members} members leaving one at a time (socket closed): wall time",
         f"{result['leave_wall']:.1f} s",
         f"~{members * 0.05:.1f}-{members * 0.1:.1f} s ({members} x a leave)"),
        ("leave -> every remaining member has member_removed, p50 / p99",
         f"{lp50:.0f} / {lp99:.0f} ms", "~50-100 ms after API Gateway runs $disconnect"),
        ("DynamoDB requests per leave", f"{per['leave']}: {_ops(leaves[0]['counts'])}; last "
         f"member {leaves[-1]['counts'].total('dynamodb')}", "same: O(1)"),
        ("invocations per leave", f"{lt.total('invocations') / members:g}",
         "1 ($disconnect); registry_stream 0 (its filter passes TTL deletes only)"),
        ("PostToConnection per leave", f"members left ({lt.posts} in all)" if leave_posts_ok
         else f"{lt.posts / members:.2f} on average (NOT the members left: check the run)",
         "same: O(N)"),
    ])
    return lines


def main() -> None:
    print("load average at start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    result = measure()
    for line in report(result, MEMBERS):
        print(line, flush=True)
    print("load average at end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

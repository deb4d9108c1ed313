"""The Pusher-dialect benchmarks (``bench/bench_pusher_subscribe.py``,
``bench/bench_pusher_presence.py``) run, on one local stack and at a tiny size: their clients
get every answer the protocol promises, and the work they count is what the handlers did (a
join posts to every member, one invocation per join and per leave, the same DynamoDB requests
for every join) — so ``make bench`` cannot print figures from a broken run or a broken count.
"""
from __future__ import annotations

import asyncio

import pytest

from bench import bench_pusher_presence, bench_pusher_subscribe
from bench.pusher_stack import CountedStack

pytestmark = pytest.mark.e2e


def test_pusher_benchmarks_run_and_count_the_work():
    members = 3
    with CountedStack() as stack:
        async def run():
            subscribes = {kind: await bench_pusher_subscribe._python_client(stack, kind, 2)
                          for kind in bench_pusher_subscribe.KINDS}
            return subscribes, await bench_pusher_presence._run(stack, members)

        subscribes, presence = asyncio.run(run())
        pusher_js = bench_pusher_subscribe._node_client(stack, 1)

    for kind, result in subscribes.items():
        assert len(result["ms"]) == 2 and all(ms > 0 for ms in result["ms"]), kind
        assert result["posts"] == 1, kind  # the subscription_succeeded frame
        assert result["dynamodb"] >= 1, kind
    assert subscribes["presence"]["dynamodb"] > subscribes["public"]["dynamodb"]
    assert sorted(pusher_js) == sorted(bench_pusher_subscribe.KINDS)
    assert all(len(times) == 1 and times[0] > 0 for times in pusher_js.values())

    joins, leaves = presence["joins"], presence["leaves"]
    assert [j["counts"].posts for j in joins] == [1, 2, 3]  # k-1 member_added + succeeded
    assert all(dict(j["counts"]["invocations"]) == {"ws_message": 1} for j in joins)
    assert len({j["counts"].total("dynamodb") for j in joins}) == 1
    assert [leave["counts"].posts for leave in leaves] == [2, 1, 0]
    assert all(dict(leave["counts"]["invocations"]) == {"ws_disconnect": 1}
               for leave in leaves)
    report = "\n".join(bench_pusher_presence.report(presence, members))
    assert "[holds for every join]" in report and "[holds for every leave]" in report

"""``python -m bench.redis_suite.client SYSTEM OP [ARG ...]``: a workload's client side, in the system's
own Python, printing one JSON line.

Ops: ``mark WHAT`` (queue a mark task); ``fill N`` (a start mark, N no-ops timed as the enqueue rate,
a finish mark); ``sleep N`` (a start mark, N sleepers); ``roundtrip ROUNDS CAP`` (sequential calls with
their results, after 20 warm-up calls; stops early after CAP seconds).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from typing import Any

WARMUP = 20


class _Driver:
    """Calls a peer client's methods alike whether they are plain or coroutines (on one private loop)."""

    def __init__(self, client: Any, is_async: bool) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop() if is_async else None
        if self.loop is not None:
            self.loop.run_until_complete(client.start())

    def __call__(self, method: str, *args: Any) -> Any:
        out = getattr(self.client, method)(*args)
        return self.loop.run_until_complete(out) if self.loop is not None else out

    def close(self) -> None:
        self("close")
        if self.loop is not None:
            self.loop.close()


def run(do: _Driver, op: str, args: list[str]) -> dict[str, Any]:
    if op == "mark":
        do("mark", args[0])
        return {}
    if op == "fill":
        do("mark", "start")
        t0 = time.perf_counter()
        do("noops", int(args[0]))
        enqueue_s = time.perf_counter() - t0
        do("mark", "finish")
        return {"enqueue_s": enqueue_s}
    if op == "sleep":
        do("mark", "start")
        do("sleepers", int(args[0]))
        return {}
    if op == "roundtrip":
        rounds, cap = int(args[0]), float(args[1])
        for i in range(WARMUP):
            assert do("call", i) == i
        samples = []
        stop = time.perf_counter() + cap
        for i in range(rounds):
            t0 = time.perf_counter()
            assert do("call", i) == i
            samples.append((time.perf_counter() - t0) * 1000)
            if time.perf_counter() > stop:
                break
        return {"samples_ms": samples}
    raise SystemExit(f"unknown op {op}")


def main(argv: list[str]) -> int:
    system, op, *args = argv
    peer = importlib.import_module(f"bench.redis_suite.peers.{system}_peer")
    do = _Driver(peer.client(), getattr(peer, "ASYNC", False))
    try:
        out = run(do, op, args)
    finally:
        do.close()
    print("BENCH-RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

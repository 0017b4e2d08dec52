"""``python -m bench.events``: what task events (``-E``) cost a worker draining no-op tasks on Redis.

A worker in this process drains ``-n`` pre-enqueued no-op tasks (results ignored) with task events off,
then on, ``--rounds`` times, interleaved; it prints tasks per second and the process's CPU time per task
(the steadier figure on a shared machine). No-op tasks are the worst case: the events are all the work
there is besides fetching and acking. Needs a Redis (``--url``, default db 10 of the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

from celeriac import Celeriac
from celeriac._sending import SendOptions, build_call
from celeriac.worker import Worker

app = Celeriac("bench_events")


@app.task(name="bench.events.anoop", ignore_result=True)
async def anoop() -> None:
    return None


@app.task(name="bench.events.noop", ignore_result=True)
def noop() -> None:
    return None


async def drain(n: int, pool: str, events: bool) -> tuple[float, float]:
    """Drain ``n`` no-ops with one worker: (tasks per second, CPU microseconds per task)."""
    queue = f"bench-events-{uuid.uuid4().hex[:8]}"
    task = app.tasks["bench.events.anoop" if pool == "async" else "bench.events.noop"]
    broker = app.broker()
    for start in range(0, n, 1000):
        items = []
        for _ in range(min(1000, n - start)):
            _, call, _, opts = build_call(app, task.name, [], {}, SendOptions(), task)
            items.append(app._prepare(queue, call, None, opts, task))
        await broker.publish_many(items)
    worker = Worker(
        app,
        queues=[queue],
        pool=pool,
        concurrency=100 if pool == "async" else 8,
        prefetch_multiplier=4,
        task_events=events,
        hostname=f"bench-events@{queue}",
    )
    running = asyncio.create_task(worker.arun(install_signals=False))
    await worker.ready.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    while worker.stats["succeeded"] < n:
        await asyncio.sleep(0.005)
    dispatcher = worker.events.dispatcher
    if dispatcher is not None:
        await dispatcher.flush()  # what -E costs includes sending what it gathered
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    worker.request_stop()
    await running
    await app.aclose()
    return n / wall, cpu / n * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="async,threads")
    args = parser.parse_args(argv)
    app.conf.update(broker_url=args.url, result_backend=args.url)
    print(f"{'pool':<8} {'events':<7} {'drain/s (median)':>17} {'CPU us/task (median)':>21}")
    for pool in args.pools.split(","):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for events in (False, True):
                runs[events].append(asyncio.run(drain(args.n, pool, events)))
        for events in (False, True):
            rate = statistics.median(r for r, _ in runs[events])
            cpu = statistics.median(c for _, c in runs[events])
            print(f"{pool:<8} {'-E' if events else 'off':<7} {rate:>17,.0f} {cpu:>21.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The bare floor: what redis-py alone does for the commands one task minimally needs.

Per task: LPUSH of a 400-byte payload (publish), RPOP (fetch) and SET of a result. Measured one command
at a time (each a round trip, as a client and a worker doing one task at a time would) and pipelined in
batches of 100 (as a worker fetching and settling batches could, at best).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

PAYLOAD = b"x" * 400
BATCH = 100


@dataclass
class Floor:
    sequential: float  # tasks/s: LPUSH + RPOP + SET, one command per round trip
    pipelined: float  # tasks/s: the same three, pipelined in batches of 100
    enqueue_sequential: float  # LPUSH alone, one per round trip
    enqueue_pipelined: float  # LPUSH alone, pipelined in batches of 100


def _timed(n: int, step: int, run: Callable[[int], None]) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, step):
        run(start)
    return n / (time.perf_counter() - t0)


def measure(url: str, n: int) -> Floor:
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:

        def task(i: int) -> None:
            client.lpush("floor:q", PAYLOAD)
            client.rpop("floor:q")
            client.set(f"floor:r:{i}", b"1")

        def batch(start: int) -> None:
            with client.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.lpush("floor:q", PAYLOAD)
                pipe.execute()
            with client.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.rpop("floor:q")
                pipe.execute()
            with client.pipeline(transaction=False) as pipe:
                for i in range(start, start + BATCH):
                    pipe.set(f"floor:r:{i}", b"1")
                pipe.execute()

        def push(_: int) -> None:
            client.lpush("floor:p", PAYLOAD)

        def push_batch(_: int) -> None:
            with client.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.lpush("floor:p", PAYLOAD)
                pipe.execute()

        result = Floor(
            sequential=_timed(n, 1, task),
            pipelined=_timed(n, BATCH, batch),
            enqueue_sequential=_timed(n, 1, push),
            enqueue_pipelined=_timed(n, BATCH, push_batch),
        )
    finally:
        client.flushdb()
        client.close()
    return result

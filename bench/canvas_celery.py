"""Celery's side of ``python -m bench canvas``: Redis broker and backend (``BENCH_REDIS_URL``).

Set up for speed as in the Redis suite (``bench/redis_suite/peers/celery_peer.py``): prefetch multiplier
16, early acks (Celery's default), rate limits off. The worker runs with ``--without-gossip
--without-mingle --without-heartbeat -O fair``.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_canvas", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    worker_prefetch_multiplier=16,
    task_acks_late=False,
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(name="bench.canvas.noop")
def noop() -> None:
    return None


@app.task(name="bench.canvas.count")
def count(values: list[object]) -> int:
    return len(values)

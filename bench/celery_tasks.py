"""The same benchmark tasks for the real Celery (a test-only dependency), on its SQLAlchemy transport."""

from __future__ import annotations

import os

from celery import Celery
from sqlalchemy import create_engine, text

app = Celery(
    "bench_celery",
    broker=os.environ.get("BENCH_CELERY_BROKER", "sqla+sqlite:///celery.sqlite3"),
    backend=os.environ.get("BENCH_CELERY_BACKEND", "db+sqlite:///celery.sqlite3"),
)
# Celery's advice for throughput: no result for fire-and-forget tasks, a larger prefetch. kombu's SQL
# transport passes every transport option to create_engine, so its 1 s polling interval cannot be set.
app.conf.update(worker_prefetch_multiplier=4)


@app.task(ignore_result=True)
def noop() -> None:
    return None


@app.task
def echo(value: int) -> int:
    return value


def pending() -> int:
    """Messages not yet consumed, read straight from kombu's SQL tables."""
    url = os.environ["BENCH_CELERY_BROKER"].removeprefix("sqla+")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("select count(*) from kombu_message where visible = 1")).scalar() or 0
            )
    finally:
        engine.dispose()

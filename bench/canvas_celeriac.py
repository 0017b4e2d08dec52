"""celeriac's side of ``python -m bench canvas``: Redis broker and backend (``BENCH_REDIS_URL``), late acks.

Worker: ``celeriac -A bench.canvas_celeriac:app worker -P POOL -c N --prefetch-multiplier 4``. The
header tasks store their results (a group's ``get()`` and a chord's body need them).
"""

from __future__ import annotations

import os

from celeriac import Celeriac

app = Celeriac("bench_canvas")
app.conf.update(broker_url=os.environ["BENCH_REDIS_URL"], result_backend=os.environ["BENCH_REDIS_URL"])


@app.task(name="bench.canvas.noop")
def noop() -> None:
    return None


@app.task(name="bench.canvas.anoop")
async def anoop() -> None:
    """The no-op as a coroutine, for the async pool (which runs a plain ``def`` in a thread)."""
    return None


@app.task(name="bench.canvas.count")
def count(values: list[object]) -> int:
    """The chord's body: how many header results it received."""
    return len(values)

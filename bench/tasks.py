"""The benchmark's tasks. Broker and backend come from CELERIAC_* variables set by the runner."""

from __future__ import annotations

from celeriac import Celeriac

app = Celeriac("bench")


@app.task(ignore_result=True)
def noop() -> None:
    return None


@app.task
def echo(value: int) -> int:
    return value


@app.task
async def aecho(value: int) -> int:
    return value

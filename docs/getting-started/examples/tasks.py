"""The first-steps app: one module holds the app and its tasks (run: celeriac -A tasks worker)."""

from pathlib import Path

from celeriac import Celery

app = Celery("tasks")  # no broker given: messages and results go to ./tasks.celeriac.sqlite3


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(ignore_result=True)
def touch(path: str) -> None:
    """Nobody reads what this returns, so the worker does not store it."""
    Path(path).touch()

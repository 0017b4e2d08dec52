"""Tasks for the integration tests; the worker subprocesses import this module with -A."""

from __future__ import annotations

import os
import time

from celeriac import Celeriac

app = Celeriac("itest")  # broker and backend come from CELERIAC_* variables set by the tests


def _ledger(line: str) -> None:
    path = os.environ.get("LEDGER_PATH")
    if path:
        # One small O_APPEND write is atomic, so concurrent children never interleave lines.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@app.task(bind=True)
def work(self, n: int, seconds: float = 0.0, padding: str = "") -> int:
    time.sleep(seconds)
    _ledger(f"{self.request.id} {os.getpid()}")
    return n


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(time_limit=1)
def hang(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def spawner(n: int) -> str:
    """Sends a task from inside a pool child: the child opens its own broker connection."""
    return add.delay(n, n).id


@app.task
def chatty() -> None:
    import logging

    logging.getLogger("chatty").info("hello from a task")


@app.task(bind=True)
def total(self, values: list[int]) -> int:
    """A chord body: one ledger line per run, so a test can count how often it ran."""
    _ledger(f"body:{self.request.id} {sum(values)}")
    return sum(values)


@app.task
def boom(*args: object) -> None:
    raise ValueError("boom")


@app.task
def on_error(task_id: str) -> None:
    _ledger(f"errback:{task_id} {os.getpid()}")


@app.task(bind=True, max_retries=3)
def retried(self, times: int, countdown: float) -> int:
    if self.request.retries < times:
        raise self.retry(countdown=countdown)
    return self.request.retries


@app.task
def returns_signature() -> object:
    return (add.s(1, 2) | add.s(3)).stamp(tenant="t")


class NeedsTwo(Exception):
    """Pickles by its args (one string) but its __init__ takes two: it cannot be read back as it is."""

    def __init__(self, foo: str, bar: str) -> None:
        super().__init__(f"{foo} and {bar}")


@app.task
def fails_unpickleably() -> None:
    raise NeedsTwo("foo", "bar")


@app.task(bind=True)
def replaced_nesting(self, depth: int) -> object:
    if depth:
        self.replace(replaced_nesting.s(depth - 1))
    return self.request.replaced_task_nesting


@app.task
def die() -> None:
    """A poison task: it kills the process running it, every time."""
    os._exit(3)


@app.control.inspect_command()
def answer(state: object, question: str = "", **_: object) -> dict[str, str]:
    """A command of the app's own, which its workers answer (remote-control tests)."""
    return {"ok": f"42 to {question}"}


@app.task(bind=True)
def whose(self, seconds: float) -> int:
    """Sleeps, writes a ledger line and returns its process id: which worker's run a result comes from."""
    time.sleep(seconds)
    _ledger(f"{self.request.id} {os.getpid()}")
    return os.getpid()

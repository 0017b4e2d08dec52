"""Tasks of the example project: plain ones, an error callback, and one with time limits."""

import logging
import time

from celeriac.exceptions import SoftTimeLimitExceeded
from proj.celery import app

logger = logging.getLogger(__name__)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


class OutOfStock(Exception):
    """Raised by ``reserve`` when there is not enough left."""


@app.task
def reserve(item: str, quantity: int) -> str:
    stock = {"apple": 3}
    if stock.get(item, 0) < quantity:
        raise OutOfStock(item, quantity)
    return f"{quantity} {item} reserved"


@app.task
def report_failure(task_id: str) -> str:
    """An error callback: it receives the id of the task that failed."""
    error = app.AsyncResult(task_id).result
    message = f"task {task_id} failed: {error!r}"
    logger.warning(message)
    return message


@app.task(soft_time_limit=50, time_limit=60)
def crunch(steps: int) -> str:
    """Works in small steps, so a time limit can interrupt it between two of them."""
    done = 0
    try:
        while done < steps:
            time.sleep(0.01)  # stands for one step of real work
            done += 1
    except SoftTimeLimitExceeded:
        return f"stopped early after {done} of {steps} steps"
    return f"all {steps} steps done"

"""Retrying: by hand with ``self.retry``, and automatically with ``autoretry_for``."""

from celeriac import Task
from proj.celery import app


class GatewayBusy(Exception):
    """The payment gateway asked us to come back later."""


_calls: dict[str, int] = {}


def busy_the_first_time(key: str) -> None:
    """Stands for a remote service that fails on the first call for each key."""
    _calls[key] = _calls.get(key, 0) + 1
    if _calls[key] == 1:
        raise GatewayBusy(key)


@app.task(bind=True, max_retries=5, default_retry_delay=1)
def charge(self: Task[..., str], order_id: str) -> str:
    try:
        busy_the_first_time(order_id)
    except GatewayBusy as exc:
        raise self.retry(exc=exc) from exc
    return f"order {order_id} charged after {self.request.retries} retries"


@app.task(autoretry_for=(ConnectionError,), retry_backoff=True, retry_backoff_max=60, max_retries=3)
def refresh_feed(url: str) -> str:
    if "unreachable" in url:
        raise ConnectionError(f"{url} does not answer")
    try:
        busy_the_first_time(url)
    except GatewayBusy as exc:
        raise ConnectionError(f"{url} is busy") from exc
    return f"{url} refreshed"

"""The autoscaler (``--autoscale MAX,MIN``): grows the pool while work waits for a slot, shrinks it once
the worker has been quiet for ``worker_autoscaler_keepalive`` seconds.

Celery's rule, on the worker's loop: once a second, the demand is the tasks running plus those fetched
and waiting for a slot. Above the pool's size, the pool grows to the demand (at most MAX) at once; below
it, the pool shrinks to the demand (at least MIN), but only when no task arrived and no growth happened
for ``keepalive`` seconds, so that a burst does not pay for starting the pool again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

__all__ = ["Autoscaler", "parse_autoscale"]

log = logging.getLogger("celeriac.worker.autoscale")


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MAX,MIN"`` as ``(max, min)``; as in Celery, the larger number is the maximum whatever the order,
    and ``"MAX"`` alone means MIN 0.

    Raises:
        ValueError: not one or two whole numbers, a negative one, or a maximum of 0.
    """
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"--autoscale wants MAX,MIN (two whole numbers, e.g. 10,3), not {text!r}") from None
    maximum, minimum = (max(numbers), min(numbers)) if len(numbers) == 2 else (numbers[0], 0)
    check_range(maximum, minimum)
    return maximum, minimum


def check_range(maximum: int, minimum: int) -> None:
    """Raise ``ValueError`` unless ``0 <= minimum <= maximum`` and ``maximum >= 1``."""
    if minimum < 0 or maximum < 1 or minimum > maximum:
        raise ValueError(f"autoscale wants 0 <= min <= max and max >= 1, not max={maximum} min={minimum}")


class Autoscaler:
    """Resizes ``worker``'s pool between ``minimum`` and ``maximum`` slots (see the module docstring)."""

    #: Seconds between two looks at the demand.
    interval = 1.0

    def __init__(self, worker: Worker, maximum: int, minimum: int, keepalive: float) -> None:
        check_range(maximum, minimum)
        if keepalive <= 0:
            raise ValueError(f"worker_autoscaler_keepalive must be above 0, not {keepalive}")
        self.worker = worker
        self.maximum = maximum
        self.minimum = minimum
        self.keepalive = keepalive
        self._last_active = time.monotonic()
        self._received = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Look at the demand once a second, on the running loop, until ``stop``."""
        self._received = self.worker.stats["received"]
        self._task = asyncio.create_task(self._run(), name="celeriac-autoscaler")

    async def stop(self) -> None:
        """Stop resizing (the pool keeps its size)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.scale()
            except Exception:
                log.exception("the autoscaler failed to resize the pool; it tries again in a second")

    @property
    def demand(self) -> int:
        """Tasks running in the pool plus tasks fetched and waiting for a slot."""
        return self.worker.demand

    def scale(self, now: float | None = None) -> None:
        """Grow or shrink once, as the demand says now."""
        now = time.monotonic() if now is None else now
        received = self.worker.stats["received"]
        if received != self._received:
            self._received = received
            self._last_active = now
        current, demand = self.worker.concurrency, self.demand
        wanted = min(demand, self.maximum)
        if wanted > current:
            log.info(
                "autoscaler: %d task(s) want a slot; growing the pool from %d to %d", demand, current, wanted
            )
            self._last_active = now
            self.worker.resize(wanted)
            return
        wanted = max(demand, self.minimum)
        if wanted < current and now - self._last_active >= self.keepalive:
            log.info(
                "autoscaler: quiet for %.0fs; shrinking the pool from %d to %d",
                self.keepalive,
                current,
                wanted,
            )
            self._last_active = now
            self.worker.resize(wanted)

    def update(self, maximum: int | None = None, minimum: int | None = None) -> tuple[int, int]:
        """Change the range (remote control's ``autoscale``) and bring the pool into it at once;
        return the new ``(max, min)``.

        Raises:
            ValueError: the new range is not ``0 <= min <= max``, ``max >= 1``.
        """
        maximum = self.maximum if maximum is None else maximum
        minimum = self.minimum if minimum is None else minimum
        check_range(maximum, minimum)
        self.maximum, self.minimum = maximum, minimum
        current = self.worker.concurrency
        if current > maximum or current < minimum:
            self.worker.resize(min(max(current, minimum), maximum))
        self.worker.prefetch_slots_changed()
        return maximum, minimum

    def info(self) -> dict[str, Any]:
        """What ``inspect stats`` shows under ``autoscaler``: Celery's max, min, current and qty."""
        return {
            "max": self.maximum,
            "min": self.minimum,
            "current": self.worker.concurrency,
            "qty": self.demand,
        }

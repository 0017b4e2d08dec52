"""When a task may run: expiry, revocation, ETA (held in the broker, not here) and rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.exceptions import ConfigurationError, TaskRevokedError
from celeriac.middleware.base import Fate, Middleware, Skip, WorkItem
from celeriac.worker._backoff import Backoff, describe

if TYPE_CHECKING:
    from celeriac.backends.base import ResultMeta
    from celeriac.worker.worker import Worker


class Expiry(Middleware):
    """A task past its ``expires`` is not run: its state becomes REVOKED (expired) and it is acked."""

    async def before_start(self, worker: Worker, item: WorkItem) -> None:
        """Skip an expired task, recording it REVOKED and telling what waits on it."""
        await self.before_run(worker, item)

    async def before_run(self, worker: Worker, item: WorkItem) -> None:
        """The same once a slot is held: a task may expire while it waits for one (a full pool holding
        prefetched messages)."""
        expires = item.call.expires
        if expires is not None and datetime.now(UTC) >= expires:
            error = TaskRevokedError("expired")
            await worker.writer.store_state(item, states.REVOKED, error)
            raise Skip(Fate.ACK, f"expired at {expires.isoformat()}", abandon=(states.REVOKED, error))


class Revocation(Middleware):
    """Revoked ids are kept in the result backend; fetched tasks that are revoked are not run.

    A backend that pushes revocations (Redis) feeds a set of the revoked ids kept here, so a fetched
    batch costs no round trip; while that feed is down (not yet read, or broken and reconnecting) each
    fetched batch is looked up in the backend, as on backends without a feed.

    Ids revoked by remote control (``hear``) are skipped whatever the backend says, for three hours
    (at most 50 000 of them, Celery's bounds).
    """

    #: How long, and how many, remote-control revocations are remembered.
    heard_for = 10800.0
    heard_max = 50_000

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}  # task id -> when this worker heard of it
        self._heard: dict[str, float] = {}  # task id -> unix time remote control told it
        self._live = False
        self._feed: asyncio.Task[None] | None = None
        self._pruned_at = 0
        self._stamps: dict[str, list[Any]] = {}  # stamp name -> revoked values

    async def worker_start(self, worker: Worker) -> None:
        """Follow the backend's feed of revocations, where it pushes them."""
        if worker.backend is not None and worker.backend.pushes_revocations:
            self._feed = asyncio.create_task(self._follow(worker))

    async def worker_stop(self, worker: Worker) -> None:
        """Stop following the feed."""
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed

    async def _follow(self, worker: Worker) -> None:
        assert worker.backend is not None
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            try:
                async for ids in worker.backend.revocations():
                    self._learn(ids, worker.app.conf.result_expires)
                    self._live = True
                    backoff.reset()
            except Exception as exc:
                worker.log.info(
                    "revocations feed from the result backend broke (%s); looking up each batch "
                    "until it is back",
                    describe(exc),
                )
            self._live = False
            await asyncio.sleep(backoff.next())

    def hear(self, ids: Sequence[str]) -> None:
        """Remember ids revoked by remote control: fetched later, they are not run."""
        now = time.time()
        for task_id in ids:
            self._heard.pop(task_id, None)
            self._heard[task_id] = now
        if len(self._heard) > self.heard_max or next(iter(self._heard.values())) < now - self.heard_for:
            kept = [(t, at) for t, at in self._heard.items() if at >= now - self.heard_for]
            self._heard = dict(kept[-self.heard_max :])

    def heard(self) -> dict[str, float]:
        """The ids revoked by remote control and remembered, with when (unix time)."""
        return dict(self._heard)

    def hear_stamps(self, stamps: dict[str, Any]) -> None:
        """Remember stamps revoked by remote control (``revoke_by_stamped_headers``): a task stamped with
        one of these values is not run from now on. Kept in memory only, as Celery keeps them."""
        for name, values in stamps.items():
            known = self._stamps.setdefault(name, [])
            known.extend(v for v in (values if isinstance(values, list) else [values]) if v not in known)

    def stamped_revoked(self, item: WorkItem) -> dict[str, Any] | None:
        """The revoked stamps ``item`` carries, or None."""
        if not self._stamps:
            return None
        stamps = _stamps_of(item)
        hits = {}
        for name, revoked in self._stamps.items():
            if name in stamps:
                values = stamps[name] if isinstance(stamps[name], list) else [stamps[name]]
                if any(v in revoked for v in values):
                    hits[name] = stamps[name]
        return hits or None

    def live(self, worker: Worker, hook: str) -> bool:
        """``before_run`` only while stamps are revoked (``hear_stamps``; the command rehooks)."""
        return hook != "before_run" or bool(self._stamps)

    async def before_run(self, worker: Worker, item: WorkItem) -> None:
        """Skip a task whose stamps were revoked (checked when it is about to run, as Celery checks)."""
        hits = self.stamped_revoked(item)
        if hits is not None:
            error = TaskRevokedError("revoked")
            await worker.writer.store_state(item, states.REVOKED, error)
            raise Skip(Fate.ACK, f"revoked by header: {hits}", abandon=(states.REVOKED, error))

    def _learn(self, ids: Sequence[str], expires: float | None) -> None:
        now = time.monotonic()
        for task_id in ids:
            self._revoked[task_id] = now
        if expires and len(self._revoked) > 2 * self._pruned_at + 1024:
            # Past result_expires the REVOKED record is gone from the backend too.
            self._revoked = {t: at for t, at in self._revoked.items() if now - at < expires}
            self._pruned_at = len(self._revoked)

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """Settle the revoked items of a batch as acked, not run, telling what waits on them."""
        if not items:
            return
        revoked = [item for item in items if item.call.id in self._heard]
        items = [item for item in items if item.call.id not in self._heard]
        if items and worker.backend is not None:
            if self._live:
                revoked += [item for item in items if item.call.id in self._revoked]
            else:
                found = await worker.backend.get_many([item.call.id for item in items])
                revoked += [item for item in items if _revoked(found.get(item.call.id))]
        for item in revoked:
            item.settle(Fate.ACK, "revoked", abandon=(states.REVOKED, TaskRevokedError("revoked")))


def _stamps_of(item: WorkItem) -> dict[str, Any]:
    """The stamps a task's message carries (Celery's ``stamps`` header, by ``stamped_headers``)."""
    headers = item.call.headers
    names, stamps = headers.get("stamped_headers"), headers.get("stamps")
    if not isinstance(names, list) or not isinstance(stamps, dict):
        return {}
    return {name: stamps[name] for name in names if name in stamps}


def _revoked(meta: ResultMeta | None) -> bool:
    return meta is not None and meta.status == states.REVOKED


class Eta(Middleware):
    """Tasks due later than ``worker_eta_horizon`` go back to the broker's delayed store (D3).

    Only tasks due within the horizon wait here, so a worker never hoards delayed work and a task due
    next week survives every restart in the broker.
    """

    async def before_start(self, worker: Worker, item: WorkItem) -> None:
        """Hand a task due beyond the horizon back to the broker's delayed store and skip it; wait out the
        rest of a nearer one."""
        eta = item.call.eta
        if eta is None:
            return
        delay = eta.timestamp() - time.time()
        if delay > worker.app.conf.worker_eta_horizon:
            message = item.delivery.message
            assert message is not None
            await worker.app.publish(item.delivery.queue, message, not_before=eta.timestamp())
            raise Skip(Fate.ACK, f"due at {eta.isoformat()}: handed to the broker's delayed store")
        if delay > 0:
            await asyncio.sleep(delay)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(rate: str | float | int | None) -> float | None:
    """Tasks per second from Celery's ``"10/m"`` syntax (``s``, ``m``, ``h``; a bare number is per second).

    Zero or None means no limit.
    """
    if rate is None:
        return None
    if isinstance(rate, (int, float)):
        return float(rate) or None
    match = _RATE.match(rate)
    if not match:
        raise ConfigurationError(f"rate_limit {rate!r} is not like '10/s', '10/m' or '10/h'")
    per = {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) / per or None


class _Bucket:
    """A token bucket holding at most one second's worth of tokens (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class RateLimits(Middleware):
    """Per-worker rate limits by task (``rate_limit="10/m"``), as in Celery."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket | None] = {}

    def forget(self, name: str) -> None:
        """Read the task's rate limit again at its next run (it was changed by remote control)."""
        self._buckets.pop(name, None)

    async def before_start(self, worker: Worker, item: WorkItem) -> None:
        """Wait for the task's bucket to hold a token (no wait without a rate limit)."""
        conf = worker.app.conf
        if conf.worker_disable_rate_limits:
            return
        name = item.task.name
        if name not in self._buckets:
            limit = item.task.rate_limit if item.task.rate_limit is not None else conf.task_default_rate_limit
            rate = parse_rate(limit)
            self._buckets[name] = _Bucket(rate) if rate else None
        bucket = self._buckets[name]
        if bucket is not None:
            await bucket.take()

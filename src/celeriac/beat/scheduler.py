"""The beat: publishes each periodic task's ticks, with one leader among any number of beats.

Each pass (``Beat.tick``) takes or renews the leader lease in the schedule store; a beat without it
waits and asks again. The leader reads every entry's state and, per entry:

1. finishes a tick that was claimed but not recorded as done (a leader died between claim and publish,
   or the broker refused the publish): it is published again, under the same task id;
2. finds the ticks due since the last one, and for each it will run (the newest one, or with
   ``catch_up`` the newest ``catch_up`` ones), claims it in the store (compare-and-set of the entry's
   tick, fenced by the lease token), publishes it with the tick's deterministic id, and records it done.

So a tick is never lost to a crash, and is sent twice only when a leader dies after the broker took the
message and before the store recorded it: both copies carry the same task id. See docs/periodic-tasks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from celeriac import states
from celeriac._outages import is_outage
from celeriac.beat.entries import Entry, entries_of, tick_id, to_datetime, to_tick
from celeriac.beat.store import EntryState, ScheduleStore, store_for
from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["Beat"]

log = logging.getLogger("celeriac.beat")

#: How many ticks of one entry a pass looks through to find the missed ones; beyond it (a 1 s schedule
#: after a day down), the beat runs once now instead of computing every missed tick.
SCAN_LIMIT = 100_000


class Beat:
    """A beat process's scheduler (``celeriac beat``, or inside ``celeriac worker -B``).

    Args:
        app: the app whose ``beat_schedule`` (and ``add_periodic_task`` entries) to run.
        store: where the lease and state live (default: ``store_for(app)``).
        max_interval: the longest wait between passes (``beat_max_loop_interval``).
        lease_seconds: the leader lease (``beat_lease_seconds``); a dead leader is replaced within it
            plus a third of it, the interval at which beats renew or ask.
        clock: the wall clock, in seconds since the epoch (tests pass a fake one).
    """

    def __init__(
        self,
        app: Celeriac,
        *,
        store: ScheduleStore | None = None,
        max_interval: float | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        conf = app.conf
        app.finalize()
        self.entries: list[Entry] = entries_of(conf.beat_schedule)
        if any(e.skip_if_running for e in self.entries) and app.backend_url.startswith("disabled"):
            names = ", ".join(repr(e.name) for e in self.entries if e.skip_if_running)
            raise ConfigurationError(
                f"beat_schedule entries {names} use skip_if_running, which reads the previous tick's state "
                "in the result backend: configure result_backend"
            )
        self.store = store if store is not None else store_for(app)
        self.max_interval = float(max_interval or conf.beat_max_loop_interval)
        self.lease_seconds = float(lease_seconds or conf.beat_lease_seconds)
        if self.lease_seconds <= 0 or self.max_interval <= 0:
            raise ConfigurationError(
                "beat_lease_seconds and beat_max_loop_interval (--max-interval) must be positive, got "
                f"{self.lease_seconds:g} and {self.max_interval:g}"
            )
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: int | None = None
        self._standby_logged = False

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals (a leader) or attempts (the others)."""
        return self.lease_seconds / 3

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop`` is set; then give the lease up, so another beat takes over."""
        names = ", ".join(e.name for e in self.entries) or "none"
        log.info("beat: starting (holder %s); entries: %s", self.holder, names)
        try:
            while not stop.is_set():
                try:
                    wait = await self.tick()
                except Exception as exc:  # a store outage: the lease runs out, a standby beat takes over
                    log.warning("beat: pass failed (%s: %s); retrying", type(exc).__name__, exc)
                    if self.token is not None:
                        log.warning("beat: no longer sure to lead; another beat may take over")
                    self.token = None
                    wait = self.renew_every
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            if self.token is not None:
                try:
                    await self.store.release(self.holder, self.token)
                    log.info("beat: stopped; leadership released")
                except Exception as exc:
                    log.warning("beat: could not release the lease (%s); it runs out by itself", exc)
            await self.store.close()

    async def tick(self) -> float:
        """One pass: lead (or not), publish what is due; returns the seconds to wait before the next."""
        token = await self.store.acquire(self.holder, self.lease_seconds)
        if token != self.token:
            if token is not None:
                log.info("beat: leader now (token %d); sending periodic tasks", token)
            elif self.token is not None:
                log.warning("beat: lost the leadership to another beat; standing by")
            self._standby_logged = False
        if token is None and not self._standby_logged:
            log.info("beat: another beat leads; standing by")
            self._standby_logged = True
        self.token = token
        if token is None:
            return self.renew_every
        found = await self.store.states([e.name for e in self.entries])
        wait = min(self.max_interval, self.renew_every)
        for entry in self.entries:
            try:
                wait = min(wait, await self._serve(entry, found.get(entry.name), token))
            except Exception as exc:
                if is_outage(exc):
                    raise
                # One entry's broken schedule (or task options) must not hold the others back.
                log.exception("beat: %s: cannot serve this entry: %s", entry.name, exc)
        return max(0.0, wait)

    async def _serve(self, entry: Entry, state: EntryState | None, token: int) -> float:
        """Publish what ``entry`` has due; the seconds until its next tick."""
        tz = self.app.timezone
        now = to_tick(datetime.fromtimestamp(self.clock(), UTC))
        store = self.store
        if state is None:
            # A new entry counts its ticks from now: the first one is the schedule's next (Celery's too).
            if not await store.claim(entry.name, None, now, token, done=True):
                return 0.0
            return self._until(entry, now, now, tz)
        if not state.done:
            # Published again under the same id; then the next pass reads the state it left.
            return 0.0 if await self._fire(entry, state.tick, state.sent, token) else self.renew_every
        due, skipped = self._due(entry, state.tick, now, tz)
        if skipped:
            log.warning(
                "beat: %s: %d missed tick(s) not run (%s); running %d",
                entry.name,
                skipped,
                f"catch_up={entry.catch_up}" if entry.catch_up else "runs once on recovery; catch_up",
                len(due),
            )
        last, sent = state.tick, state.sent
        for tick in due:
            if not await store.claim(entry.name, last, tick, token):
                log.warning("beat: %s: tick %s was claimed elsewhere", entry.name, to_datetime(tick))
                return 0.0
            if not await self._fire(entry, tick, sent, token):
                return self.renew_every
            last, sent = tick, tick
        return self._until(entry, last, now, tz)

    def _until(self, entry: Entry, last: int, now: int, tz: tzinfo) -> float:
        following = to_tick(entry.schedule.next_after(to_datetime(last), tz))
        return max(0.0, (following - now) / 1e6)

    def _due(self, entry: Entry, last: int, now: int, tz: tzinfo) -> tuple[list[int], int]:
        """The ticks to run now (oldest first), and how many missed ticks are passed over."""
        keep = max(1, entry.catch_up)
        due: deque[int] = deque(maxlen=keep)
        seen = 0
        moment = to_datetime(last)
        while seen < SCAN_LIMIT:
            moment = entry.schedule.next_after(moment, tz)
            tick = to_tick(moment)
            if tick <= last:
                raise ConfigurationError(f"beat_schedule entry {entry.name!r}: its schedule did not move on")
            if tick > now:
                return list(due), seen - len(due)
            due.append(tick)
            seen += 1
        return [now], seen  # too many to look through: run once, now

    async def _fire(self, entry: Entry, tick: int, previous: int | None, token: int) -> bool:
        """Publish the claimed ``tick`` (or skip it, ``skip_if_running``) and record it done; False if the
        publish failed (the tick stays claimed, and the next pass tries again)."""
        task_id = tick_id(entry.name, tick)
        if entry.skip_if_running and previous is not None and await self._running(previous, entry, tick):
            log.info(
                "beat: %s: tick %s skipped: the previous run %s has not finished",
                entry.name,
                to_datetime(tick).isoformat(),
                tick_id(entry.name, previous),
            )
            await self.store.finish(entry.name, tick, False, token)
            return True
        try:
            # Celery's beat marks what it sends with this header; tools that tell periodic runs apart read it.
            headers = {**(entry.options.get("headers") or {}), "celery_beat_task": True}
            options = {**entry.options, "headers": headers, "task_id": task_id}
            await self.app.asend_task(
                entry.task, entry.args, entry.kwargs, task=self.app.tasks.get(entry.task), **options
            )
        except Exception as exc:
            log.error(
                "beat: %s: could not send %s (%s: %s); will retry",
                entry.name,
                entry.task,
                type(exc).__name__,
                exc,
            )
            return False
        log.info(
            "beat: sent %s: task %s id %s tick %s",
            entry.name,
            entry.task,
            task_id,
            to_datetime(tick).isoformat(),
        )
        await self.store.finish(entry.name, tick, True, token)
        return True

    async def _running(self, previous: int, entry: Entry, tick: int) -> bool:
        meta = await self.app.backend().get(tick_id(entry.name, previous))
        if meta.status in states.READY_STATES:
            return False
        # A PENDING record older than result_expires is one that expired, not one still waiting.
        expires = self.app.conf.result_expires
        return meta.status != states.PENDING or not expires or (tick - previous) / 1e6 < float(expires)

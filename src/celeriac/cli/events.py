"""``celeriac events``: follow a fleet's events, as a live view of workers and tasks or, with ``--dump``,
one JSON object per event per line (workers of Celery and of celeriac alike)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from celeriac._outages import safe_url
from celeriac.events.receiver import receive
from celeriac.events.state import Fleet
from celeriac.exceptions import CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["render", "watch"]

_CLEAR = "\x1b[H\x1b[2J"


def render(fleet: Fleet, now: float | None = None, tasks: int = 20) -> str:
    """The live view: one line per worker, then the ``tasks`` most recent tasks, newest first."""
    now = time.time() if now is None else now
    lines = [f"celeriac events: {len(fleet.workers)} worker(s), {fleet.events} event(s)", ""]
    lines.append(f"{'WORKER':<32} {'STATUS':<8} {'ACTIVE':>6} {'PROCESSED':>9}  LOAD")
    for worker in sorted(fleet.workers.values(), key=lambda w: w.hostname):
        status = "online" if worker.alive(now) else "offline"
        load = " ".join(f"{x:.2f}" for x in worker.loadavg)
        lines.append(f"{worker.hostname:<32} {status:<8} {worker.active:>6} {worker.processed:>9}  {load}")
    lines += ["", f"{'TASK':<36} {'NAME':<28} {'STATE':<9} {'RUNTIME':>8}  WORKER"]
    for task in list(reversed(fleet.tasks.values()))[:tasks]:
        runtime = f"{task.runtime:.3f}s" if isinstance(task.runtime, (int, float)) else ""
        name = (task.name or "?")[:28]
        lines.append(f"{task.uuid:<36} {name:<28} {task.state:<9} {runtime:>8}  {task.worker or ''}")
    return "\n".join(lines) + "\n"


def _line(event: dict[str, Any]) -> str:
    return json.dumps(event, default=repr, sort_keys=True)


async def _follow(app: Celeriac, dump: bool, freq: float, out: TextIO) -> None:
    broker = app.broker()
    fleet = Fleet()
    try:
        async with receive(broker) as events:
            print(
                f"celeriac events: listening on {safe_url(app.broker_url)} (Ctrl-C to stop)", file=sys.stderr
            )
            if dump:
                async for event in events:
                    print(_line(event), file=out, flush=True)
                return

            async def read() -> None:
                async for event in events:
                    fleet.apply(event)

            reader = asyncio.create_task(read())
            try:
                while not reader.done():
                    out.write(_CLEAR + render(fleet))
                    out.flush()
                    await asyncio.wait({reader}, timeout=freq)
                reader.result()  # the error that broke the subscription, if one did
            finally:
                reader.cancel()
    finally:
        await app.aclose()


def watch(app: Celeriac, *, dump: bool = False, freq: float = 1.0, out: TextIO | None = None) -> int:
    """Follow the events on ``app``'s broker until interrupted (or the subscription breaks).

    Raises:
        CeleriacError: the broker cannot broadcast, so there are no events to follow.
    """
    try:
        asyncio.run(_follow(app, dump, freq, out or sys.stdout))
    except NotImplementedError as exc:
        raise CeleriacError(f"no events to follow: {exc}") from None
    return 0

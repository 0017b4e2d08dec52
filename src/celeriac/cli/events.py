"""``celeriac events``: follow a fleet's events, as a live view of workers and tasks or, with ``--dump``,
one line per event (workers of Celery and of celeriac alike): a JSON object, or with ``--format text``
a line to read (``node [time] type uuid=... name=... field=value ...``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from celeriac._outages import safe_url
from celeriac.events.receiver import receive
from celeriac.events.state import Fleet
from celeriac.exceptions import CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["TextLines", "render", "watch"]

_CLEAR = "\x1b[H\x1b[2J"
#: Fields a text line leaves out: shown otherwise (node, time, type) or only of use to programs.
_UNSHOWN = {"type", "hostname", "timestamp", "uuid", "name", "utcoffset", "pid", "clock", "local_received"}


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


class TextLines:
    """Events as lines to read: ``node [UTC time to the ms] type uuid=... name=... key=value ...``.

    Only ``task-received`` (and ``task-sent``) carry the task's name: the name is remembered by id (the
    latest 4096 ids) so that the task's later events name it too.
    """

    def __init__(self, remembered: int = 4096) -> None:
        self._names: dict[str, str] = {}
        self._remembered = remembered

    def line(self, event: dict[str, Any]) -> str:
        """The line for ``event``."""
        stamp = event.get("timestamp")
        when = (
            datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            if isinstance(stamp, (int, float))
            else "?"
        )
        parts = [f"{event.get('hostname', '?')} [{when}] {event.get('type', '?')}"]
        uuid = event.get("uuid")
        if uuid is not None:
            name = event.get("name") or self._names.get(uuid)
            if event.get("name"):
                self._names[uuid] = event["name"]
                if len(self._names) > self._remembered:
                    del self._names[next(iter(self._names))]
            parts.append(f"uuid={uuid}")
            if name:
                parts.append(f"name={name}")
        parts += [f"{key}={_value(event[key])}" for key in sorted(event) if key not in _UNSHOWN]
        return " ".join(parts)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=repr)


async def _follow(app: Celeriac, dump: bool, freq: float, out: TextIO, text: bool = False) -> None:
    broker = app.broker()
    fleet = Fleet()
    try:
        async with receive(broker) as events:
            print(
                f"celeriac events: listening on {safe_url(app.broker_url)} (Ctrl-C to stop)", file=sys.stderr
            )
            if dump:
                lines = TextLines()
                async for event in events:
                    print(lines.line(event) if text else _line(event), file=out, flush=True)
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


def watch(
    app: Celeriac, *, dump: bool = False, freq: float = 1.0, out: TextIO | None = None, text: bool = False
) -> int:
    """Follow the events on ``app``'s broker until interrupted (or the subscription breaks); with ``dump``,
    one line per event: JSON, or with ``text`` a line to read.

    Raises:
        CeleriacError: the broker cannot broadcast, so there are no events to follow.
    """
    try:
        asyncio.run(_follow(app, dump, freq, out or sys.stdout, text))
    except NotImplementedError as exc:
        raise CeleriacError(f"no events to follow: {exc}") from None
    return 0

"""A worker's events: ``worker-online``, a ``worker-heartbeat`` every ``heartbeat_interval``,
``worker-offline``, and, while task events are on, the ``task-*`` events of the ``Events`` middleware.

As in Celery, worker events go out whenever the broker can broadcast (Flower and ``celery events`` tell
live workers from dead ones by them); task events only with ``-E`` (``--task-events``) or
``worker_send_task_events``, or once switched on at run time with ``enable()`` (what remote control's
``enable_events`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _text
from typing import TYPE_CHECKING, Any

from celeriac import __version__
from celeriac.events.dispatcher import EventDispatcher, quote

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker
    from celeriac.protocol.message import TaskCall

#: Seconds between two heartbeats unless told otherwise (Celery's).
HEARTBEAT_INTERVAL = 2.0
#: What a heartbeat says sent it (Celery's workers say ``py-celery``).
SW_IDENT = "py-celeriac"


class WorkerEvents:
    """The events of one worker (node ``hostname``).

    ``task_events`` says whether task events go out from the start; ``enable()`` and ``disable()``
    switch them at run time, and call ``on_switch`` when they did switch (the worker then asks its
    middleware again which hooks are live). ``heartbeat_interval`` of 0 or None sends no heartbeats
    (``online`` and ``offline`` still go).
    """

    def __init__(
        self,
        hostname: str,
        *,
        task_events: bool = False,
        heartbeat_interval: float | None = HEARTBEAT_INTERVAL,
        on_switch: Callable[[], None] | None = None,
    ) -> None:
        self.hostname = hostname
        self.heartbeat_interval = heartbeat_interval or 0.0
        self.dispatcher: EventDispatcher | None = None
        self._task_events = task_events
        self._on_switch = on_switch
        self._active: Callable[[], int] = lambda: 0
        self._processed: Callable[[], int] = lambda: 0
        self._heart: asyncio.Task[None] | None = None
        self._sw = {"sw_ident": SW_IDENT, "sw_ver": __version__, "sw_sys": platform.system()}

    # -- switching task events (remote control's enable_events / disable_events) --------------------
    @property
    def enabled(self) -> bool:
        """Whether task events are sent now."""
        return self._task_events

    def enable(self) -> bool:
        """Send task events from now on; False if they were on already. Call on the worker's loop."""
        was, self._task_events = self._task_events, True
        if not was and self._on_switch is not None:
            self._on_switch()
        return not was

    def disable(self) -> bool:
        """Send no more task events; False if they were off already. Call on the worker's loop."""
        was, self._task_events = self._task_events, False
        if was and self._on_switch is not None:
            self._on_switch()
        return was

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(
        self, broker: Broker, active: Callable[[], int], processed: Callable[[], int] = lambda: 0
    ) -> None:
        """Say ``worker-online`` on ``broker`` and start the heartbeat; ``active`` counts running tasks,
        ``processed`` the tasks started so far (heartbeats carry both, as Celery's do)."""
        self._active = active
        self._processed = processed
        self.dispatcher = EventDispatcher(broker, self.hostname)
        self.dispatcher.send("worker-online", **self._vitals())
        if self.heartbeat_interval > 0:
            self._heart = asyncio.create_task(self._beat(), name="celeriac-heartbeat")

    async def stop(self) -> None:
        """Stop the heartbeat, say ``worker-offline`` and send what is still queued."""
        heart, self._heart = self._heart, None
        if heart is not None:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
        dispatcher = self.dispatcher
        if dispatcher is not None:
            dispatcher.send("worker-offline", **self._vitals())
            await dispatcher.aclose()

    def heartbeat(self, **fields: Any) -> None:
        """Send one ``worker-heartbeat`` now (what remote control's ``heartbeat`` command asks for)."""
        if self.dispatcher is not None:
            self.dispatcher.send("worker-heartbeat", **{**self._vitals(), **fields})

    def task(self, event_type: str, **fields: Any) -> None:
        """Send a task event (batched), if task events are on and the worker is running."""
        dispatcher = self.dispatcher
        if self._task_events and dispatcher is not None:
            dispatcher.send_batched(event_type, **fields)

    # The three events every task sends are written as JSON by hand: a third of the cost of a dict
    # through json.dumps, and what -E costs a busy worker is mostly theirs.
    def received(self, call: TaskCall, args: str, kwargs: str) -> None:
        """``task-received`` for ``call``, with its arguments' reprs (if task events are on)."""
        dispatcher = self.dispatcher
        if self._task_events and dispatcher is not None:
            eta, expires = call.eta, call.expires
            dispatcher.send_json(
                f'{dispatcher.head("task-received")},"uuid":{_text(call.id)},"name":{_text(call.name)},'
                f'"args":{_text(args)},"kwargs":{_text(kwargs)},"root_id":{quote(call.root_id)},'
                f'"parent_id":{quote(call.parent_id)},"retries":{int(call.retries)},'
                f'"eta":{quote(eta.isoformat() if eta else None)},'
                f'"expires":{quote(expires.isoformat() if expires else None)}}}'
            )

    def started(self, uuid: str) -> None:
        """``task-started`` (if task events are on)."""
        dispatcher = self.dispatcher
        if self._task_events and dispatcher is not None:
            dispatcher.send_json(f'{dispatcher.head("task-started")},"uuid":{_text(uuid)}}}')

    def succeeded(self, uuid: str, result: str, runtime: float) -> None:
        """``task-succeeded`` with the result's repr and the runtime in seconds (if task events are on)."""
        dispatcher = self.dispatcher
        if self._task_events and dispatcher is not None:
            dispatcher.send_json(
                f'{dispatcher.head("task-succeeded")},"uuid":{_text(uuid)},"result":{_text(result)},'
                f'"runtime":{float(runtime)!r}}}'
            )

    async def _beat(self) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        while not dispatcher.dead:
            await asyncio.sleep(self.heartbeat_interval)
            self.heartbeat()

    def _vitals(self) -> dict[str, Any]:
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:  # not every platform knows its load
            load = [0.0, 0.0, 0.0]
        return {
            "freq": self.heartbeat_interval or HEARTBEAT_INTERVAL,
            "active": self._active(),
            "processed": self._processed(),
            "loadavg": load,
            **self._sw,
        }

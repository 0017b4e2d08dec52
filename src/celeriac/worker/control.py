"""The worker's remote control: it listens on ``celery.pidbox`` and answers known commands (D9).

Started with the worker (unless ``worker_enable_remote_control`` is off) and stopped with it. A command
runs when it is for this node (``destination``, or ``pattern``) and its sender still waits (``expires``
is not past); only commands of the app's registry (``app.control.commands``) or the built-in ones run,
and an unknown one gets Celery's error reply. A message that cannot be read is logged and skipped: one
bad sender never silences the worker. A lost subscription is made again, with backoff, while the worker
serves. On a broker without broadcasts, the worker serves without remote control and says so once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from celeriac.control.mailbox import COMMANDS, Command, read_command, reply_message
from celeriac.exceptions import DecodeError
from celeriac.worker._backoff import Backoff, describe, sleep_unless
from celeriac.worker._commands import NO_REPLY, control_commands
from celeriac.worker._inspect import inspect_commands

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.control.registry import Handler
    from celeriac.protocol.message import Message
    from celeriac.worker.worker import Worker

__all__ = ["ControlState", "RemoteControl", "find_command", "known_commands"]

log = logging.getLogger("celeriac.worker.control")


def find_command(app: Celeriac, name: str) -> Handler | None:
    """The command ``name`` the app's workers run: the app's own first, then the built-in ones."""
    return app.control.commands.get(name) or inspect_commands.get(name) or control_commands.get(name)


def known_commands(app: Celeriac) -> list[Handler]:
    """Every command the app's workers run, the app's own included, by name."""
    found = {h.name: h for h in (*control_commands, *inspect_commands, *app.control.commands)}
    return [found[name] for name in sorted(found)]


class ControlState:
    """What a command handler is given: the worker, its app and node name, its logical clock, and when
    remote control started (for ``uptime``)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app: Celeriac = worker.app
        self.hostname = worker.hostname
        self.clock = 0
        self.started = time.time()

    def tick(self, seen: int = 0) -> int:
        """Advance the Lamport clock past ``seen`` (a sender's clock) and return it."""
        self.clock = max(self.clock, seen) + 1
        return self.clock


class RemoteControl:
    """Serves remote-control commands for one worker on its loop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.state = ControlState(worker)
        #: Set while the subscription is live (tests wait for it before they send).
        self.listening = asyncio.Event()
        self._stopped = asyncio.Event()
        self._server: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Subscribe in the background; the worker does not wait for it."""
        self._server = asyncio.create_task(self._serve(), name="celeriac-remote-control")

    async def stop(self) -> None:
        """Stop listening and cancel commands still being handled."""
        self._stopped.set()
        tasks = [t for t in (self._server, *self._handling) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self) -> None:
        worker = self.worker
        assert worker.broker is not None
        backoff = Backoff(base=0.5, cap=30.0)
        while not self._stopped.is_set():
            try:
                async with worker.broker.subscribe(COMMANDS) as incoming:
                    self.listening.set()
                    if backoff.failures:
                        log.info("%s: remote control listens again", worker.hostname)
                    backoff.reset()
                    async for message in incoming:
                        self._spawn(self.handle(message))
            except NotImplementedError as exc:
                log.warning("%s: no remote control: %s", worker.hostname, exc)
                return
            except Exception as exc:
                self.listening.clear()
                delay = backoff.next()
                log.warning(
                    "%s: remote control lost its subscription (%s); subscribing again in %.2fs",
                    worker.hostname,
                    describe(exc),
                    delay,
                )
                await sleep_unless(self._stopped, delay)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def handle(self, message: Message) -> None:
        """Run one broadcast command, if it is for this node and still awaited, and reply if asked."""
        state = self.state
        accept = ["json", *state.app.conf.accept_content]
        try:
            command = read_command(message, accept, state.app.conf.task_message_max_bytes)
        except DecodeError as exc:
            log.warning("%s: ignored an unreadable remote-control message: %s", state.hostname, exc)
            return
        state.tick(command.clock)
        if not command.is_for(state.hostname):
            return
        if command.expired(time.time()):
            log.info("%s: dropped remote-control command %r: expired", state.hostname, command.method)
            return
        value = await self.run(command)
        if value is NO_REPLY or not command.wants_reply:
            return
        await self._reply(command, value)

    def lookup(self, name: str) -> Handler | None:
        """The command ``name`` this worker may run: the app's own first, then the built-in ones."""
        return find_command(self.state.app, name)

    async def run(self, command: Command) -> Any:
        """The value to reply for ``command``; ``{"error": ...}`` as Celery's when it is unknown or fails."""
        handler = self.lookup(command.method)
        if handler is None:
            log.warning("%s: refused unknown remote-control command %r", self.state.hostname, command.method)
            return {"error": repr(KeyError(command.method))}
        log.debug("%s: remote-control command %s(%r)", self.state.hostname, command.method, command.arguments)
        try:
            value = handler.fn(self.state, **command.arguments)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            log.exception("%s: remote-control command %r failed", self.state.hostname, command.method)
            return {"error": repr(exc)}
        return value

    async def _reply(self, command: Command, value: Any) -> None:
        assert command.ticket is not None and command.reply_key is not None
        worker = self.worker
        assert worker.broker is not None
        clock = self.state.tick()
        try:
            message = reply_message(self.state.hostname, value, ticket=command.ticket, clock=clock)
        except TypeError as exc:
            message = reply_message(
                self.state.hostname, {"error": repr(exc)}, ticket=command.ticket, clock=clock
            )
        try:
            await worker.broker.broadcast(command.reply_exchange, message, routing_key=command.reply_key)
        except Exception as exc:
            log.warning(
                "%s: could not reply to remote-control command %r: %s",
                self.state.hostname,
                command.method,
                describe(exc),
            )

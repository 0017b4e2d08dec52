"""``app.control``: send remote-control commands to the workers and collect their replies.

Replies are gathered as Celery gathers them: until ``limit`` replies came (by default one per named
destination), or until none came for ``timeout`` seconds. Every method has an ``a``-prefixed twin for
code inside an event loop where it matters (``abroadcast``, ``arevoke``, ``Inspect.arequest``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac._outages import outages_as_ours
from celeriac.control.mailbox import COMMANDS, REPLIES, command_message, read_reply
from celeriac.control.registry import Registry
from celeriac.exceptions import DecodeError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["Control", "Inspect", "flatten"]

F = TypeVar("F", bound=Callable[..., Any])
Destination = str | Sequence[str] | None

log = logging.getLogger("celeriac.control")


def flatten(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``[{node: value}, ...]`` as one ``{node: value}`` mapping."""
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    return merged


def _nodes(destination: Destination) -> list[str] | None:
    if destination is None:
        return None
    return [destination] if isinstance(destination, str) else list(destination)


class Control:
    """Remote control of an app's workers (``app.control``), under Celery's names."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        #: This app's own commands; its workers answer them besides the built-in ones.
        self.commands = Registry()

    def inspect_command(
        self, name: str | None = None, *, args: Sequence[tuple[str, type]] = (), alias: str | None = None
    ) -> Callable[[F], F]:
        """Register a read-only command that this app's workers answer: ``fn(state, **arguments)``."""
        return self.commands.inspect_command(name, args=args, alias=alias)

    def control_command(
        self, name: str | None = None, *, args: Sequence[tuple[str, type]] = (), alias: str | None = None
    ) -> Callable[[F], F]:
        """Register a command that changes this app's workers: ``fn(state, **arguments)``."""
        return self.commands.control_command(name, args=args, alias=alias)

    def inspect(
        self,
        destination: Destination = None,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """Ask workers about themselves: ``app.control.inspect().active()`` -> ``{node: [...]}``."""
        return Inspect(self, destination, timeout, limit, pattern, matcher)

    # -- sending ------------------------------------------------------------------------------------
    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> list[dict[str, Any]] | None:
        """Send ``command`` to the workers (all, or those in ``destination`` or matching ``pattern``).

        With ``reply``, return the replies, ``[{node: value}, ...]``, collected until ``limit`` came or
        none came for ``timeout`` seconds; without, return None at once.
        """
        return self.app.run(
            self.abroadcast(command, arguments, destination, reply, timeout, limit, pattern, matcher)
        )

    async def abroadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> list[dict[str, Any]] | None:
        """``broadcast`` for code running in an event loop."""
        where, check = self.app.broker_url, "is the broker up and reachable? (broker_url)"
        async with outages_as_ours(f"remote control command {command!r}", where, check):
            return await self._broadcast(
                command, arguments, destination, reply, timeout, limit, pattern, matcher
            )

    async def _broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None,
        destination: Destination,
        reply: bool,
        timeout: float,
        limit: int | None,
        pattern: str | None,
        matcher: str | None,
    ) -> list[dict[str, Any]] | None:
        nodes = _nodes(destination)
        broker = self.app.broker()
        if not reply:
            message = command_message(
                command, arguments, destination=nodes, pattern=pattern, matcher=matcher, clock=0
            )
            await broker.broadcast(COMMANDS, message)
            return None
        if limit is None and nodes:
            limit = len(nodes)
        ticket = str(uuid.uuid4())
        key = uuid.uuid4().hex  # one reply route per call: concurrent calls never take each other's
        message = command_message(
            command,
            arguments,
            destination=nodes,
            pattern=pattern,
            matcher=matcher,
            ticket=ticket,
            reply_key=key,
            expires=time.time() + timeout,
        )
        accept = ["json", *self.app.conf.accept_content]
        replies: list[dict[str, Any]] = []
        async with broker.subscribe(REPLIES, key) as incoming:
            await broker.broadcast(COMMANDS, message)
            while limit is None or len(replies) < limit:
                try:
                    async with asyncio.timeout(timeout):
                        answer = await anext(incoming)
                except TimeoutError:
                    break
                try:
                    got, body = read_reply(answer, accept, self.app.conf.task_message_max_bytes)
                except DecodeError as exc:
                    log.warning("ignored an unreadable remote-control reply: %s", exc)
                    continue
                if got == ticket:
                    replies.append(body)
        return replies

    def _send(
        self, command: str, arguments: dict[str, Any], destination: Destination, reply: bool, timeout: float
    ) -> list[dict[str, Any]] | None:
        return self.broadcast(command, arguments, destination, reply, timeout)

    # -- Celery's commands --------------------------------------------------------------------------
    def ping(self, destination: Destination = None, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Every answering worker's ``{node: {"ok": "pong"}}``."""
        return self.broadcast("ping", {}, destination, reply=True, timeout=timeout) or []

    def revoke(
        self,
        task_id: str | Collection[str],
        destination: Destination = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """Revoke tasks: recorded REVOKED in the result backend (so workers started later skip them
        too), and broadcast so running workers drop them at once, queued, waiting or due later. With
        ``terminate``, the process running one is sent ``signal`` (processes pool only)."""
        return self.app.run(self.arevoke(task_id, destination, terminate, signal, reply, timeout))

    async def arevoke(
        self,
        task_id: str | Collection[str],
        destination: Destination = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """``revoke`` for code running in an event loop."""
        from celeriac.result import revoke

        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        recorded = not self.app.backend_url.startswith("disabled")
        if recorded:
            await revoke(self.app, ids)
        # ``recorded`` spares every worker writing the record again; Celery's workers ignore it.
        arguments = {"task_id": ids, "terminate": terminate, "signal": signal, "recorded": recorded}
        try:
            return await self.abroadcast("revoke", arguments, destination, reply, timeout)
        except NotImplementedError:
            if terminate:
                raise
            return None  # a broker without broadcasts: the record alone revokes

    def revoke_by_stamped_headers(
        self,
        headers: dict[str, Any],
        destination: Destination = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """Revoke every task stamped with one of these values (``{stamp: value or [values]}``): workers
        that hear it do not run such a task from then on, and with ``terminate`` stop running ones. Kept
        in the workers' memory only, as Celery keeps it: a worker started later does not know it."""
        arguments = {"headers": headers, "terminate": terminate, "signal": signal}
        return self.app.run(
            self.abroadcast("revoke_by_stamped_headers", arguments, destination, reply, timeout)
        )

    def terminate(
        self,
        task_id: str | Collection[str],
        destination: Destination = None,
        signal: str = "SIGTERM",
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """``revoke(task_id, terminate=True)``."""
        return self.revoke(task_id, destination, True, signal, reply, timeout)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """Set a task's rate limit (``"10/m"``; 0 or None: none) on the workers."""
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self._send("rate_limit", arguments, destination, reply, timeout)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """Set a task's soft and hard time limits (seconds) on the workers."""
        arguments = {"task_name": task_name, "soft": soft, "hard": hard}
        return self._send("time_limit", arguments, destination, reply, timeout)

    def shutdown(self, destination: Destination = None) -> None:
        """Ask the workers for a warm shutdown (they do not reply, as Celery's do not)."""
        self.broadcast("shutdown", {}, destination)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]] | None:
        """Have the workers consume from ``queue`` too."""
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self._send("add_consumer", arguments, destination, reply, timeout)

    def cancel_consumer(
        self, queue: str, destination: Destination = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]] | None:
        """Have the workers stop consuming from ``queue``."""
        return self._send("cancel_consumer", {"queue": queue}, destination, reply, timeout)

    def pool_grow(
        self, n: int = 1, destination: Destination = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]] | None:
        """Ask the workers' pools for ``n`` more slots (pools that cannot resize reply an error)."""
        return self._send("pool_grow", {"n": n}, destination, reply, timeout)

    def pool_shrink(
        self, n: int = 1, destination: Destination = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]] | None:
        """Ask the workers' pools for ``n`` fewer slots (pools that cannot resize reply an error)."""
        return self._send("pool_shrink", {"n": n}, destination, reply, timeout)

    def enable_events(
        self, destination: Destination = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]] | None:
        """Ask the workers to send task events."""
        return self._send("enable_events", {}, destination, reply, timeout)

    def disable_events(
        self, destination: Destination = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]] | None:
        """Ask the workers to stop sending task events."""
        return self._send("disable_events", {}, destination, reply, timeout)


class Inspect:
    """Questions to workers; each returns ``{node: reply}``, or None when no worker answered.

    With a single node name as ``destination``, a method returns that node's reply alone (Celery's
    behaviour).
    """

    def __init__(
        self,
        control: Control,
        destination: Destination = None,
        timeout: float = 1.0,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def request(self, command: str, **arguments: Any) -> Any:
        """Ask any command by name (one of the app's own, say) and return the replies by node."""
        return self.control.app.run(self.arequest(command, **arguments))

    async def arequest(self, command: str, **arguments: Any) -> Any:
        """``request`` for code running in an event loop."""
        replies = await self.control.abroadcast(
            command,
            arguments,
            self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        if not replies:
            return None
        by_node = flatten(replies)
        if isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node

    def ping(self) -> dict[str, Any] | None:
        """``{node: {"ok": "pong"}}`` of every worker that answered."""
        return self.request("ping")  # type: ignore[no-any-return]

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        """The tasks each worker is running."""
        return self.request("active", safe=safe)  # type: ignore[no-any-return]

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        """The tasks each worker holds, not yet running (ETA tasks excluded)."""
        return self.request("reserved", safe=safe)  # type: ignore[no-any-return]

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        """The ETA tasks each worker holds until they are due."""
        return self.request("scheduled", safe=safe)  # type: ignore[no-any-return]

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        """The tasks each worker knows, as ``"name [attr=value ...]"``."""
        return self.request("registered", taskinfoitems=list(taskinfoitems))  # type: ignore[no-any-return]

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        """Each worker's statistics: tasks run by name, pid, uptime, pool, broker, rusage."""
        return self.request("stats")  # type: ignore[no-any-return]

    def revoked(self) -> dict[str, Any] | None:
        """The ids each worker was told to revoke."""
        return self.request("revoked")  # type: ignore[no-any-return]

    def active_queues(self) -> dict[str, Any] | None:
        """The queues each worker consumes from."""
        return self.request("active_queues")  # type: ignore[no-any-return]

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        """Each worker's settings (only the changed ones unless ``with_defaults``), secrets masked."""
        return self.request("conf", with_defaults=with_defaults)  # type: ignore[no-any-return]

    def query_task(self, *ids: str) -> dict[str, Any] | None:
        """``{task id: [state, info]}`` for the given ids each worker holds or runs."""
        if len(ids) == 1 and not isinstance(ids[0], str):
            ids = tuple(ids[0])
        return self.request("query_task", ids=list(ids))  # type: ignore[no-any-return]

    def report(self) -> dict[str, Any] | None:
        """Each worker's report: versions, platform and settings."""
        return self.request("report")  # type: ignore[no-any-return]

    def clock(self) -> dict[str, Any] | None:
        """Each worker's logical clock."""
        return self.request("clock")  # type: ignore[no-any-return]

    def hello(self, from_node: str, revoked: dict[str, float] | None = None) -> dict[str, Any] | None:
        """Celery's mingle greeting: each worker's revoked ids and clock."""
        return self.request("hello", from_node=from_node, revoked=revoked)  # type: ignore[no-any-return]

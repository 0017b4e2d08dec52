"""The built-in control commands: revoke, limits, queues, pool size, events, shutdown; Celery's names,
arguments and reply texts."""

from __future__ import annotations

import logging
import signal as signals
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.control.registry import Registry
from celeriac.exceptions import ConfigurationError, TaskRevokedError
from celeriac.middleware.base import Fate
from celeriac.middleware.scheduling import RateLimits, parse_rate
from celeriac.result import revoke as record_revoked
from celeriac.worker._backoff import describe
from celeriac.worker._inspect import remember_revoked, revocations

if TYPE_CHECKING:
    from celeriac.worker.control import ControlState

__all__ = ["NO_REPLY", "control_commands"]

log = logging.getLogger("celeriac.worker.control")

control_commands = Registry()

#: What a command returns to send no reply at all (``shutdown``, as Celery's).
NO_REPLY: Any = object()


def _ok(text: str) -> dict[str, str]:
    return {"ok": text}


def _signal_number(name: str | int | None) -> int:
    if name is None:
        return signals.SIGTERM
    if isinstance(name, int):
        return name
    name = name.upper()
    return int(getattr(signals, name if name.startswith("SIG") else "SIG" + name))


@control_commands.control_command(args=[("task_id", str)], variadic="task_id")
async def revoke(
    state: ControlState,
    task_id: str | list[str],
    terminate: bool = False,
    signal: str | int | None = None,
    recorded: bool = False,
    **_: Any,
) -> dict[str, str]:
    """Revoke tasks: never run them here, wherever their messages wait (queued, held, ETA); with
    ``terminate``, stop a running one (processes: its child is signalled; threads, async, solo: it is
    cancelled, or ``Terminated`` is raised in its thread) and it ends REVOKED. The REVOKED record is
    written unless the sender says it wrote it (``recorded``, sent by celeriac's clients; Celery's
    write none)."""
    worker = state.worker
    ids = [task_id] if isinstance(task_id, str) else [str(t) for t in task_id]
    remember_revoked(worker, ids)
    if worker.backend is not None and not recorded:
        try:
            await record_revoked(worker.app, ids)  # Celery 5.6 records it on every worker too
        except Exception as exc:
            log.warning(
                "could not record %d revoked task(s) in the result backend: %s", len(ids), describe(exc)
            )
    wanted = set(ids)
    error = TaskRevokedError("revoked")
    for item in worker.waiting_items():
        if item.call.id in wanted:
            item.settle(Fate.ACK, "revoked", abandon=(states.REVOKED, error))
            worker.drop_waiting(item)
    if terminate:
        number = _signal_number(signal)
        hit = [task_id for task_id in dict.fromkeys(ids) if worker.terminate(task_id, number)]
        return _ok(f"terminate: {', '.join(hit)}" if hit else "terminate: tasks unknown")
    return _ok(f"tasks {wanted!r} flagged as revoked")


@control_commands.control_command(args=[("headers", str)], variadic="headers")
async def revoke_by_stamped_headers(
    state: ControlState,
    headers: dict[str, Any] | list[str] | str,
    terminate: bool = False,
    signal: str | int | None = None,
    **_: Any,
) -> dict[str, str]:
    """Revoke every task stamped with one of these values (``{stamp: value or [values]}``, or Celery's
    CLI form ``["stamp=value", ...]``): checked when each is about to run, remembered in memory as
    Celery does; with ``terminate``, running ones are stopped too."""
    if isinstance(headers, str):
        headers = [headers]
    if isinstance(headers, list):
        pairs = [str(h).split("=", 1) for h in headers]
        parsed: dict[str, Any] = {}
        for name, value in (p for p in pairs if len(p) == 2):
            parsed.setdefault(name, []).append(value)
        headers = parsed
    if not isinstance(headers, dict) or not headers:
        return {"error": f"revoke_by_stamped_headers needs {{stamp: value}} headers, got {headers!r}"}
    worker = state.worker
    middleware = revocations(worker)
    if middleware is None:
        return {"error": "this worker has no Revocation middleware: revoking by stamps is off"}
    middleware.hear_stamps(headers)
    worker.rehook()  # its before_run hook is live from now on
    if not terminate:
        return _ok(f"headers {headers!r} flagged as revoked, but not terminated")
    number = _signal_number(signal)
    hit = [
        item.call.id
        for item in worker.active_items()
        if middleware.stamped_revoked(item) and worker.pool.terminate(item.call.id, number)
    ]
    return _ok(f"headers {headers!r} revoked" if hit else f"headers {headers!r} were not terminated")


@control_commands.control_command(args=[("task_id", str), ("signal", str)])
async def terminate(
    state: ControlState, signal: str | int | None, task_id: str | list[str], **_: Any
) -> dict[str, str]:
    """``revoke`` with ``terminate``."""
    return await revoke(state, task_id, terminate=True, signal=signal)


@control_commands.control_command(args=[("task_name", str), ("rate_limit", str)])
def rate_limit(
    state: ControlState, task_name: str, rate_limit: str | float | None, **_: Any
) -> dict[str, str]:
    """Set a task's rate limit (``"10/m"``; 0 turns it off)."""
    task = state.app.tasks.get(task_name)
    if task is None:
        return {"error": "unknown task"}
    try:
        rate = parse_rate(rate_limit)
    except ConfigurationError as exc:
        return {"error": f"Invalid rate limit string: {ValueError(str(exc))!r}"}
    task.rate_limit = rate_limit if rate else None
    for mw in state.worker.middleware:
        if isinstance(mw, RateLimits):
            mw.forget(task_name)
    return _ok("new rate limit set successfully" if rate else "rate limit disabled successfully")


@control_commands.control_command(args=[("task_name", str), ("soft", float), ("hard", float)])
def time_limit(
    state: ControlState, task_name: str, soft: float | None = None, hard: float | None = None, **_: Any
) -> dict[str, str]:
    """Set a task's soft and hard time limits for the runs that start from now on."""
    task = state.app.tasks.get(task_name)
    if task is None:
        return {"error": "unknown task"}
    task.soft_time_limit = soft
    task.time_limit = hard
    return _ok("time limits set successfully")


@control_commands.control_command()
def shutdown(state: ControlState, msg: str = "Got shutdown from remote", **_: Any) -> Any:
    """Warm shutdown of the worker; there is no reply."""
    log.warning("%s: %s", state.hostname, msg)
    state.worker.request_stop()
    return NO_REPLY


@control_commands.control_command(args=[("n", int)])
def pool_grow(state: ControlState, n: int = 1, **_: Any) -> dict[str, str]:
    """Add ``n`` slots to the pool (threads and async: more at once; processes: more children)."""
    worker = state.worker
    if worker.autoscaler is not None:
        return {"error": "pool_grow is not supported with autoscale. Adjust autoscale range instead."}
    worker.resize(worker.concurrency + int(n))
    return _ok("pool will grow")


@control_commands.control_command(args=[("n", int)])
def pool_shrink(state: ControlState, n: int = 1, **_: Any) -> dict[str, str]:
    """Take ``n`` slots from the pool; running tasks finish first (a busy child retires after its job).
    The pool keeps at least one slot."""
    worker = state.worker
    if worker.autoscaler is not None:
        return {"error": "pool_shrink is not supported with autoscale. Adjust autoscale range instead."}
    size = worker.concurrency - int(n)
    if size < 1:
        raise ValueError(f"cannot shrink a pool of {worker.concurrency} by {n}: it keeps at least one slot")
    worker.resize(size)
    return _ok("pool will shrink")


@control_commands.control_command(args=[("max", int), ("min", int)])
def autoscale(
    state: ControlState, max: int | None = None, min: int | None = None, **_: Any
) -> dict[str, str]:
    """Change the autoscaler's range (Celery's ``autoscale max min``); an error without ``--autoscale``."""
    autoscaler = state.worker.autoscaler
    if autoscaler is None:
        raise ValueError("Autoscale not enabled")
    high, low = autoscaler.update(None if max is None else int(max), None if min is None else int(min))
    return _ok(f"autoscale now max={high} min={low}")


@control_commands.control_command()
def pool_restart(state: ControlState, **_: Any) -> dict[str, str]:
    """Restart the pool (not enabled: Celery's error)."""
    raise ValueError("Pool restarts not enabled")


@control_commands.control_command(
    args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)]
)
async def add_consumer(state: ControlState, queue: str, **_: Any) -> dict[str, str]:
    """Consume from ``queue`` too (declared first)."""
    worker = state.worker
    if queue not in worker.queues:
        assert worker.broker is not None
        await worker.broker.declare(queue)
        worker.queues.append(queue)
        log.info("%s: now consuming from %s", state.hostname, queue)
    return _ok(f"add consumer {queue}")


@control_commands.control_command(args=[("queue", str)])
def cancel_consumer(state: ControlState, queue: str, **_: Any) -> dict[str, str]:
    """Stop consuming from ``queue`` (the last queue stays: a worker consumes from at least one)."""
    worker = state.worker
    if queue in worker.queues:
        if len(worker.queues) == 1:
            return {"error": f"{queue} is the only queue consumed: add another first"}
        worker.queues.remove(queue)
        log.info("%s: no longer consuming from %s", state.hostname, queue)
    return _ok(f"no longer consuming from {queue}")


@control_commands.control_command()
def enable_events(state: ControlState, **_: Any) -> dict[str, str]:
    """Turn task events on (``-E`` at run time)."""
    if not state.worker.events.enable():
        return _ok("task events already enabled")
    return _ok("task events enabled")


@control_commands.control_command()
def disable_events(state: ControlState, **_: Any) -> dict[str, str]:
    """Turn task events off."""
    if not state.worker.events.disable():
        return _ok("task events already disabled")
    return _ok("task events disabled")


@control_commands.control_command()
def heartbeat(state: ControlState, **_: Any) -> None:
    """Celery's heartbeat request: send a ``worker-heartbeat`` event now (no reply, as in Celery)."""
    state.worker.events.heartbeat()
    return None

"""The built-in inspect commands, under Celery's names and with the shapes of Celery's replies, so that
``celery inspect`` and Flower read a celeriac worker as they read their own."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from celeriac._outages import safe_url
from celeriac.control.registry import Registry
from celeriac.middleware.scheduling import Revocation

if TYPE_CHECKING:
    from celeriac.middleware.base import WorkItem
    from celeriac.worker.control import ControlState
    from celeriac.worker.worker import Worker

__all__ = ["inspect_commands", "remember_revoked", "request_info", "revoked_ids"]

inspect_commands = Registry()

#: Settings whose values are masked in ``conf`` and ``report`` (as Celery's ``humanize`` masks them).
_SECRET = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE", re.IGNORECASE)
#: Settings holding URLs, shown with their password hidden.
_URLS = ("broker_url", "result_backend")


def request_info(worker: Worker, item: WorkItem, safe: bool | None = None) -> dict[str, Any]:
    """A held or running task as Celery describes it (``Request.info``); with ``safe``, the argument
    reprs the client wrote rather than the arguments. A ``sensitive`` task's hidden arguments stay hidden
    either way."""
    call = item.call
    running = item.time_start is not None
    redaction = item.task.redaction
    args: Any
    kwargs: Any
    if not safe:
        args, kwargs = redaction.values(call.args, call.kwargs)
    elif redaction:
        args, kwargs = redaction.reprs(call.args, call.kwargs)
    else:
        args = call.argsrepr if call.argsrepr is not None else call.args
        kwargs = call.kwargsrepr if call.kwargsrepr is not None else call.kwargs
    return {
        "id": call.id,
        "name": call.name,
        "args": args,
        "kwargs": kwargs,
        "type": call.name,
        "hostname": worker.hostname,
        "time_start": item.time_start,
        "acknowledged": item.acked,
        "delivery_info": {
            "exchange": "",
            "routing_key": item.delivery.queue,
            "priority": call.priority,
            "redelivered": item.delivery.redelivered,
        },
        "worker_pid": (worker.pool.pid_of(call.id) or worker.pid) if running else None,
    }


def _scheduled(item: WorkItem) -> bool:
    eta = item.call.eta
    return eta is not None and eta.timestamp() > time.time() and item.time_start is None


@inspect_commands.inspect_command()
def ping(state: ControlState, **_: Any) -> dict[str, str]:
    """Answer ``{"ok": "pong"}``."""
    return {"ok": "pong"}


@inspect_commands.inspect_command()
def active(state: ControlState, safe: bool | None = None, **_: Any) -> list[dict[str, Any]]:
    """The tasks running now."""
    worker = state.worker
    return [request_info(worker, item, safe) for item in worker.active_items()]


@inspect_commands.inspect_command()
def reserved(state: ControlState, safe: bool | None = None, **_: Any) -> list[dict[str, Any]]:
    """The tasks held, not running yet; ETA tasks are in ``scheduled``."""
    worker = state.worker
    return [request_info(worker, item, safe) for item in worker.waiting_items() if not _scheduled(item)]


@inspect_commands.inspect_command()
def scheduled(state: ControlState, safe: bool | None = None, **_: Any) -> list[dict[str, Any]]:
    """The ETA tasks held until they are due (those due beyond the horizon wait in the broker)."""
    worker = state.worker
    return [
        {
            "eta": item.call.eta.isoformat() if item.call.eta else None,
            "priority": item.call.priority or 0,
            "request": request_info(worker, item, safe),
        }
        for item in worker.waiting_items()
        if _scheduled(item)
    ]


@inspect_commands.inspect_command(variadic="taskinfoitems")
def registered(
    state: ControlState, taskinfoitems: list[str] | None = None, builtins: bool = False, **_: Any
) -> list[str]:
    """The registered tasks, sorted, as ``"name [attr=value ...]"``; ``celery.*`` only with ``builtins``."""
    items = list(taskinfoitems or ()) or ["exchange", "routing_key", "rate_limit"]
    found = []
    for name, task in sorted(state.app.tasks.items()):
        if name.startswith("celery.") and not builtins:
            continue
        attrs = [f"{a}={getattr(task, a)}" for a in items if getattr(task, a, None) is not None]
        found.append(f"{name} [{' '.join(attrs)}]" if attrs else name)
    return found


inspect_commands.inspect_command("registered_tasks")(registered)


@inspect_commands.inspect_command()
def stats(state: ControlState, **_: Any) -> dict[str, Any]:
    """Counts of tasks run by name, pid, clock, uptime, pool, broker, prefetch and resource usage; the
    autoscaler's range and demand when it runs."""
    worker = state.worker
    found = {
        "total": dict(worker.total),
        "pid": worker.pid,
        "clock": str(state.clock),
        "uptime": int(time.time() - state.started),
        "pool": _pool_info(worker),
        "broker": _broker_info(worker.app.broker_url),
        "prefetch_count": worker.prefetch_count,
        "rusage": _rusage(),
        # celeriac's own: received, succeeded, failed, retried, dead_lettered, requeued, lease_lost
        "counts": dict(worker.stats),
    }
    if worker.autoscaler is not None:
        found["autoscaler"] = worker.autoscaler.info()
    return found


def _pool_info(worker: Worker) -> dict[str, Any]:
    pool = worker.pool
    info = pool.info()
    conf = worker.app.conf
    found: dict[str, Any] = {
        "implementation": f"{type(pool).__module__}:{type(pool).__name__}",
        "max-concurrency": pool.concurrency,
        "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0],
    }
    if "processes" in info:
        found["processes"] = info["processes"]
        found["max-tasks-per-child"] = info.get("max-tasks-per-child") or "N/A"
        found["put-guarded-by-semaphore"] = False
    else:
        found["threads"] = pool.concurrency
    return found


def _broker_info(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return {
        "hostname": parts.hostname,
        "userid": parts.username,
        "virtual_host": parts.path.lstrip("/") or "/",
        "port": port,
        "insist": False,
        "ssl": parts.scheme in ("rediss", "amqps"),
        "transport": parts.scheme,
        "connect_timeout": 4,
        "transport_options": {},
        "login_method": None,
        "uri_prefix": None,
        "heartbeat": 120.0,
        "failover_strategy": "round-robin",
        "alternates": [],
    }


def _rusage() -> dict[str, Any] | str:
    try:
        import resource
    except ImportError:  # not on Windows
        return "N/A"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    names = [
        "utime",
        "stime",
        "maxrss",
        "ixrss",
        "idrss",
        "isrss",
        "minflt",
        "majflt",
        "nswap",
        "inblock",
        "oublock",
        "msgsnd",
        "msgrcv",
        "nsignals",
        "nvcsw",
        "nivcsw",
    ]
    return {name: getattr(usage, f"ru_{name}") for name in names}


def revoked_ids(worker: Worker) -> dict[str, float]:
    """The ids this worker was told to revoke, with when it heard (unix time)."""
    for mw in worker.middleware:
        if isinstance(mw, Revocation):
            return mw.heard()
    return {}


def remember_revoked(worker: Worker, ids: list[str]) -> None:
    """Have the worker skip these ids from now on, wherever their messages are (its Revocation
    middleware remembers them for ``revoked``; without one, nothing is remembered)."""
    for mw in worker.middleware:
        if isinstance(mw, Revocation):
            mw.hear(ids)


def revocations(worker: Worker) -> Revocation | None:
    """The worker's Revocation middleware, if it has one."""
    return next((mw for mw in worker.middleware if isinstance(mw, Revocation)), None)


@inspect_commands.inspect_command()
def revoked(state: ControlState, **_: Any) -> list[str]:
    """The ids this worker was told to revoke (kept three hours, at most 50 000)."""
    return sorted(revoked_ids(state.worker))


@inspect_commands.inspect_command()
def active_queues(state: ControlState, **_: Any) -> list[dict[str, Any]]:
    """The queues consumed, in the shape of kombu's ``Queue.as_dict``."""
    return [_queue_info(name) for name in state.worker.queues]


def _queue_info(name: str) -> dict[str, Any]:
    exchange = {
        "name": name,
        "type": "direct",
        "arguments": None,
        "durable": True,
        "passive": False,
        "auto_delete": False,
        "delivery_mode": None,
        "no_declare": False,
    }
    return {
        "name": name,
        "exchange": exchange,
        "routing_key": name,
        "queue_arguments": None,
        "binding_arguments": None,
        "consumer_arguments": None,
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "no_ack": False,
        "alias": None,
        "bindings": [],
        "no_declare": None,
        "expires": None,
        "message_ttl": None,
        "max_length": None,
        "max_length_bytes": None,
        "max_priority": None,
    }


def masked_settings(state: ControlState, with_defaults: bool = False) -> dict[str, Any]:
    """The settings (only the changed ones unless ``with_defaults``), secrets masked, every value one
    JSON can carry."""
    conf = state.app.conf
    source = dict(conf) if with_defaults else conf.changes()
    found: dict[str, Any] = {}
    for key, value in source.items():
        if key.startswith("__"):
            continue
        if key in _URLS and isinstance(value, str):
            value = safe_url(value)
        elif _SECRET.search(key) and value:
            value = "********"
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        found[key] = value
    return found


@inspect_commands.inspect_command(alias="dump_conf")
def conf(state: ControlState, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    """The worker's settings, secrets masked."""
    return masked_settings(state, with_defaults)


@inspect_commands.inspect_command(variadic="ids")
def query_task(state: ControlState, ids: list[str] | str | None = None, **_: Any) -> dict[str, Any]:
    """``{id: [state, info]}`` for the given ids this worker runs (``active``) or holds (``reserved``)."""
    wanted = {ids} if isinstance(ids, str) else set(ids or ())
    worker = state.worker
    found: dict[str, Any] = {}
    for kind, items in (("active", worker.active_items()), ("reserved", worker.waiting_items())):
        for item in items:
            if item.call.id in wanted:
                found[item.call.id] = [kind, request_info(worker, item)]
    return found


@inspect_commands.inspect_command()
def report(state: ControlState, **_: Any) -> dict[str, str]:
    """Versions, platform and settings, as text."""
    from celeriac import __version__

    settings = "\n".join(f"{k}: {v!r}" for k, v in sorted(masked_settings(state).items()))
    text = (
        f"software -> celeriac:{__version__} python:{platform.python_version()}\n"
        f"platform -> system:{platform.system()} arch:{platform.machine()} "
        f"imp:{sys.implementation.name}\n"
        f"node -> {state.hostname} pid:{os.getpid()} pool:{state.worker.pool_name}\n"
        f"loader -> {state.app.main or '__main__'}\n"
        f"settings -> transport:{urlsplit(state.app.broker_url).scheme} "
        f"results:{safe_url(state.app.backend_url)}\n\n{settings}\n"
    )
    return {"ok": text}


@inspect_commands.inspect_command()
def clock(state: ControlState, **_: Any) -> dict[str, int]:
    """The worker's logical clock."""
    return {"clock": state.clock}


@inspect_commands.inspect_command()
def hello(
    state: ControlState, from_node: str | None = None, revoked: dict[str, float] | None = None, **_: Any
) -> dict[str, Any] | None:
    """Celery's mingle greeting: learn the greeter's revoked ids, answer ours and the clock (nothing to
    a greeting from this very node)."""
    if from_node == state.hostname:
        return None
    if revoked:
        remember_revoked(state.worker, list(revoked))
    return {"revoked": revoked_ids(state.worker), "clock": state.tick()}

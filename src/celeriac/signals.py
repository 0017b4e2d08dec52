"""Signals: Celery's hooks into the life of tasks and workers, under Celery's names and keyword arguments.

Connect a function to a signal and it is called, in the process where the signal fires, with
``signal``, ``sender`` and the signal's keyword arguments. Accept ``**kwargs``: more may come.

    from celeriac.signals import task_success

    @task_success.connect(sender=add)
    def count(sender, result, **kwargs):
        ...

Where each signal fires, and with what, is in ``docs/signals.md``. A receiver that raises is logged
with its traceback and passed over: it never fails a task nor stops a worker.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, overload

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


def _key(target: object) -> Hashable:
    """What identifies a receiver or a sender: a string is itself (Celery's senders include task names),
    a bound method its object and function (each access makes a new method object), anything else
    its identity."""
    if isinstance(target, str | bytes):
        return target
    func = getattr(target, "__func__", None)
    owner = getattr(target, "__self__", None)
    if func is not None and owner is not None:
        return (id(owner), id(func))
    return id(target)


_ANY = _key(None)


class Signal:
    """A named hook that receivers connect to and that celeriac sends.

    ``providing_args`` documents the keyword arguments ``send`` passes besides ``signal`` and
    ``sender``. Connecting and sending are thread-safe.
    """

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = frozenset(providing_args)
        self._lock = threading.Lock()
        # (receiver key, sender key), then the receiver or a weak reference to it
        self._receivers: list[tuple[tuple[Hashable, Hashable], Receiver | weakref.ref[Any]]] = []
        # called when receivers come or go (a worker then asks whether its hooks that send this live)
        self._watchers: list[weakref.WeakMethod[Callable[[], None]]] = []

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    @overload
    def connect(
        self,
        receiver: Receiver,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Receiver: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Callable[[Receiver], Receiver]: ...

    def connect(
        self,
        receiver: Receiver | None = None,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Receiver | Callable[[Receiver], Receiver]:
        """Call ``receiver`` whenever this signal is sent (by ``sender`` only, when one is given).

        Usable as a decorator, bare (``@sig.connect``) or with options (``@sig.connect(sender=...)``);
        returns the receiver unchanged. With ``weak`` (the default, as in Celery) only a weak reference
        is kept, so a receiver nothing else holds (a lambda, a function defined in a function) goes
        away with its last reference; pass ``weak=False`` to keep it. A receiver connected again with
        the same sender, or a second one with the same ``dispatch_uid``, is not added twice.

        A sender matches when it is the same object, or an equal string (before_task_publish and
        after_task_publish send the task's name; the task signals the task object).
        """
        if receiver is None:
            return lambda fn: self.connect(fn, sender, weak, dispatch_uid)
        lookup = (dispatch_uid if dispatch_uid is not None else _key(receiver), _key(sender))
        held: Receiver | weakref.ref[Any] = receiver
        if weak:
            if getattr(receiver, "__self__", None) is not None and hasattr(receiver, "__func__"):
                held = weakref.WeakMethod(receiver, self._forget)
            else:
                held = weakref.ref(receiver, self._forget)
        with self._lock:
            added = all(key != lookup for key, _ in self._receivers)
            if added:
                self._receivers.append((lookup, held))
        if added:
            self._changed()
        return receiver

    def disconnect(
        self, receiver: Receiver | None = None, sender: object = None, dispatch_uid: Hashable | None = None
    ) -> bool:
        """Stop calling ``receiver`` (or the one connected with ``dispatch_uid``) for ``sender``;
        True if it was connected."""
        lookup = (dispatch_uid if dispatch_uid is not None else _key(receiver), _key(sender))
        with self._lock:
            for index, (key, _) in enumerate(self._receivers):
                if key == lookup:
                    del self._receivers[index]
                    break
            else:
                return False
        self._changed()
        return True

    def has_receivers(self) -> bool:
        """Whether any receiver is connected (for any sender)."""
        return bool(self._receivers)

    def send(self, sender: object, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every live receiver connected for ``sender`` (or for any sender) with ``signal=self``,
        ``sender`` and ``named``; return ``[(receiver, what it returned)]``.

        A receiver that raises is logged with its traceback and its exception stands as its answer:
        the others are still called, and the caller carries on (Celery's signals behave so too).
        """
        if not self._receivers:
            return []
        wanted = _key(sender)
        responses: list[tuple[Receiver, Any]] = []
        for receiver in self._live(wanted):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                logger.exception("Signal handler %r of %s raised: %r", receiver, self.name, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    #: Celery's name for ``send``, which is robust already.
    send_robust = send

    def _live(self, wanted: Hashable) -> list[Receiver]:
        found: list[Receiver] = []
        with self._lock:
            entries = list(self._receivers)
        for (_, sender_key), held in entries:
            if sender_key != _ANY and sender_key != wanted:
                continue
            receiver = held() if isinstance(held, weakref.ref) else held
            if receiver is not None:
                found.append(receiver)
        return found

    def _forget(self, dead: weakref.ref[Any]) -> None:
        with self._lock:
            self._receivers = [entry for entry in self._receivers if entry[1] is not dead]
        self._changed()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call the bound method ``callback`` whenever a receiver is connected or disconnected (from the
        thread that did it), as long as its object lives: only a weak reference is kept."""
        held = weakref.WeakMethod(callback)
        with self._lock:
            self._watchers = [w for w in self._watchers if w() is not None and w != held] + [held]

    def _changed(self) -> None:
        for watcher in list(self._watchers):
            callback = watcher()
            if callback is not None:
                callback()


# -- sent where a task is published (the caller's process, or a worker that sends one) ---------------
#: Before a task message is published. Sender: the task's name. ``headers`` and ``properties`` are the
#: message's own (changes go on the wire).
before_task_publish = Signal(
    "before_task_publish",
    ("body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"),
)
#: After a task message was published. Sender: the task's name.
after_task_publish = Signal(
    "after_task_publish", ("body", "exchange", "routing_key", "headers", "properties")
)

# -- sent in the worker's process, on its loop ---------------------------------------------------------
#: A task message was received and accepted. Sender: the worker. ``request``: the task's request.
task_received = Signal("task_received", ("request",))
#: A task will not run: revoked, or expired. Sender: the task.
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
#: A message that is no task message we can read was set aside. Sender: the worker.
task_rejected = Signal("task_rejected", ("message", "exc"))
#: A message named a task not registered here; it was set aside. Sender: the worker.
task_unknown = Signal("task_unknown", ("name", "id", "message", "exc"))

# -- sent in the process that runs the task (a pool child, under the processes pool) ------------------
#: Before a task runs. Sender: the task.
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
#: After a task ran, however it ended. Sender: the task.
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
#: A task succeeded. Sender: the task.
task_success = Signal("task_success", ("result",))
#: A task failed. Sender: the task. ``einfo`` is an ``ExceptionInfo`` (``str(einfo)``: the traceback).
task_failure = Signal("task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo"))
#: celeriac itself failed while handling a task (not the task raising): the run ends a FAILURE with
#: that error. Sender: the task. ``einfo`` is an ``ExceptionInfo``.
task_internal_error = Signal(
    "task_internal_error",
    ("task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"),
)
#: A task ended with a retry. Sender: the task.
task_retry = Signal("task_retry", ("request", "reason", "einfo"))

# -- the worker's life ----------------------------------------------------------------------------------
#: The first signal of a worker, as it is made. Sender: the worker's node name.
celeryd_init = Signal("celeryd_init", ("instance", "conf", "options"))
#: The worker is made, before it runs. Sender: the worker's node name.
celeryd_after_setup = Signal("celeryd_after_setup", ("instance", "conf"))
#: The worker is about to import the task modules (``imports``, ``include``). Sender: the app.
import_modules = Signal("import_modules")
#: The worker is starting, before its pool starts. Sender: the worker.
worker_init = Signal("worker_init")
#: The worker is ready to take tasks. Sender: the worker.
worker_ready = Signal("worker_ready")
#: The worker begins its warm or cold shutdown. Sender: the worker's node name. ``sig``: the signal's
#: name (``"SIGTERM"``), or None when no signal asked (remote control, ``request_stop``); ``how``:
#: ``"Warm"`` or ``"Cold"``; ``exitcode``: what the worker exits with.
worker_shutting_down = Signal("worker_shutting_down", ("sig", "how", "exitcode"))
#: The worker has stopped. Sender: the worker.
worker_shutdown = Signal("worker_shutdown")
#: A processes-pool child has loaded the app and is about to take jobs. Sender: None.
worker_process_init = Signal("worker_process_init")
#: A processes-pool child is about to exit. Sender: None.
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))
#: The worker's broker renewed its lease on the messages it holds. Sender: the broker.
heartbeat_sent = Signal("heartbeat_sent")

# -- logging ---------------------------------------------------------------------------------------------
#: Sent instead of the worker setting up logging: when any receiver is connected, the worker leaves
#: logging to it.
setup_logging = Signal("setup_logging", ("loglevel", "logfile", "format", "colorize"))
#: The worker set up logging (the root logger). Sender: None.
after_setup_logger = Signal("after_setup_logger", ("logger", "loglevel", "logfile", "format", "colorize"))
#: The worker set up the logging of task records (formatted with ``worker_task_log_format``). Sender:
#: None. celeriac has no separate task logger: task records go through the root logger's handler, so
#: ``logger`` is the root logger and ``format`` the task format.
after_setup_task_logger = Signal(
    "after_setup_task_logger", ("logger", "loglevel", "logfile", "format", "colorize")
)

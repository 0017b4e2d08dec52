"""Exceptions raised by celeriac, under Celery's names where Celery has one."""

from __future__ import annotations

import builtins
from datetime import datetime
from traceback import format_exception as _format_exception
from typing import Any


class CeleriacError(Exception):
    """Base of every error celeriac raises on its own account."""


class ConfigurationError(CeleriacError):
    """A setting is unknown, mistyped or has a value of the wrong kind."""


class ImproperlyConfigured(ConfigurationError):
    """Celery's name for a broken configuration, kept for compatibility."""


class ConfigurationWarning(UserWarning):
    """A configuration that loads but does not do all it says: a Celery setting celeriac does not
    implement yet, or one of Celery's old upper-case setting names."""


class MissingDependency(CeleriacError, ImportError):
    """An optional integration was used without its extra installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs an optional dependency: pip install 'celeriac[{extra}]'")


class OperationalError(CeleriacError, ConnectionError):
    """A broker or result backend could not be reached (kombu's name for it)."""


class MessageUnroutable(CeleriacError):
    """The broker had no queue for a message (nothing bound its exchange and routing key): not sent."""


class DecodeError(CeleriacError):
    """A message could not be turned into a task call; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContentDisallowed(DecodeError):
    """The message's content type is not in ``accept_content``."""


class SecurityError(DecodeError):
    """A signed message failed verification: malformed, a bad signature, or a certificate that is
    unknown or expired. It is never decoded."""


class MessageTooLarge(DecodeError):
    """A message (or its decompressed body) is over ``task_message_max_bytes``."""


class NotRegistered(CeleriacError, KeyError):
    """No task of this name is registered with the app."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class TimeoutError(CeleriacError, builtins.TimeoutError):
    """Waiting for a result took longer than the caller allowed."""


class TaskError(CeleriacError):
    """Base of errors that describe what happened to a task."""


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task when its soft time limit passes; the task may clean up.

    Its argument is the limit in seconds, as Celery's (billiard's) twin carries it.
    """

    def __str__(self) -> str:
        return _limit_text("Soft time limit", self.args) or super().__str__()


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and was killed; its argument is the limit in seconds."""

    def __str__(self) -> str:
        return _limit_text("Time limit", self.args) or super().__str__()


def _limit_text(what: str, args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and isinstance(args[0], (int, float)) and not isinstance(args[0], bool):
        return f"{what} ({args[0]}s) exceeded"
    return None


class WorkerLostError(TaskError):
    """The process running the task died before the task finished."""


class TaskRevokedError(TaskError):
    """The task was revoked (or had expired) and did not run."""


class Terminated(BaseException):
    """Raised inside a task's thread when remote control terminates it (``revoke(terminate=True)`` on
    the threads and solo pools): it lands at the thread's next Python bytecode, never inside a blocking
    C call. A ``BaseException``, so that a task's ``except Exception`` does not swallow it; clean up in
    ``finally``. Celery's name (billiard's ``Terminated``)."""


class MaxRetriesExceededError(TaskError):
    """``Task.retry`` was called after the task used up its ``max_retries``."""


class Retry(TaskError):
    """Raised by ``Task.retry``: the task is sent again and this run ends in state RETRY."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | datetime | None = None,
        **options: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.options = options
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        """When the retry is due, in words: ``"in 5s"``, ``"at <datetime>"`` or ``"now"``."""
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}" if self.when is not None else "now"

    def __str__(self) -> str:
        if self.message:
            return self.message
        return f"Retry {self.humanize()}: {self.exc!r}" if self.exc else f"Retry {self.humanize()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_retry, (self.message, self.exc, self.when, self.options))


def _rebuild_retry(
    message: str | None, exc: BaseException | None, when: Any, options: dict[str, Any]
) -> Retry:
    return Retry(message, exc, when, **options)


class Reject(TaskError):
    """Raised by a task to reject its message: dead-lettered, or requeued when ``requeue`` is true."""

    def __init__(self, reason: str | None = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class Ignore(TaskError):
    """Raised by a task to end without storing any state."""


class RemoteTaskError(Exception):
    """Stands for an exception raised in a task whose class this process may not import.

    Result records name the exception's module and type; celeriac never imports a module because a
    result record names it. When the class is not already importable without an import, the error is
    re-raised as a subclass of this one carrying the original type name and module.
    """

    exc_type: str = "RemoteTaskError"
    exc_module: str = ""


class ChordError(TaskError):
    """A task in a chord's header failed, so the chord's body cannot run."""


class ExceptionInfo:
    """An exception with its traceback, as Celery's signals hand it over (billiard's ``ExceptionInfo``):
    ``einfo`` of ``task_failure``, ``task_retry`` and ``task_internal_error``.

    ``str(einfo)`` is the formatted traceback, and ``"text" in einfo`` searches it, so code written for
    a traceback string keeps working.
    """

    def __init__(self, exc: BaseException, traceback: str | None = None, internal: bool = False) -> None:
        #: The exception.
        self.exception = exc
        #: Its class.
        self.type: type[BaseException] = type(exc)
        #: The traceback object (None when the exception was never raised).
        self.tb = exc.__traceback__
        #: The formatted traceback.
        self.traceback = traceback if traceback is not None else "".join(_format_exception(exc))
        #: True when celeriac, not the task, failed (``task_internal_error``).
        self.internal = internal

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, Any]:
        """``(type, exception, traceback object)``, as ``sys.exc_info()`` gives them."""
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __contains__(self, text: str) -> bool:
        return text in self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"

"""Worker logging: Celery's formats, with ``worker_task_log_format`` for records logged inside a task."""

from __future__ import annotations

import logging
import sys

from celeriac import signals
from celeriac._request import current_request


class TaskFormatter(logging.Formatter):
    """Formats a record with ``task_fmt`` when it is logged while a task runs (its name and id are
    known), and with ``fmt`` otherwise."""

    def __init__(self, fmt: str, task_fmt: str) -> None:
        super().__init__(fmt)
        self._task = logging.Formatter(task_fmt)

    def format(self, record: logging.LogRecord) -> str:
        """The record formatted with the task's format while a task runs, else the plain one."""
        request = current_request()
        if request is not None and request.id:
            record.task_name = request.task or "???"
            record.task_id = request.id
            return self._task.format(record)
        return super().format(record)


def setup_logging(level: int | str, fmt: str, task_fmt: str, hijack: bool = True) -> None:
    """Log to stderr at ``level``; with ``hijack`` (``worker_hijack_root_logger``) replace the root
        logger's handlers, otherwise leave a configuration the app made in place.

        When a receiver is connected to ``celeriac.signals.setup_logging``, it is sent instead and logging
    is left to it (Celery's rule); otherwise ``after_setup_logger`` and ``after_setup_task_logger`` are
    sent once the root logger is set.
    """
    number = _level_number(level)
    if signals.setup_logging.has_receivers():
        signals.setup_logging.send(sender=None, loglevel=number, logfile=None, format=fmt, colorize=False)
        return
    _configure(number, fmt, task_fmt, hijack)
    signals.after_setup_logger.send(
        sender=None, logger=logging.getLogger(), loglevel=number, logfile=None, format=fmt, colorize=False
    )
    # No logger of its own for task records: the root logger's handler formats them with ``task_fmt``.
    signals.after_setup_task_logger.send(
        sender=None,
        logger=logging.getLogger(),
        loglevel=number,
        logfile=None,
        format=task_fmt,
        colorize=False,
    )


def _configure(level: int, fmt: str, task_fmt: str, hijack: bool) -> None:
    root = logging.getLogger()
    if hijack:
        for handler in list(root.handlers):
            root.removeHandler(handler)
    elif root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TaskFormatter(fmt, task_fmt))
    root.addHandler(handler)
    root.setLevel(level)


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    try:
        return logging.getLevelNamesMapping()[level.upper()]
    except KeyError:
        raise ValueError(f"Unknown level: {level!r}") from None

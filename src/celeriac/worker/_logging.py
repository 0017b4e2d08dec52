"""Worker logging: Celery's formats, with ``worker_task_log_format`` for records logged inside a task."""

from __future__ import annotations

import logging
import sys

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
    logger's handlers, otherwise leave a configuration the app made in place."""
    root = logging.getLogger()
    if hijack:
        for handler in list(root.handlers):
            root.removeHandler(handler)
    elif root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TaskFormatter(fmt, task_fmt))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)

"""Loggers for task code: ``get_task_logger(__name__)``, whose records name the running task.

    from celeriac.log import get_task_logger

    logger = get_task_logger(__name__)

    @app.task
    def add(x, y):
        logger.info("adding %s and %s", x, y)  # "... add[<task id>]: adding 2 and 3" in the worker
        return x + y

Each record carries ``task_name`` and ``task_id`` (``"???"`` outside a task), so any format may use
``%(task_name)s`` and ``%(task_id)s``; the worker's ``worker_task_log_format`` does. Celery's import path
``celeriac.utils.log`` gives the same function.
"""

from __future__ import annotations

import logging

from celeriac._request import current_request

__all__ = ["TaskContext", "get_task_logger"]


class TaskContext(logging.Filter):
    """Sets ``task_name`` and ``task_id`` on each record from the task running where it is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Name the running task on ``record`` (``"???"`` when none runs); never drops a record."""
        request = current_request()
        if request is not None and request.id:
            record.task_name, record.task_id = request.task or "???", request.id
        else:
            record.task_name = record.task_id = "???"
        return True


_context = TaskContext()


def get_task_logger(name: str) -> logging.Logger:
    """The logger called ``name``, its records marked with the running task's name and id."""
    logger = logging.getLogger(name)
    if _context not in logger.filters:
        logger.addFilter(_context)
    return logger

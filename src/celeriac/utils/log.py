"""Celery's ``celery.utils.log`` path for ``get_task_logger``, which lives in ``celeriac.log``."""

from __future__ import annotations

from celeriac.log import get_task_logger

__all__ = ["get_task_logger"]

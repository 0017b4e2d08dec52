"""Pools: where task code runs (D4). ``pool_class("threads")`` finds the class behind ``-P``.

Each pool lives in its own module, imported only when asked for: the tracer imports ``pools.base``,
and the pools import the tracer.
"""

from __future__ import annotations

import importlib

from celeriac.exceptions import ConfigurationError
from celeriac.worker.pools.base import Job, Outcome, Pool

_POOLS: dict[str, tuple[str, str]] = {
    "processes": ("celeriac.worker.pools.processes", "ProcessPool"),
    "prefork": ("celeriac.worker.pools.processes", "ProcessPool"),  # Celery's name
    "threads": ("celeriac.worker.pools.threads", "ThreadPool"),
    "async": ("celeriac.worker.pools.asyncio", "AsyncPool"),
    "solo": ("celeriac.worker.pools.solo", "SoloPool"),
}


def pool_class(name: str) -> type[Pool]:
    """The pool class for ``-P name``: processes (alias prefork), threads, async or solo.

    Raises:
        ConfigurationError: ``name`` is none of those.
    """
    try:
        module, attr = _POOLS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown pool {name!r}: use one of processes (or prefork), threads, async, solo"
        ) from None
    cls: type[Pool] = getattr(importlib.import_module(module), attr)
    return cls


__all__ = ["Job", "Outcome", "Pool", "pool_class"]

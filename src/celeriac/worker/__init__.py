"""The worker: ``Worker(app).run()`` serves tasks until SIGTERM.

``Worker`` is loaded on first use, so a pool's child process, which imports ``celeriac.worker.tracer``,
does not load the consumer, the middleware and the broker code it never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from celeriac.worker.worker import Worker

        return Worker
    raise AttributeError(f"module 'celeriac.worker' has no attribute {name!r}")


__all__ = ["Worker"]

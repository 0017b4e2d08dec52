"""``celeriac dashboard``: ``/metrics`` for Prometheus from the events of every worker, ``/healthz``, and
(in a later release) web pages. ``create_app(app)`` makes it an ASGI app to serve or to mount.

Needs the ``dashboard`` extra: ``pip install 'celeriac[dashboard]'`` (Starlette, and uvicorn to serve it).
"""

from __future__ import annotations

try:
    from celeriac.dashboard.app import Dashboard, create_app
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    if exc.name not in ("starlette", "uvicorn"):
        raise
    raise ModuleNotFoundError(
        f"the dashboard needs {exc.name}: pip install 'celeriac[dashboard]'", name=exc.name
    ) from exc

__all__ = ["Dashboard", "create_app"]

"""Worker features as middleware (D11). ``default_middleware`` lists what a worker runs, in order."""

from __future__ import annotations

from celeriac.middleware.base import Middleware, Skip, WorkItem


def default_middleware() -> list[Middleware]:
    from celeriac.middleware.continuation import Continuation
    from celeriac.middleware.results import Results
    from celeriac.middleware.retries import Retries
    from celeriac.middleware.scheduling import Eta, Expiry, RateLimits, Revocation

    return [Expiry(), Revocation(), Eta(), RateLimits(), Retries(), Results(), Continuation()]


__all__ = ["Middleware", "Skip", "WorkItem", "default_middleware"]

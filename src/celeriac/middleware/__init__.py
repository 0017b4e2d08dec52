"""Worker features as middleware (D11). ``default_middleware`` lists what a worker runs, in order."""

from __future__ import annotations

from celeriac.middleware.base import Fate, Middleware, Skip, WorkItem


def default_middleware() -> list[Middleware]:
    """A new instance of each middleware a worker runs by default, in the order their hooks run."""
    from celeriac.middleware.continuation import Continuation
    from celeriac.middleware.dead_letters import DeadLetterRetention
    from celeriac.middleware.events import Events
    from celeriac.middleware.metrics import Metrics
    from celeriac.middleware.results import Results
    from celeriac.middleware.retries import Retries
    from celeriac.middleware.scheduling import Eta, Expiry, RateLimits, Revocation
    from celeriac.middleware.signals import Signals
    from celeriac.middleware.unique import Uniqueness

    return [
        Expiry(),
        Revocation(),
        Signals(),
        Eta(),
        RateLimits(),
        Retries(),
        Results(),
        Continuation(),
        Uniqueness(),
        Events(),
        Metrics(),
        DeadLetterRetention(),
    ]


__all__ = ["Fate", "Middleware", "Skip", "WorkItem", "default_middleware"]

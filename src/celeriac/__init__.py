"""celeriac: a distributed task queue for Python that speaks Celery's wire protocol."""

from celeriac import states
from celeriac.app import Celeriac, Celery, shared_task
from celeriac.canvas import Signature, chain, chord, chunks, group, maybe_signature, signature, xmap, xstarmap
from celeriac.result import AsyncResult, EagerResult, GroupResult
from celeriac.task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Celeriac",
    "Celery",
    "EagerResult",
    "GroupResult",
    "Signature",
    "Task",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "xmap",
    "xstarmap",
]

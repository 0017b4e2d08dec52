"""Signatures and the workflows built from them: chain, group, chord, chunks, map and starmap.

Every primitive is a dict in Celery's embedded form, ``{"task", "args", "kwargs", "options", "subtask_type",
"immutable"}``, so it travels inside a message (``link``, ``link_error``, ``chain``, ``chord``) and Celery's
workers and ours read each other's workflows.

Sending a workflow takes two steps. ``freeze`` gives every task in it its id, so the result handles exist
before anything is sent; ``_plan`` then lists every message to send and every chord to announce, and the app
sends them in one batch (``_plan.py``), or under ``task_always_eager`` runs them here (``_eager.py``). Workers
carry the workflow on from there (``middleware/continuation.py``): the next step of a chain, callbacks,
errbacks, and a chord's body once the backend's counter says its header is complete.

The modules, by concept: ``signature`` (a task call as data, the base of every primitive), ``primitives``
(chain, group, chord), ``maps`` (one task over many items: xmap, xstarmap, chunks), and the sending half,
``_plan`` and ``_eager``.
"""

from celeriac.canvas.maps import chunks, xmap, xstarmap
from celeriac.canvas.primitives import Unsent, body_error, chain, chord, group, unsent_tasks
from celeriac.canvas.signature import (
    MEMBERSHIP,
    Signature,
    asend_follow_up,
    listed,
    maybe_signature,
    signature,
)
from celeriac.canvas.stamping import StampingVisitor

__all__ = [
    "MEMBERSHIP",
    "Signature",
    "StampingVisitor",
    "Unsent",
    "asend_follow_up",
    "body_error",
    "chain",
    "chord",
    "chunks",
    "group",
    "listed",
    "maybe_signature",
    "signature",
    "unsent_tasks",
    "xmap",
    "xstarmap",
]

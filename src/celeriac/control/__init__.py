"""Remote control of workers (Celery's pidbox): ``app.control`` sends commands, workers answer.

``client`` is the sending side (``Control``, ``Inspect``), ``mailbox`` the wire format shared with
Celery, ``registry`` the table of commands a worker is allowed to run. The worker's side is
``celeriac.worker.control``.
"""

from __future__ import annotations

from celeriac.control.client import Control, Inspect
from celeriac.control.registry import Handler, Registry

__all__ = ["Control", "Handler", "Inspect", "Registry"]

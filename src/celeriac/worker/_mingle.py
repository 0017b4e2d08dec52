"""Mingle: a starting worker greets the others (Celery's ``hello``) and takes in what they know.

The greeting carries this worker's node name and the ids it holds revoked; each other worker, celeriac's
or Celery's, answers with the ids it holds revoked and its logical clock. The worker then skips those ids
too and moves its clock past theirs. celeriac records revocations in the result backend, so among
celeriac workers this mostly brings the clock; its revocations matter in a fleet with Celery workers,
which keep theirs in memory only (a ``celery control revoke`` writes no record).

It runs in the background once the worker is ready, not before it consumes as Celery's does: alone, a
worker would otherwise wait the whole ``timeout`` (a second) at every start for answers that never come.
The price is that a task revoked only in a peer's memory and fetched in that first second may still run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celeriac.worker._backoff import describe
from celeriac.worker._inspect import remember_revoked, revoked_ids

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

log = logging.getLogger("celeriac.worker")

#: Seconds to wait for answers after the last one came (Celery's mingle waits one).
TIMEOUT = 1.0


async def mingle(worker: Worker, timeout: float = TIMEOUT) -> int:
    """Greet the other workers on ``worker``'s broker and merge their answers; return how many answered.

    A broker that cannot broadcast, or one that fails meanwhile, leaves the worker as it was (logged).
    """
    control = worker.app.control
    arguments = {"from_node": worker.hostname, "revoked": list(revoked_ids(worker))}
    try:
        replies = await control.abroadcast("hello", arguments, reply=True, timeout=timeout) or []
    except NotImplementedError:
        return 0  # no broadcasts on this broker: nobody to greet
    except Exception as exc:
        log.warning("%s: mingle could not greet the other workers: %s", worker.hostname, describe(exc))
        return 0
    synced = 0
    for reply in replies:
        for node, answer in reply.items():
            if node == worker.hostname or not isinstance(answer, dict):
                continue
            synced += 1
            _merge(worker, node, answer)
    if synced:
        log.info("%s: mingle: synced with %d other worker(s)", worker.hostname, synced)
    else:
        log.info("%s: mingle: no other worker answered", worker.hostname)
    return synced


def _merge(worker: Worker, node: str, answer: dict[str, Any]) -> None:
    """Take in one worker's answer: its revoked ids (a list, or Celery's older mapping of id to time)
    and its clock."""
    revoked, clock = answer.get("revoked"), answer.get("clock")
    if isinstance(revoked, dict | list) and revoked:
        remember_revoked(worker, [str(task_id) for task_id in revoked])
    if worker.control is not None and isinstance(clock, int):
        worker.control.state.tick(clock)
    if answer.get("error"):
        log.warning("%s: mingle: %s answered with an error: %s", worker.hostname, node, answer["error"])

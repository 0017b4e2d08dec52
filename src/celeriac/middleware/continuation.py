"""Workflow continuation: ``link`` callbacks, ``link_error`` errbacks and the next step of a chain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.middleware.base import Middleware, WorkItem
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


class Continuation(Middleware):
    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        from celeriac.canvas import Signature

        call = item.call
        if item.extra.get("requeue"):
            return
        if outcome.status == states.SUCCESS:
            parent: dict[str, Any] = {"parent_id": call.id, "root_id": call.root_id or call.id}
            for data in call.callbacks or ():
                await Signature.from_dict(data, app=worker.app).aapply_async((outcome.value,), **parent)
            if call.chain:
                rest = list(call.chain)
                following: dict[str, Any] = rest.pop()  # the chain travels reversed: next task last
                sig = Signature.from_dict(following, app=worker.app)
                await sig.aapply_async((outcome.value,), chain=rest or None, **parent)
        elif outcome.status == states.FAILURE:
            for data in call.errbacks or ():
                await Signature.from_dict(data, app=worker.app).aapply_async(
                    (call.id,), parent_id=call.id, root_id=call.root_id or call.id
                )

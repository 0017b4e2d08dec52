"""Retention of dead letters: each worker trims them to ``broker_dead_letter_max`` and
``broker_dead_letter_expires``, soon after it starts and then once a minute."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from celeriac.middleware.base import Middleware

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


class DeadLetterRetention(Middleware):
    """Deletes dead letters beyond the newest ``broker_dead_letter_max`` or older than
    ``broker_dead_letter_expires`` seconds (None or 0: no such limit).

    Every worker on a broker does it; the trim is cheap where nothing is due (one short script on Redis,
    one statement on SQL, a look at the oldest letter on RabbitMQ), so many workers cost little.
    """

    #: Seconds between two trims.
    interval = 60.0
    #: Seconds after the start before the first trim (the worker's own start comes first).
    first_after = 1.0

    def __init__(self) -> None:
        self._trimmer: asyncio.Task[None] | None = None

    async def worker_start(self, worker: Worker) -> None:
        """Start trimming, unless neither setting limits anything."""
        conf = worker.app.conf
        if conf.broker_dead_letter_max or conf.broker_dead_letter_expires:
            self._trimmer = asyncio.create_task(self._trim(worker), name="celeriac-dead-letter-retention")

    async def worker_stop(self, worker: Worker) -> None:
        """Stop trimming."""
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer

    async def _trim(self, worker: Worker) -> None:
        conf, broker = worker.app.conf, worker.broker
        assert broker is not None  # set before the middleware start
        keep = conf.broker_dead_letter_max or None
        older_than = conf.broker_dead_letter_expires or None
        await asyncio.sleep(self.first_after)
        while True:
            try:
                removed = await broker.purge_dead_letters(older_than=older_than, keep=keep)
            except NotImplementedError:
                worker.log.info(
                    "the broker cannot purge dead letters: broker_dead_letter_max and "
                    "broker_dead_letter_expires have no effect"
                )
                return
            except Exception:
                worker.log.exception("trimming the dead letters failed; trying again in a minute")
            else:
                if removed:
                    worker.log.info(
                        "deleted %d dead letter(s) beyond broker_dead_letter_max (%s) or older than "
                        "broker_dead_letter_expires (%s s)",
                        removed,
                        keep,
                        older_than,
                    )
            await asyncio.sleep(self.interval)

"""The kits the contract suites run on: one per technology, each a small subclass.

A kit makes brokers (or backends) for one test and does for the suite what the contract itself cannot:
store bytes as a message, stop a consumer's lease as a killed worker would, delete what the test left
behind. Where transports truly differ, the kit says so with a capability flag; the suite reads the
flag and never asks which technology it runs on.
"""

from __future__ import annotations

import abc
import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from celeriac.backends import Backend, create_backend
from celeriac.brokers import Broker, create_broker

__all__ = ["BackendKit", "BrokerKit", "Kit"]


class _Closable(Protocol):
    async def close(self) -> None: ...


class Kit:
    """What every kit shares: the stores a scenario opened are closed on its loop when it ends."""

    def __init__(self) -> None:
        self._open: list[_Closable] = []

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        """Run ``scenario`` on a fresh event loop, then close every store it opened, even on failure."""

        async def main() -> None:
            try:
                await scenario()
            finally:
                while self._open:
                    await self._open.pop().close()

        asyncio.run(main())

    @staticmethod
    def run_in_thread(scenario: Callable[[], Awaitable[None]]) -> threading.Thread:
        """Start ``scenario`` on a fresh event loop in another thread: another client of the same store.

        Returns:
            The started daemon thread; join it before asserting on what the scenario did.
        """

        async def main() -> None:
            await scenario()

        thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        thread.start()
        return thread


class BrokerKit(Kit, abc.ABC):
    """Brokers of one technology for one test, on queues of the test's own.

    Subclass it for a broker: implement ``put_raw``, ``freeze`` and ``clean``; override ``make`` when
    the broker is not found by its URL's scheme; set the capability flags that differ from the defaults.
    """

    #: True when the broker implements ``broadcast`` and ``subscribe``. When False, both must raise
    #: NotImplementedError saying the broker "cannot broadcast", as the Broker base class does.
    broadcasts: bool = False
    #: True when the server pushes messages to a consumer over its connection (AMQP's
    #: ``basic.consume``). The connection is then the lease: when it drops, the server gives its
    #: messages back at once rather than after ``lease_seconds``, and a message requeued while the
    #: consumer is open may be pushed straight back to it. False for brokers that are polled.
    pushes: bool = False
    #: True when the broker wraps each message in an envelope of its own (Celery's JSON envelope in a
    #: Redis list, a row in SQL): bytes stored by ``put_raw`` are then unreadable to it, and it delivers
    #: them with ``Delivery.error`` and no message. False where the transport carries headers and
    #: properties itself (AMQP): such bytes arrive as a message body with no headers, for the worker's
    #: decoder to judge.
    enveloped: bool = True
    #: True when the broker implements ``requeue_dead_letters`` and ``purge_dead_letters``. When False,
    #: both must raise NotImplementedError, as the Broker base class does.
    manages_dead_letters: bool = True

    def __init__(self, url: str, **defaults: Any) -> None:
        """A kit making brokers for ``url``.

        Args:
            url: the broker URL every broker of this kit gets.
            defaults: transport options every broker of this kit gets; a test's own options win.
        """
        super().__init__()
        self.url = url
        self.defaults = defaults
        #: Every queue name handed out by ``queue``: what ``clean`` deletes.
        self.queues: list[str] = []
        #: Every broker this kit made, open or closed.
        self.brokers: list[Broker] = []

    def queue(self) -> str:
        """A fresh queue name, remembered for ``clean``."""
        name = f"contract-{uuid.uuid4().hex[:12]}"
        self.queues.append(name)
        return name

    def broker(self, **options: Any) -> Broker:
        """A new, unconnected broker with ``options`` over the kit's defaults, closed when ``run`` ends."""
        broker = self.make({**self.defaults, **options})
        self._open.append(broker)
        self.brokers.append(broker)
        return broker

    def make(self, options: dict[str, Any]) -> Broker:
        """Construct a broker with these transport options; by default the registry's for ``url``."""
        return create_broker(self.url, options)

    @abc.abstractmethod
    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Store ``payload`` on ``queue`` as the broker stores a message, bypassing its encoding.

        What a corrupt or foreign producer leaves behind: the suite checks that such a message is
        delivered (with an error, where the broker keeps an envelope) and can be dead-lettered.
        """

    @abc.abstractmethod
    def freeze(self, broker: Broker) -> None:
        """Make ``broker`` stop keeping its leases, as when its worker process is killed or hangs.

        Nothing is given back and no goodbye is said: a polled broker's heartbeat just stops; where the
        connection is the lease (``pushes``), the connection is dropped without closing it.
        """

    @abc.abstractmethod
    def clean(self) -> None:
        """Delete what the test left in the store: its queues, dead letters and anything else.

        Called after the test, outside any event loop.
        """


class BackendKit(Kit, abc.ABC):
    """Result backends of one technology for one test, on task and group ids of the test's own.

    Subclass it for a backend: implement ``clean``; override ``make`` when the backend is not found
    by its URL's scheme or needs settings of the kit's own.
    """

    def __init__(self, url: str) -> None:
        """A kit making backends for ``url``."""
        super().__init__()
        self.url = url
        #: Every task id handed out by ``task_id``: what ``clean`` deletes.
        self.task_ids: list[str] = []
        #: Every group id handed out by ``group_id``: whose saved group and chord ``clean`` deletes.
        self.group_ids: list[str] = []

    def task_id(self) -> str:
        """A fresh task id, remembered for ``clean``."""
        task_id = str(uuid.uuid4())
        self.task_ids.append(task_id)
        return task_id

    def group_id(self) -> str:
        """A fresh group (or chord) id, remembered for ``clean``."""
        group_id = str(uuid.uuid4())
        self.group_ids.append(group_id)
        return group_id

    def backend(self, **settings: Any) -> Backend:
        """A new, unconnected backend, closed when ``run`` ends.

        Args:
            settings: ``create_backend``'s keyword arguments (``expires``, ``options``, ...).
        """
        backend = self.make(**settings)
        self._open.append(backend)
        return backend

    def make(self, **settings: Any) -> Backend:
        """Construct a backend with ``settings``; by default the registry's for ``url``."""
        return create_backend(self.url, **settings)

    @abc.abstractmethod
    def clean(self) -> None:
        """Delete the test's records, saved groups and chord counters from the store.

        Called after the test, outside any event loop.
        """

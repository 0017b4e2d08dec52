"""The memory broker's and backend's kits for the contract suites (``celeriac.testing.contract``)."""

from __future__ import annotations

import uuid
from typing import Any

from celeriac.brokers import Broker
from celeriac.memory import backend as memory_backend
from celeriac.memory import broker as memory_broker
from celeriac.testing.contract.kit import BackendKit, BrokerKit

__all__ = ["MemoryBackendKit", "MemoryBrokerKit"]


def _fresh_url() -> str:
    return f"memory://contract-{uuid.uuid4().hex[:12]}"


class MemoryBrokerKit(BrokerKit):
    """Memory brokers on a store of the kit's own, forgotten by ``clean``."""

    broadcasts = True

    def __init__(self, url: str | None = None, **defaults: Any) -> None:
        """A kit on the memory store ``url``, by default a fresh one; ``defaults`` as in ``BrokerKit``."""
        super().__init__(url or _fresh_url(), **defaults)

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Add ``payload`` to the store as a waiting message of priority 0."""
        assert isinstance(broker, memory_broker.MemoryBroker)
        store = broker._store
        with store.lock:
            store.add(queue, payload, 0, None)

    def freeze(self, broker: Broker) -> None:
        """Cancel the broker's lease heartbeat: its leases run out, as a dead process's do."""
        assert isinstance(broker, memory_broker.MemoryBroker)
        if broker._heartbeat is not None:
            broker._heartbeat.cancel()

    def clean(self) -> None:
        """Forget the kit's store."""
        memory_broker.reset(self.url)


class MemoryBackendKit(BackendKit):
    """Memory backends on a store of the kit's own, forgotten by ``clean``."""

    def __init__(self, url: str | None = None) -> None:
        """A kit on the memory store ``url``, by default a fresh one."""
        super().__init__(url or _fresh_url())

    def clean(self) -> None:
        """Forget the kit's store."""
        memory_backend.reset(self.url)

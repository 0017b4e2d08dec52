"""A third-party plug-in runs celeriac's exported contract suites: the whole test file it needs.

``ExampleBroker`` and ``ExampleBackend`` stand for a package's own broker and result backend (here the
memory ones under the scheme ``example://``), found through the entry point groups ``celeriac.brokers``
and ``celeriac.backends`` like any installed plug-in. Their kits say how to store raw bytes, freeze a
lease and clean up; the suites do the rest. Nothing here comes from celeriac's tests folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.backends import backend_class
from celeriac.brokers import Broker, broker_class
from celeriac.memory import backend as memory_backend
from celeriac.memory import broker as memory_broker
from celeriac.memory.testkit import MemoryBrokerKit
from celeriac.testing.contract import BackendContract, BackendKit, BrokerContract, BrokerKit, CleanupContract


class ExampleBroker(memory_broker.MemoryBroker):
    """The plug-in's broker: queues in this process's memory, behind ``example://<name>``."""

    schemes = ("example",)


class ExampleBackend(memory_backend.MemoryBackend):
    """The plug-in's result backend: records in this process's memory, behind ``example://<name>``."""

    schemes = ("example",)


class ExampleBrokerKit(BrokerKit):
    """Example brokers on a store of the kit's own; built on the memory broker, so the memory kit
    stores raw bytes and freezes leases for it."""

    broadcasts = True  # the memory broker broadcasts; pushes and enveloped keep their defaults

    def __init__(self) -> None:
        """A kit on a fresh store, made through the registry (the default ``make``)."""
        super().__init__(f"example://kit-{uuid.uuid4().hex[:12]}")
        self._memory = MemoryBrokerKit(self.url)

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Store ``payload`` as the memory broker stores a message."""
        await self._memory.put_raw(broker, queue, payload)

    def freeze(self, broker: Broker) -> None:
        """Stop the broker's lease heartbeat."""
        self._memory.freeze(broker)

    def clean(self) -> None:
        """Forget the kit's store."""
        memory_broker.reset(self.url)


class ExampleBackendKit(BackendKit):
    """Example backends on a store of the kit's own."""

    def __init__(self) -> None:
        """A kit on a fresh store, made through the registry (the default ``make``)."""
        super().__init__(f"example://kit-{uuid.uuid4().hex[:12]}")

    def clean(self) -> None:
        """Forget the kit's store."""
        memory_backend.reset(self.url)


@pytest.fixture(autouse=True)
def _installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for ``pip install`` of the plug-in: a distribution whose entry points name its classes."""
    dist = tmp_path / "celeriac_example-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: celeriac-example\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[celeriac.brokers]\nexample = {__name__}:ExampleBroker\n\n"
        f"[celeriac.backends]\nexample = {__name__}:ExampleBackend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_the_plugins_scheme_is_found_through_its_entry_points() -> None:
    assert broker_class("example://anything") is ExampleBroker
    assert backend_class("example://anything") is ExampleBackend


class TestExampleBroker(BrokerContract):
    """The broker suite, on the plug-in's broker."""

    @pytest.fixture
    def broker_kit(self) -> Iterator[ExampleBrokerKit]:
        """One kit per test, cleaned after it."""
        kit = ExampleBrokerKit()
        yield kit
        kit.clean()


class TestExampleBackend(BackendContract, CleanupContract):
    """The backend suite and the cleanup sweep, on the plug-in's backend."""

    @pytest.fixture
    def backend_kit(self) -> Iterator[ExampleBackendKit]:
        """One kit per test, cleaned after it."""
        kit = ExampleBackendKit()
        yield kit
        kit.clean()

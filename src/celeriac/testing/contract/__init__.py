"""The contract suites, exported: run celeriac's broker and backend behaviour tests on your own plug-in.

A broker or backend behind a URL scheme promises what ``celeriac.brokers.base.Broker`` and
``celeriac.backends.base.Backend`` say. These pytest suites check the promises, one test each; they
are the suites celeriac runs on its own memory, SQL, Redis and RabbitMQ stores. A plug-in's whole test
file is a kit and a class::

    import pytest
    from celeriac.testing.contract import BrokerContract, BrokerKit

    class MyKit(BrokerKit):
        broadcasts = True

        async def put_raw(self, broker, queue, payload): ...  # store bytes as a message
        def freeze(self, broker): ...  # stop its lease, as a killed worker's
        def clean(self): ...  # delete the test's queues

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def broker_kit(self):
            kit = MyKit("mybroker://localhost")
            yield kit
            kit.clean()

and likewise ``BackendKit`` with ``BackendContract`` (plus ``CleanupContract`` for a backend with a
``cleanup()`` sweep) and a ``backend_kit`` fixture; ``ScheduleStoreContract`` with a
``schedule_store_factory`` fixture for a beat schedule store; ``KeyStoreContract`` with a
``key_store_factory`` fixture for a store of unique tasks' keys. ``docs/plugins.md`` says more.

This package imports pytest; ``import celeriac`` never imports it.
"""

from __future__ import annotations

import pytest

# The suites' asserts are rewritten, so that a failing one shows its values; this must come before
# they are imported.
pytest.register_assert_rewrite(
    "celeriac.testing.contract.broker",
    "celeriac.testing.contract.backend",
    "celeriac.testing.contract.schedule_store",
    "celeriac.testing.contract.key_store",
)

from celeriac.testing.contract.backend import BackendContract, CleanupContract  # noqa: E402
from celeriac.testing.contract.broker import BrokerContract  # noqa: E402
from celeriac.testing.contract.key_store import KeyStoreContract  # noqa: E402
from celeriac.testing.contract.kit import BackendKit, BrokerKit, Kit  # noqa: E402
from celeriac.testing.contract.schedule_store import ScheduleStoreContract  # noqa: E402

__all__ = [
    "BackendContract",
    "BackendKit",
    "BrokerContract",
    "BrokerKit",
    "CleanupContract",
    "KeyStoreContract",
    "Kit",
    "ScheduleStoreContract",
]

"""The Broker contract (``celeriac.testing.contract.broker``) on every broker of this machine."""

from __future__ import annotations

from celeriac.testing.contract import BrokerContract


class TestBrokers(BrokerContract):
    """Memory, SQLite, PostgreSQL, MySQL/MariaDB, Redis (server, Cluster, Sentinel), RabbitMQ (classic and
    quorum queues): the ``broker_kit`` fixture."""

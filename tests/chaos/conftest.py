"""Fixtures of the chaos runs: a private SQLite broker (a test module may override ``chaos_env`` for
another, as the Redis one does), a ledger beside it, and workers that never outlive their test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import REPORT, Cluster, Ledger, new_seed, table
from tests.servers import rabbit_server, redis_server

# fixtures: private redis-server processes and RabbitMQ nodes (tests/servers.py)
__all__ = ["rabbit_server", "redis_server"]

LEASE_SECONDS = 2.0


@pytest.fixture
def seed() -> int:
    value = new_seed()
    print(f"CHAOS_SEED={value}")  # captured: shown with a failure, so the run can be replayed
    return value


@pytest.fixture
def chaos_env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "broker.sqlite3"
    settings = {
        "CELERIAC_BROKER_URL": f"sqlite:///{db}",
        "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{db}",
        "CELERIAC_BROKER_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    # Our own CELERIAC_* settings only: one left in the shell must not change what a run means.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    return {**inherited, **settings, "LEDGER_DB": str(tmp_path / "ledger.sqlite3"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def ledger(chaos_env: dict[str, str]) -> Iterator[Ledger]:
    book = Ledger.create(chaos_env["LEDGER_DB"])
    yield book
    book.close()


@pytest.fixture
def app(chaos_env: dict[str, str]) -> Iterator[Any]:
    from celeriac.config import Settings
    from tests.chaos import chaosapp

    chaosapp.app.conf = Settings(chaos_env)
    chaosapp.app._router = None
    chaosapp.app._brokers.clear()
    chaosapp.app._backends.clear()
    yield chaosapp.app
    chaosapp.app.close()


@pytest.fixture
def cluster(chaos_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    workers = Cluster(dict(chaos_env), tmp_path)
    try:
        yield workers
    finally:
        workers.stop_all()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.write_sep("=", "chaos runs (replay one with CHAOS_SEED=<seed>)")
        for line in table():
            terminalreporter.write_line(line)

"""The Backend contract (``celeriac.testing.contract.backend``) on every result backend of this machine."""

from __future__ import annotations

import pytest

from celeriac.testing.contract import BackendContract, CleanupContract
from tests.contract.conftest import SWEEPING_BACKENDS


class TestBackends(BackendContract):
    """Memory, SQLite, PostgreSQL, MySQL/MariaDB and Redis (the ``backend_kit`` fixture)."""


@pytest.mark.parametrize("backend_kit", SWEEPING_BACKENDS, indirect=True)
class TestBackendCleanup(CleanupContract):
    """The backends with a ``cleanup()`` sweep; Redis expires its records by itself (test_redis_backend)."""

"""The key store contract (``celeriac.testing.contract.KeyStoreContract``) on every store this machine
has: SQLite, PostgreSQL, MySQL/MariaDB, Redis (and a private Redis Cluster) and memory. Each test works
in a scope of its own and removes what it wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.testing.contract import KeyStoreContract
from celeriac.unique.store import KeyStore, create_key_store
from tests.contract.conftest import STORE_KINDS, forget_keys, store_url


class TestKeyStores(KeyStoreContract):
    @pytest.fixture(params=STORE_KINDS)
    def key_store_factory(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[Callable[[], KeyStore]]:
        kind = request.param
        url = store_url(kind, request, tmp_path)
        scope = f"contract-{uuid.uuid4().hex[:12]}"
        yield lambda: create_key_store(url, scope=scope)
        asyncio.run(forget_keys(kind, url, scope))

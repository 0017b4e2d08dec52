"""pytest fixtures for testing tasks, enabled by installing celeriac.

* ``celeriac_config``: a dict of settings for ``celeriac_app`` (override it in your conftest).
* ``celeriac_app``: a fresh app on ``memory://`` broker and backend, private to the test.
* ``celeriac_worker``: an in-process worker (threads pool) serving ``celeriac_app``.
* ``celeriac_eager_app``: ``celeriac_app`` with ``task_always_eager``: ``delay()`` runs the task at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

# pytest loads this plugin in every project that has celeriac installed: the app, the worker and the
# memory stores are imported by the fixtures that use them, not when the plugin loads.
if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.worker import Worker


@pytest.fixture
def celeriac_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def celeriac_app(celeriac_config: dict[str, Any]) -> Iterator[Celeriac]:
    from celeriac.app import Celeriac

    store = f"memory://test-{uuid.uuid4().hex[:12]}"
    app = Celeriac("test", broker=store, backend=store, **celeriac_config)
    yield app
    app.close()
    from celeriac.memory import backend as memory_backend
    from celeriac.memory import broker as memory_broker

    memory_broker.reset(store)  # the store lives as long as the process otherwise
    memory_backend.reset(store)


@pytest.fixture
def celeriac_worker(celeriac_app: Celeriac) -> Iterator[Worker]:
    from celeriac.testing import start_worker

    with start_worker(celeriac_app) as worker:
        yield worker


@pytest.fixture
def celeriac_eager_app(celeriac_app: Celeriac) -> Celeriac:
    celeriac_app.conf.task_always_eager = True
    celeriac_app.conf.task_eager_propagates = True
    return celeriac_app


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``chaos`` marker of ``celeriac.testing.contract`` (for ``--strict-markers``)."""
    config.addinivalue_line(
        "markers", "chaos: long runs of celeriac's contract suites (leave out: -m 'not chaos')"
    )

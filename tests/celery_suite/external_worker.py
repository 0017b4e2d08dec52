"""pytest plugin for Celery's integration suite driven against a worker in another process.

Loaded with ``-p external_worker`` by the celery-suite harness, in the suite's own venv (real Celery,
no celeriac). With ``NO_WORKER=1`` Celery's ``celery_session_worker`` fixture starts nothing and also
yields nothing, which pytest reports as an error in every test that uses it; this plugin puts a fixture
in its place that yields ``None`` (the worker runs elsewhere) before Celery's conftest imports it.
Plugins named with ``-p`` load before any conftest, so the conftest's ``from celery.contrib.pytest import
celery_session_worker`` picks this one up.

It also caps each test's time at ``--timeout``: Celery's ``flaky`` mark gives its tests 300 s, which a
worker that never finishes a workflow would spend on each of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import celery.contrib.pytest as celery_pytest
import pytest


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Any) -> Iterator[None]:
    """The session worker: none in this process, the harness started one that consumes the broker."""
    yield None


celery_pytest.celery_session_worker = celery_session_worker  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put a ``timeout`` mark of at most ``--timeout`` seconds first on every test marked longer."""
    cap = config.getoption("timeout", None)
    if not cap:
        return
    for item in items:
        mark = item.get_closest_marker("timeout")
        asked = mark.kwargs.get("timeout", mark.args[0] if mark.args else None) if mark else None
        if asked is not None and float(asked) > float(cap):
            item.add_marker(pytest.mark.timeout(timeout=float(cap)), append=False)

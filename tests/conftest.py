"""Fixtures every test folder shares: moto's SQS server, started once per session when a test asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import moto_sqs


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """moto's SQS server (a real SQS API on a loopback port) for the session: its endpoint URL."""
    with moto_sqs() as endpoint:
        yield endpoint

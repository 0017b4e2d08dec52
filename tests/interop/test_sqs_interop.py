"""celeriac and the real Celery 5.7 on one SQS (moto's server), results on Redis, both ways.

One way, a Celery client (kombu's SQS transport, boto3 and pycurl) sends to a celeriac worker and reads
the results; the other way, a celeriac client sends to a ``celery worker`` subprocess and reads its
results. Values, task errors and countdowns cross: Celery sends a countdown at once with its ``eta``
header (our worker parks it in the broker until due); ours goes with ``DelaySeconds`` and the header,
which a Celery worker honours. Queues carry one prefix per module, deleted afterwards.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery  # type: ignore[import-untyped]

from celeriac import Celeriac
from celeriac.redis.testkit import RedisBackendKit
from celeriac.sqs.testkit import SQSBrokerKit
from celeriac.testing import start_worker
from tests.interop import celeriac_rabbit_app, celery_sqs_app
from tests.interop.celery_rabbit_app import ADD, FAIL
from tests.interop.conftest import close_celery, require_redis
from tests.interop.redis_fleet import FleetProcess

pytestmark = [
    # Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

RESULTS = "redis://127.0.0.1:6379/13"


class Space:
    """One module's SQS queues and Redis result keys: a prefix each, cleaned at the end."""

    def __init__(self, endpoint: str) -> None:
        self.url = "sqs://test:test@" + endpoint.removeprefix("http://")
        self.prefix = f"i{uuid.uuid4().hex[:8]}-"
        self.results = RedisBackendKit(RESULTS)
        self.settings = celery_sqs_app.settings(self.prefix, self.results.prefix)
        self.kit = SQSBrokerKit(self.url, **self.settings["broker_transport_options"])

    def celery(self) -> Celery:
        return celery_sqs_app.build(self.url, self.prefix, RESULTS, self.results.prefix)

    def celeriac(self, queue: str) -> Celeriac:
        app = celeriac_rabbit_app.build(RESULTS, task_default_queue=queue, **self.settings)
        app.conf.broker_url = self.url
        return app

    def clean(self) -> None:
        self.kit.clean()
        self.results.clean()


@pytest.fixture(scope="module")
def space(sqs_endpoint: str) -> Iterator[Space]:
    require_redis()
    space = Space(sqs_endpoint)
    yield space
    space.clean()


def test_a_celery_client_sends_to_a_celeriac_worker(space: Space) -> None:
    queue = f"to-celeriac-{uuid.uuid4().hex[:6]}"
    ours = space.celeriac(queue)
    client = space.celery()
    client.conf.task_default_queue = queue
    try:
        with start_worker(ours, concurrency=2):
            sums = [client.send_task(ADD, (n, n)) for n in range(5)]
            failed = client.send_task(FAIL, ("ValueError", "from celery"))
            sent = time.time()
            later = client.send_task(ADD, (1, 1), countdown=2)
            assert [r.get(timeout=20) for r in sums] == [{"sum": 2 * n, "kind": "celeriac"} for n in range(5)]
            with pytest.raises(ValueError, match="from celery"):
                failed.get(timeout=20)
            assert later.get(timeout=20)["sum"] == 2 and time.time() - sent >= 2.0
    finally:
        close_celery(client)
        ours.close()


@pytest.fixture(scope="module")
def celery_worker(space: Space, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``celery worker`` (threads, 2) on a queue of its own; yields the queue."""
    queue = f"to-celery-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "INTEROP_SQS_URL": space.url,
        "INTEROP_SQS_PREFIX": space.prefix,
        "INTEROP_RESULTS": RESULTS,
        "INTEROP_RESULTS_PREFIX": space.results.prefix,
    }
    log = Path(tmp_path_factory.mktemp("sqs-interop")) / "celery.log"
    args = [
        sys.executable, "-m", "celery", "-A", "tests.interop.celery_sqs_app", "worker",
        "-P", "threads", "-c", "2", "-Q", queue, "-n", f"celery-{uuid.uuid4().hex[:6]}@interop",
        "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info",
    ]  # fmt: skip
    worker = FleetProcess("celery", args, log, env).start()
    try:
        yield queue
    finally:
        worker.stop()


def test_a_celeriac_client_sends_to_a_celery_worker(space: Space, celery_worker: str) -> None:
    client = space.celeriac(celery_worker)
    try:
        sums = [client.send_task(ADD, (n, 1)) for n in range(5)]
        failed = client.send_task(FAIL, ("ValueError", "from celeriac"))
        sent = time.time()
        later = client.send_task(ADD, (2, 2), countdown=2)
        assert [r.get(timeout=30) for r in sums] == [{"sum": n + 1, "kind": "celery"} for n in range(5)]
        with pytest.raises(ValueError, match="from celeriac"):
            failed.get(timeout=30)
        assert later.get(timeout=30) == {"sum": 4, "kind": "celery"} and time.time() - sent >= 2.0
    finally:
        client.close()

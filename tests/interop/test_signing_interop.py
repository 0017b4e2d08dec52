"""Signed messages between celeriac and the real Celery (``app.setup_security()``), on the local Redis.

Celery's side (a worker, and a client that sends one task) runs in subprocesses, since its
``setup_security`` changes kombu's serializers for the whole process; celeriac's runs here. Both use
the same key, certificate and store, written by the ``signing_dir`` fixture.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.brokers import create_broker
from celeriac.protocol import encode_task, serializers
from celeriac.protocol.message import Message, TaskCall
from celeriac.testing import start_worker
from tests.interop import celeriac_redis_app
from tests.interop.conftest import require_redis
from tests.interop.redis_fleet import ROOT, WAIT, FleetProcess, Space
from tests.interop.redis_fleet_tasks import WORK
from tests.signing_keys import make_identity, signing_settings

REDIS = "redis://127.0.0.1:6379/13"
pytestmark = [pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")]


@pytest.fixture
def signing_dir(tmp_path: Path) -> Path:
    alice = make_identity(tmp_path, "alice")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "alice.pem").write_bytes(alice.cert.read_bytes())
    return tmp_path


@pytest.fixture
def space() -> Iterator[Space]:
    require_redis()
    space = Space(REDIS)
    yield space
    space.clean()


@pytest.fixture
def ours(signing_dir: Path) -> Iterator[Celeriac]:
    """celeriac signing with the same identity, in this process; the unset ``auth`` is put back after."""
    saved = serializers._by_name["auth"]
    app = celeriac_redis_app.build(REDIS, **signing_settings(signing_dir))
    app.setup_security()
    yield app
    app.close()
    serializers.register("auth", saved.content_type, saved.dumps, saved.loads)


def env_for(signing_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "CELERY_"))}
    return env | {"INTEROP_REDIS_URL": REDIS, "SIGNING_DIR": str(signing_dir)}


@pytest.fixture
def celery_worker(signing_dir: Path, space: Space) -> Iterator[tuple[FleetProcess, str]]:
    queue = space.name("celery")
    proc = FleetProcess.celery(
        [queue], signing_dir / "celery.log", env_for(signing_dir), app="tests.interop.signing_celery_app"
    )
    try:
        yield proc.start(), queue
    finally:
        proc.stop()


def publish(queue: str, message: Message) -> None:
    async def put() -> None:
        broker = create_broker(REDIS)
        try:
            await broker.publish(queue, message)
        finally:
            await broker.close()

    asyncio.run(put())


def tampered(ours: Celeriac, ledger: str, n: int, forged: int) -> Message:
    """A message signed by ``ours`` for ``work(ledger, n)`` whose body then says ``forged``."""
    message = encode_task(TaskCall(id=f"{ledger}-t", name=WORK, args=[ledger, n]), serializer="auth")
    raw = base64.b64decode(message.body)
    old, new = f'"{ledger}",{n}]'.encode(), f'"{ledger}",{forged}]'.encode()
    assert raw.count(old) == 1
    message.body = base64.b64encode(raw.replace(old, new))
    return message


def test_a_celery_signed_message_runs_on_our_worker(signing_dir: Path, space: Space, ours: Celeriac) -> None:
    queue, ledger = space.name("ours"), space.name("ledger")
    sent = subprocess.run(
        [sys.executable, "-m", "tests.interop.signing_celery_app", queue, ledger, "7"],
        cwd=ROOT, env=env_for(signing_dir), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    task_id = space.track(sent.stdout.strip().splitlines()[-1])
    with start_worker(ours, queues=[queue]):
        assert ours.AsyncResult(task_id).get(timeout=WAIT) == 7
    assert [entry["kind"] for entry in space.ledger(ledger)] == ["celeriac"]


def test_our_signed_message_runs_on_a_celery_worker(
    ours: Celeriac, space: Space, celery_worker: tuple[FleetProcess, str]
) -> None:
    proc, queue = celery_worker
    ledger = space.name("ledger")
    result = ours.send_task(WORK, (ledger, 5), queue=queue)
    space.track(result.id)
    assert result.get(timeout=WAIT) == 5, proc.text()[-3000:]
    assert [entry["kind"] for entry in space.ledger(ledger)] == ["celery"]


def test_a_tampered_message_is_refused_by_both(
    ours: Celeriac, space: Space, celery_worker: tuple[FleetProcess, str]
) -> None:
    proc, celery_queue = celery_worker
    our_queue, ledger = space.name("ours"), space.name("ledger")
    publish(celery_queue, tampered(ours, ledger, 1, 1000))
    publish(our_queue, tampered(ours, ledger, 2, 2000))
    proc.wait_for_log("Bad signature", timeout=WAIT)
    with start_worker(ours, queues=[our_queue]):
        deadline = time.monotonic() + WAIT
        while not (dead := ours.dead_letters(our_queue)) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(dead) == 1
    assert dead[0].reason.startswith("unverified signed message (not decoded): bad signature")
    assert space.ledger(ledger) == []  # neither ran it

"""Fault injection on real workers and a private RabbitMQ node (``tests.servers.RabbitServer``).

The generic scenarios (``scenarios.py``: worker SIGKILL, poison tasks) run as on Redis and SQLite, plus
what a RabbitMQ deployment sees: the RabbitMQ application stopped and started under the workers
(``rabbitmqctl stop_app``/``start_app``: every connection is closed, the port refuses new ones) and the
node crashing (SIGKILL) and booting again. Persistent messages on durable queues, published with
confirms, must all run. Each test gets a vhost of its own on one node per module (a node takes about
5 s to start); results go to a private Redis. Smoke sizes run in the default suite; the full ones with
``./dev chaos``, on classic and on quorum queues.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from tests.chaos import scenarios
from tests.chaos.harness import Cluster, Ledger, Nemesis, Producer, check, wait_until
from tests.chaos.scenarios import FULL, QUEUE, Size, assert_accounted, row, start_workers, statuses, steps
from tests.servers import RabbitServer, RedisServer, group_alive, require_rabbit_server

#: RabbitMQ requeues a dead connection's unacked messages as soon as it sees the socket close (at once
#: for a killed process); the margin covers a busy machine.
REQUEUE_SECONDS = 2.0
WEDGE_SECONDS = 5.0
#: How far back before a crash of the node acks may be forgotten on a classic queue.
ACK_WINDOW = 2.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    require_rabbit_server()
    server = RabbitServer(tmp_path_factory.mktemp("rabbit"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def vhost(node: RabbitServer) -> Iterator[str]:
    """A fresh vhost on the module's node, deleted after the test (the node is brought back first if a
    failed test left it down)."""
    if not node.running():
        node.start()
    elif not node.ping():
        node.start_app()
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    node.ctl("add_vhost", name)
    node.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    with contextlib.suppress(RuntimeError):
        node.ctl("delete_vhost", name)


@pytest.fixture
def queue_type() -> str:
    return "classic"  # a test parametrizes it to run on quorum queues too


@pytest.fixture
def chaos_env(
    tmp_path: Path,
    node: RabbitServer,
    vhost: str,
    queue_type: str,
    redis_server: Callable[..., RedisServer],
) -> dict[str, str]:
    """Overrides the SQLite environment of ``conftest.py``: the broker on the node (this test's vhost),
    results on a private Redis."""
    settings = {
        "CELERIAC_BROKER_URL": node.url(vhost),
        "CELERIAC_RESULT_BACKEND": redis_server().url(),
        "CELERIAC_WORKER_WEDGE_TIMEOUT": str(WEDGE_SECONDS),
    }
    if queue_type != "classic":  # the default: left unset, as most deployments do
        settings["CELERIAC_TASK_DEFAULT_QUEUE_TYPE"] = queue_type
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    return {**inherited, **settings, "LEDGER_DB": str(tmp_path / "ledger.sqlite3"), "PYTHONUNBUFFERED": "1"}


def on_rabbit(node: RabbitServer, vhost: str, queue_type: str) -> scenarios.Broker:
    def backlog() -> int:
        ready, unacked = node.queues(vhost).get(QUEUE, (0, 0))
        return ready + unacked

    return scenarios.Broker(f"rabbitmq {queue_type}", REQUEUE_SECONDS, backlog)


# -- 1. worker SIGKILL ----------------------------------------------------------------------------------

SMOKE = Size(tasks=200, rate=50, concurrency=2, max_kills=1)
_FULL = [pytest.mark.chaos, pytest.mark.timeout(300)]


@pytest.mark.parametrize(
    ("size", "queue_type"),
    [
        pytest.param(SMOKE, "classic", id="smoke"),
        pytest.param(FULL, "classic", id="full-classic", marks=_FULL),
        pytest.param(FULL, "quorum", id="full-quorum", marks=_FULL),
    ],
)
def test_worker_sigkill_every_2s_loses_nothing(
    size: Size,
    queue_type: str,
    seed: int,
    app: Any,
    ledger: Ledger,
    cluster: Cluster,
    node: RabbitServer,
    vhost: str,
) -> None:
    scenarios.worker_kills(size, seed, app, ledger, cluster, on_rabbit(node, vhost, queue_type))


# -- 3. a poison task --------------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(180)
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_poison_task_is_dead_lettered_after_max_deliveries(
    queue_type: str,
    seed: int,
    app: Any,
    ledger: Ledger,
    cluster: Cluster,
    node: RabbitServer,
    vhost: str,
) -> None:
    scenarios.poison_tasks(seed, app, ledger, cluster, on_rabbit(node, vhost, queue_type))


# -- 6. RabbitMQ goes away and comes back -------------------------------------------------------------------


@dataclass(frozen=True)
class Outages:
    tasks: int
    rate: float
    restarts: int
    downtime: tuple[float, float]  # seconds down, drawn from this range
    how: str  # "stop_app": the application stops, the node stays; "kill": the node is SIGKILLed


APP_SMOKE = Outages(tasks=100, rate=20, restarts=1, downtime=(1.5, 1.5), how="stop_app")
APP_FULL = Outages(tasks=2000, rate=50, restarts=3, downtime=(2.0, 5.0), how="stop_app")
CRASH_FULL = Outages(tasks=2000, rate=50, restarts=3, downtime=(1.0, 3.0), how="kill")


def outage(node: RabbitServer, size: Outages, down: float) -> None:
    if size.how == "stop_app":
        node.stop_app()
        time.sleep(down)
        node.start_app()
    else:
        node.restart(downtime=down, kill=True)


@pytest.mark.parametrize(
    ("size", "queue_type"),
    [
        pytest.param(APP_SMOKE, "classic", id="stop_app-smoke"),
        pytest.param(APP_FULL, "classic", id="stop_app-full-classic", marks=_FULL),
        pytest.param(APP_FULL, "quorum", id="stop_app-full-quorum", marks=_FULL),
        pytest.param(CRASH_FULL, "classic", id="crash-full-classic", marks=_FULL),
        pytest.param(CRASH_FULL, "quorum", id="crash-full-quorum", marks=_FULL),
    ],
)
def test_rabbitmq_outage_mid_run_loses_nothing(
    size: Outages,
    queue_type: str,
    seed: int,
    app: Any,
    ledger: Ledger,
    cluster: Cluster,
    node: RabbitServer,
    vhost: str,
) -> None:
    """Take RabbitMQ away mid-run (``stop_app``, or a SIGKILL of the node), keep it away a few seconds,
    bring it back. Workers and the publisher wait it out and reconnect; every publish RabbitMQ confirmed
    runs, and the queue ends empty."""
    began, nemesis = time.monotonic(), Nemesis(seed)
    concurrency = 2
    start_workers(cluster, concurrency)
    recoveries: list[float] = []
    spans: list[tuple[float, float]] = []  # when each outage began and ended
    pending: list[float] = []  # ends of the outages after which the producer still had publishes to make
    with Producer(ledger, steps(nemesis, size.tasks), size.rate) as producer:
        spacing = size.tasks / size.rate / (size.restarts + 1)
        for _ in range(size.restarts):
            time.sleep(nemesis.rng.uniform(0.4, 0.6) * spacing)
            down = nemesis.rng.uniform(*size.downtime)
            start = time.time()
            outage(node, size, down)
            back = nemesis.did(size.how, f"down {down:.1f}s")
            spans.append((start, back))
            if producer.sent < size.tasks:
                pending.append(back)
            resumed: list[float] = []

            def ran_again(since: float = back, found: list[float] = resumed) -> bool:
                first = finished_since(ledger, since)
                found[:] = [] if first is None else [first - since]
                return bool(found)

            assert wait_until(ran_again, 60, 0.05), f"nothing ran after the {size.how}"
            recoveries += resumed
        producer.join(size.tasks / size.rate + 60)
    published_after = ledger.confirmed_since(max(pending)) if pending else None
    broker = on_rabbit(node, vhost, queue_type)
    unsettled = scenarios.settle(app, ledger, broker, timeout=REQUEUE_SECONDS + 60)
    held = node.queues(vhost) if unsettled else {}
    restarts = nemesis.count(size.how)
    wait_until(lambda: all(said_recovered(w.log_text()) for w in cluster), 10, 0.1)
    alive = [(w.name, w.alive(), w.starts) for w in cluster]
    logs = {w.name: w.log_text() for w in cluster}
    cluster.terminate_all()
    verdict = check(ledger)
    # In flight when the connections died: each worker's running tasks (RabbitMQ requeued them, their
    # acks went nowhere), and a publish whose confirm was lost may have been retried.
    bound = restarts * (2 * concurrency + 1)
    # A classic queue writes acks to disk lazily: a crash forgets the acks of its last moments and
    # RabbitMQ delivers those messages again (about 1 s of finished tasks, measured).
    window = ACK_WINDOW if size.how == "kill" and queue_type == "classic" else 0.5
    if window == ACK_WINDOW:
        bound += sum(finished_between(ledger, start - window, start) for start, _ in spans)
    # Every duplicate ran first around an outage (in flight, or acked just before a crash), except
    # for a publish whose confirm was lost and which was sent again: at most one per outage.
    stray = unexplained_duplicates(ledger, spans, window)
    noticed = sum(1 for text in logs.values() if "could not fetch from" in text)
    summary = row(
        f"rabbitmq {queue_type}: 6 {size.how} + start ({'smoke' if size is APP_SMOKE else 'full'})",
        seed,
        verdict,
        f"{restarts}x {size.how}, down {', '.join(e[2].split()[1] for e in nemesis.events)}",
        began,
        dead=len(scenarios.dead_letters(app)),
        recovery=f"first task <={max(recoveries):.1f}s after restart",
        notes=f"dup bound {bound}, {len(stray)} away from outages; unknown {verdict.unknown}; "
        f"{noticed}/2 workers logged the outage; "
        f"{published_after} confirmed after the last outage the producer saw {unsettled}".strip(),
    )
    assert not unsettled, f"{summary}; queues {held}"
    assert alive == [("w1", True, 1), ("w2", True, 1)], f"a worker exited; {summary}"
    assert published_after != 0, f"the producer confirmed nothing after an outage; {summary}"
    assert_accounted(verdict, summary, max_dup=bound)
    assert len(stray) <= restarts, f"duplicates that first ran away from any outage: {stray[:5]}; {summary}"
    assert statuses(app, ledger.submits("step")) == {states.SUCCESS: verdict.submitted}, summary
    for name, text in logs.items():
        assert said_recovered(text), f"{name} never said the broker answers again; {summary}"
        assert "guest:guest@" not in text, f"{name} logged the broker's password"
    assert max(recoveries) <= 15, summary


def said_recovered(log: str) -> bool:
    """Whether every failed fetch in ``log`` was followed by the line that says the broker is back."""
    failed = log.rfind("could not fetch from ")
    return failed < 0 or log.find(" answers again", failed) > failed


def unexplained_duplicates(ledger: Ledger, spans: list[tuple[float, float]], window: float) -> list[str]:
    """Tasks that finished twice although their first run finished neither within ``window`` seconds
    before an outage began nor during one."""
    first: dict[str, float] = {}
    twice: set[str] = set()
    for run in ledger.runs():
        if run.finished_at is None:
            continue
        if run.task_id in first:
            twice.add(run.task_id)
        else:
            first[run.task_id] = run.finished_at
    return sorted(
        task_id
        for task_id in twice
        if not any(start - window <= first[task_id] <= end for start, end in spans)
    )


def finished_between(ledger: Ledger, start: float, end: float) -> int:
    """How many runs finished between ``start`` and ``end``."""
    return sum(1 for r in ledger.runs() if r.finished_at is not None and start <= r.finished_at <= end)


def finished_since(ledger: Ledger, when: float) -> float | None:
    """When the first run that started after ``when`` finished (a fetch made after the outage)."""
    done = [r.finished_at for r in ledger.runs() if r.started_at >= when and r.finished_at is not None]
    return min(done) if done else None


# -- the private node itself --------------------------------------------------------------------------


def test_private_node_keeps_confirmed_messages_through_a_crash_and_leaves_nothing_behind(
    rabbit_server: Callable[..., RabbitServer],
) -> None:
    """What the runs above rely on: ``RabbitServer`` is a node of its own, persistent messages a publish
    confirmed survive its SIGKILL, ``stop_app`` closes the port and ``close`` ends every process it
    started and removes its folder."""
    import asyncio

    from pamqp.commands import Basic

    from celeriac.amqp.client import connect_plain

    async def publish(url: str, count: int) -> None:
        connection = await connect_plain(url, {}, what="the test")
        channel = await connection.channel(publisher_confirms=True)
        queues = (("classic", {}), ("quorum", {"x-queue-type": "quorum"}))
        for name, arguments in queues:
            await channel.queue_declare(name, durable=True, arguments=arguments)
        # Seen on 3.10.8: a quorum queue declared less than about a second before the node is SIGKILLed
        # comes back empty and answers no basic.get; one that existed for a while keeps every message
        # a confirm covered, up to the instant of the kill.
        await asyncio.sleep(3)
        persistent = Basic.Properties(delivery_mode=2)
        for name, _ in queues:
            for n in range(count):
                await channel.basic_publish(str(n).encode(), routing_key=name, properties=persistent)
        await connection.close()

    async def ready(url: str) -> dict[str, int]:
        connection = await connect_plain(url, {}, what="the test")
        channel = await connection.channel()
        found = {}
        for name in ("classic", "quorum"):
            declared = await channel.queue_declare(name, passive=True)
            found[name] = declared.message_count or 0
        await connection.close()
        return found

    server = rabbit_server()
    assert server.node.startswith("celeriac-test-") and server.port != 5672
    asyncio.run(publish(server.url(), 25))
    down = server.restart(kill=True)
    # A quorum queue answers for a moment with 0 while it replays its log after the node's start.
    expected = {"classic": 25, "quorum": 25}
    assert wait_until(lambda: asyncio.run(ready(server.url())) == expected, 30, 0.5), asyncio.run(
        ready(server.url())
    )
    server.stop_app()
    assert not server.ping() and server.running()
    server.start_app()
    assert asyncio.run(ready(server.url())) == {"classic": 25, "quorum": 25}
    group, folder = server.pid_group, server.folder
    server.close()
    assert not group_alive(group) and not folder.exists()
    print(f"node start {server.start_seconds[0]:.1f}s, crash + restart {down:.1f}s")

"""The event dispatcher: Celery's envelope, task events in ``task.multi`` batches (what gathered meanwhile,
up to ``max_batch``), worker events alone and in order, bounded queues, and a broker that cannot
broadcast switching it off."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from celeriac.brokers.base import Broker
from celeriac.events.dispatcher import EventDispatcher, utcoffset
from celeriac.memory.broker import MemoryBroker
from celeriac.protocol.message import Message


class Recording(MemoryBroker):
    """A memory broker that also records what it broadcasts, and can be made slow."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[tuple[str, str, Message]] = []
        self.delay = 0.0

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.sent.append((exchange, routing_key, message))
        await super().broadcast(exchange, message, routing_key=routing_key)


def bodies(broker: Recording) -> list[tuple[str, Any]]:
    return [(key, json.loads(message.body)) for _, key, message in broker.sent]


def test_worker_events_go_alone_and_task_events_in_batches_in_order() -> None:
    async def main() -> Recording:
        broker = Recording("memory://dispatcher-order")
        dispatcher = EventDispatcher(broker, "w@h", pid=42, max_batch=24)
        dispatcher.send("worker-online", freq=2.0)
        for n in range(30):
            dispatcher.send_batched("task-received", uuid=str(n))
        dispatcher.send("worker-heartbeat", freq=2.0)
        dispatcher.send_json(dispatcher.head("task-started") + ',"uuid":"0"}')
        await dispatcher.aclose()
        return broker

    broker = asyncio.run(main())
    sent = bodies(broker)
    assert [key for key, _ in sent] == [
        "worker.online",
        "task.multi",
        "task.multi",
        "worker.heartbeat",
        "task.multi",
    ]
    assert [len(body) for key, body in sent if key == "task.multi"] == [24, 6, 1]
    online = sent[0][1]
    assert online["type"] == "worker-online" and online["hostname"] == "w@h" and online["pid"] == 42
    assert online["utcoffset"] == utcoffset() and abs(online["timestamp"] - time.time()) < 5
    written = sent[4][1][0]
    assert set(written) == {"hostname", "utcoffset", "pid", "clock", "timestamp", "type", "uuid"}
    assert (written["type"], written["uuid"], written["pid"], written["hostname"]) == (
        "task-started",
        "0",
        42,
        "w@h",
    )
    clocks = [online["clock"], *(e["clock"] for e in sent[1][1]), sent[3][1]["clock"], written["clock"]]
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)
    _, _, message = broker.sent[0]
    assert message.headers == {"hostname": "w@h"} and message.properties["delivery_mode"] == 1
    assert all(exchange == "celeryev" for exchange, _, _ in broker.sent)


def test_events_that_gather_while_one_batch_travels_go_in_the_next() -> None:
    async def main() -> Recording:
        broker = Recording("memory://dispatcher-gather")
        broker.delay = 0.05
        dispatcher = EventDispatcher(broker, "w@h", linger=0)
        dispatcher.send_batched("task-received", uuid="first")
        await asyncio.sleep(0.01)  # the first batch is on its way
        for n in range(10):
            dispatcher.send_batched("task-started", uuid=str(n))
            await asyncio.sleep(0)
        await dispatcher.flush()
        await dispatcher.aclose()
        return broker

    sent = bodies(asyncio.run(main()))
    assert [len(body) for _, body in sent] == [1, 10]


def test_task_events_linger_for_company_but_worker_events_and_flush_do_not_wait() -> None:
    async def main() -> tuple[Recording, list[int]]:
        broker = Recording("memory://dispatcher-linger")
        dispatcher = EventDispatcher(broker, "w@h", linger=0.3)
        seen: list[int] = []
        for n in range(5):  # one turn of the loop apart each: a busy worker's events
            dispatcher.send_batched("task-received", uuid=str(n))
            await asyncio.sleep(0.01)
        seen.append(len(broker.sent))  # still lingering
        await asyncio.sleep(0.4)
        seen.append(len(broker.sent))  # gone, as one batch
        dispatcher.send_batched("task-started", uuid="0")
        dispatcher.send("worker-heartbeat", freq=2.0)
        await asyncio.sleep(0.05)
        seen.append(len(broker.sent))  # a worker event hurries what waits before it
        dispatcher.send_batched("task-succeeded", uuid="0")
        started = time.monotonic()
        await dispatcher.flush()
        seen.append(round(time.monotonic() - started, 1) < 0.2)
        await dispatcher.aclose()
        return broker, seen

    broker, seen = asyncio.run(main())
    assert seen == [0, 1, 3, True]
    assert [len(body) if key == "task.multi" else key for key, body in bodies(broker)] == [
        5,
        1,
        "worker.heartbeat",
        1,
    ]


def test_what_waits_is_bounded_and_the_oldest_events_go_first() -> None:
    async def main() -> tuple[Recording, EventDispatcher]:
        broker = Recording("memory://dispatcher-bounded")
        broker.delay = 0.05
        dispatcher = EventDispatcher(broker, "w@h", max_pending=10, max_batch=5, linger=0)
        dispatcher.send_batched("task-received", uuid="first")
        await asyncio.sleep(0.01)  # on its way: the sender is busy
        for n in range(20):
            dispatcher.send_batched("task-started", uuid=str(n))
        await dispatcher.aclose()
        return broker, dispatcher

    broker, dispatcher = asyncio.run(main())
    sent = bodies(broker)
    assert dispatcher.dropped == 10
    assert [[e["uuid"] for e in body] for _, body in sent] == [
        ["first"],
        [str(n) for n in range(10, 15)],
        [str(n) for n in range(15, 20)],
    ]


def test_a_broker_that_cannot_broadcast_switches_events_off(caplog: pytest.LogCaptureFixture) -> None:
    async def main(broker: Broker) -> EventDispatcher:
        dispatcher = EventDispatcher(broker, "w@h")
        dispatcher.send("worker-online")
        await dispatcher.flush()
        dispatcher.send_batched("task-received", uuid="x")
        await dispatcher.aclose()
        return dispatcher

    class Mute(Recording):
        async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
            raise NotImplementedError("Mute cannot broadcast yet")

    dispatcher = asyncio.run(main(Mute("memory://dispatcher-mute")))
    assert dispatcher.dead and dispatcher.sent == 0
    assert [r.getMessage() for r in caplog.records] == ["w@h sends no events: Mute cannot broadcast yet"]

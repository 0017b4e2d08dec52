"""Celery's broadcasts reach celeriac's subscriptions on the same Redis.

Celery 5.7's ``app.control.broadcast`` publishes a remote-control command on the fanout exchange
``celery.pidbox`` (kombu's channel ``/<db>.celery.pidbox``); a celeriac ``subscribe("celery.pidbox")``
receives it as a message whose body is Celery's command. This is what the remote-control issue will
build on.
"""

from __future__ import annotations

import asyncio
import json
import threading

from celery import Celery  # type: ignore[import-untyped]

from celeriac.redis.broker import RedisBroker
from tests.interop.conftest import close_celery, require_redis

REDIS = "redis://127.0.0.1:6379/13"


def test_celerys_control_broadcast_reaches_our_subscription() -> None:
    require_redis()
    celery_app = Celery("interop_broadcast", broker=REDIS, set_as_current=False)
    received: list[dict[str, object]] = []
    listening = threading.Event()

    async def listen() -> None:
        broker = RedisBroker(REDIS)
        try:
            async with broker.subscribe("celery.pidbox") as messages:
                listening.set()
                message = await asyncio.wait_for(anext(messages), 10)
                received.append(json.loads(message.body))
        finally:
            await broker.close()

    listener = threading.Thread(target=lambda: asyncio.run(listen()))
    listener.start()
    try:
        assert listening.wait(10)
        celery_app.control.broadcast("ping", arguments={}, reply=False, destination=["w1@interop"])
        listener.join(15)
    finally:
        close_celery(celery_app)
    assert not listener.is_alive()
    [command] = received
    assert command["method"] == "ping"
    assert command["destination"] == ["w1@interop"]

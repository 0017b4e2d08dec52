"""A Celery 5.7 client and ours, with the same task_routes and task_queues, send to the same place.

The routes name an exchange and routing key and no queue; the queues come from kombu ``Queue`` objects.
Each client sends one message; both land on the queue the exchange binds, through that exchange, with
that routing key.
"""

from __future__ import annotations

import asyncio

from celery import Celery  # type: ignore[import-untyped]
from kombu import Exchange, Queue

from celeriac import Celeriac
from tests.contract.test_rpc_backend import AMQP
from tests.integration.test_amqp_routing import Topology
from tests.integration.test_amqp_routing import topology as topology  # the fixture
from tests.interop.conftest import close_celery


def test_celery_and_celeriac_route_a_task_to_the_same_queue(topology: Topology) -> None:
    media, videos = topology.exchange("media"), topology.queue("videos")
    settings = {
        "task_default_queue": f"{videos}-default",  # never declared: nothing goes there
        "task_queues": [Queue(videos, Exchange(media, type="topic"), routing_key="media.video.#")],
        "task_routes": {"media.*": {"exchange": media, "routing_key": "media.video.hd"}},
    }
    ours = Celeriac("routing", broker=AMQP, backend="disabled://", **settings)
    theirs = Celery("routing", broker=AMQP, set_as_current=False)
    theirs.conf.update(settings)
    try:
        # Ours first: Celery declares no queue for a route without one, so the binding must exist.
        ours.send_task("media.encode", ("ours",))
        theirs.send_task("media.encode", ("theirs",))
    finally:
        ours.close()
        close_celery(theirs)
    assert asyncio.run(topology.take(videos)) == [("media.encode", media, "media.video.hd")] * 2

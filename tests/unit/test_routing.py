"""task_routes entries that name an exchange and routing key: which queue they reach, on any broker.

On RabbitMQ the message goes through the exchange (tests/integration/test_amqp_routing.py); here, on the
memory broker (which routes by queue only, as Redis and SQL do), the queue it is stored in is the one the
exchange would deliver to.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError
from celeriac.routing import Router, topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "taken"),
    [
        ("media.video", "media.video", True),
        ("media.*", "media.video", True),
        ("media.*", "media", False),
        ("media.*", "media.video.hd", False),
        ("media.#", "media", True),
        ("media.#", "media.video.hd", True),
        ("#", "", True),
        ("#", "anything.at.all", True),
        ("*.video", "media.video", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.*.z", "a.z", False),
        ("#.z", "a.b", False),
        ("media.video", "media.audio", False),
    ],
)
def test_topic_patterns_match_as_rabbitmq_matches_them(pattern: str, key: str, taken: bool) -> None:
    assert topic_matches(pattern, key) is taken


QUEUES: list[dict[str, Any]] = [
    {"name": "video", "exchange": "media", "exchange_type": "topic", "routing_key": "media.video.#"},
    {"name": "all-media", "exchange": "media", "exchange_type": "topic", "routing_key": "media.#"},
    {"name": "hd", "exchange": "direct-x", "exchange_type": "direct", "routing_key": "hd"},
    {"name": "everyone", "exchange": "news", "exchange_type": "fanout"},
]


def test_the_queue_an_exchange_reaches_is_the_first_task_queues_entry_bound_to_it() -> None:
    router = Router(None, QUEUES)
    assert router.bound_queue("media", "media.video.hd") == "video"  # the first match, in order
    assert router.bound_queue("media", "media.audio") == "all-media"
    assert router.bound_queue("direct-x", "hd") == "hd"
    assert router.bound_queue("news", "whatever") == "everyone"
    # A direct exchange no entry binds that key: the key names the queue (kombu on Redis, Celery's
    # queues made from a name). A topic exchange no entry binds: no queue can be told.
    assert router.bound_queue("direct-x", "sd") == "sd"
    assert router.bound_queue("elsewhere", "jobs") == "jobs"
    assert router.bound_queue("elsewhere", "jobs.x", "topic") is None
    assert router.bound_queue("media", "other.thing") is None


def test_a_kombu_exchange_in_a_route_is_read_by_name_and_type() -> None:
    from kombu import Exchange

    router = Router({"t.x": {"exchange": Exchange("media", type="topic"), "routing_key": "media.a"}})
    assert router.route("t.x", [], {}, {}) == {
        "exchange": "media",
        "exchange_type": "topic",
        "routing_key": "media.a",
    }


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = f"memory://routing-{uuid.uuid4().hex[:8]}"
    app = Celeriac("routing", broker=name, backend="disabled://", task_default_queue="default-q")
    app.conf.task_queues = QUEUES
    yield app
    app.close()


def sizes(app: Celeriac, *queues: str) -> dict[str, int]:
    async def count() -> dict[str, int]:
        return {queue: await app.broker().size(queue) for queue in queues}

    return app.run(count())


def test_a_route_with_an_exchange_and_no_queue_lands_where_the_exchange_delivers(app: Celeriac) -> None:
    app.conf.task_routes = {
        "t.video": {"exchange": "media", "routing_key": "media.video.hd"},
        "t.audio": {"exchange": "media", "routing_key": "media.audio"},
        "t.direct": {"exchange": "jobs", "routing_key": "reports"},
        "t.lost": {"exchange": "media", "routing_key": "other.thing"},
    }
    for name in ("t.video", "t.audio", "t.direct", "t.lost"):
        app.send_task(name)
    assert sizes(app, "video", "all-media", "reports", "default-q") == {
        "video": 1,
        "all-media": 1,
        "reports": 1,
        "default-q": 1,  # a topic key nothing binds: the default queue
    }


def test_what_the_caller_gives_wins_over_the_route(app: Celeriac) -> None:
    app.conf.task_routes = {"t.video": {"exchange": "media", "routing_key": "media.video.x"}}
    app.send_task("t.video", routing_key="media.audio")  # the route's exchange, the caller's key
    app.send_task("t.video", queue="hd")  # the caller's queue
    assert sizes(app, "video", "all-media", "hd") == {"video": 0, "all-media": 1, "hd": 1}


def test_a_route_queue_wins_over_its_exchange(app: Celeriac) -> None:
    app.conf.task_routes = {"t.x": {"queue": "hd", "exchange": "media", "routing_key": "media.video"}}
    app.send_task("t.x")
    assert sizes(app, "hd", "video") == {"hd": 1, "video": 0}


def test_a_routing_key_that_is_not_a_string_is_refused(app: Celeriac) -> None:
    app.conf.task_routes = {"t.x": {"exchange": "media", "routing_key": 7}}
    with pytest.raises(ConfigurationError, match="routing_key"):
        app.send_task("t.x")

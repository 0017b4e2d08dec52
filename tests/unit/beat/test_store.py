"""Which schedule store an app's beats share: the broker's when it can hold one, else the result
backend's; a clear error when neither can."""

from __future__ import annotations

import pytest

from celeriac import Celeriac
from celeriac.beat import Beat, store_for
from celeriac.exceptions import ConfigurationError
from celeriac.memory.beat_store import MemoryScheduleStore
from celeriac.redis.beat_store import RedisScheduleStore
from celeriac.sql.beat_store import SQLScheduleStore


@pytest.mark.parametrize(
    ("broker", "backend", "kind", "url"),
    [
        (None, None, SQLScheduleStore, "sqlite:///proj.celeriac.sqlite3"),
        ("redis://h:6379/0", "redis://h:6379/1", RedisScheduleStore, "redis://h:6379/0"),
        ("postgresql://h/db", None, SQLScheduleStore, "postgresql://h/db"),
        ("amqp://guest@h//", "redis://h:6379/1", RedisScheduleStore, "redis://h:6379/1"),
        ("amqp://guest@h//", "db+mysql://root@h/test", SQLScheduleStore, "db+mysql://root@h/test"),
        ("memory://x", None, MemoryScheduleStore, "memory://x"),
    ],
)
def test_the_brokers_store_else_the_backends(broker, backend, kind, url) -> None:
    app = Celeriac("proj", broker=broker, backend=backend)
    store = store_for(app)
    assert (type(store), store.url, store.scope) == (kind, url, "proj")


def test_the_redis_prefix_of_the_broker_goes_before_the_beats_keys() -> None:
    app = Celeriac("proj", broker="redis://h/0", broker_transport_options={"global_keyprefix": "p:"})
    assert store_for(app)._lease == "p:celeriac.beat.{proj}.lease"  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", [None, "rpc://"])
def test_rabbitmq_without_a_backend_that_can_hold_it_is_a_clear_error(backend) -> None:
    app = Celeriac("proj", broker="amqp://guest@h//", backend=backend)
    with pytest.raises(ConfigurationError, match="set result_backend to a redis:// or database URL"):
        store_for(app)


def test_skip_if_running_needs_a_result_backend() -> None:
    schedule = {"e": {"task": "t", "schedule": 5, "skip_if_running": True}}
    app = Celeriac("proj", broker="memory://skip", beat_schedule=schedule)
    with pytest.raises(
        ConfigurationError, match=r"entries 'e' use skip_if_running.*configure result_backend"
    ):
        Beat(app)

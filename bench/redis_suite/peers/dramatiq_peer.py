"""Dramatiq with its Redis broker and the Results middleware on its Redis backend; with its RabbitMQ
broker (pika) when the RabbitMQ suite gives an ``amqp://`` URL (``marks.broker_url``), results still on Redis.

Worker: ``dramatiq bench.redis_suite.peers.dramatiq_peer --processes 1 --threads N``. Only ``echo``
stores results (``store_results=True``), as Dramatiq's docs have it.
"""

from __future__ import annotations

import time

import dramatiq
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.redis_suite import marks

broker: Broker
if marks.broker_url().startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # pika: imported only for the RabbitMQ suite

    broker = RabbitmqBroker(url=marks.broker_url())
else:
    broker = RedisBroker(url=marks.url())
results = RedisBackend(url=marks.url())
broker.add_middleware(Results(backend=results))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    return None


@dramatiq.actor(store_results=True, max_retries=0)
def echo(value: int) -> int:
    return value


@dramatiq.actor(max_retries=0)
def sleeper(total: int) -> None:
    time.sleep(0.05)
    marks.count(total)


@dramatiq.actor(max_retries=0)
def mark(what: str) -> None:
    marks.mark(what)


class Client:
    def mark(self, what: str) -> None:
        mark.send(what)

    def noops(self, n: int) -> None:
        for _ in range(n):
            noop.send()

    def sleepers(self, n: int) -> None:
        for _ in range(n):
            sleeper.send(n)

    def call(self, i: int) -> int:
        return int(echo.send(i).get_result(block=True, timeout=30_000))

    def close(self) -> None:
        broker.close()


def client() -> Client:
    return Client()

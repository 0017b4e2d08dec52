"""The systems measured on RabbitMQ: the Redis suite's celeriac, Celery and Dramatiq configurations, plus
round-trip rows whose results travel back over RabbitMQ itself (``rpc://``).

Every configuration here is written into docs/benchmarks.md; change both together.
"""

from __future__ import annotations

import dataclasses

from bench.redis_suite.systems import SYSTEMS as REDIS_SYSTEMS
from bench.redis_suite.systems import Config, System

#: The broker URL scheme each system's docs use for RabbitMQ.
SCHEMES = {"celeriac": "amqp", "celery": "pyamqp", "dramatiq": "amqp"}

#: Label suffix of the rows whose result backend is ``rpc://`` (replies on the broker, no Redis).
RPC = ", rpc"


def _with_rpc(system: System, label: str) -> System:
    """``system`` with one more row: its ``label`` configuration, round trip only, results over rpc://."""
    base = next(c for c in system.configs if c.label == label)
    rpc = dataclasses.replace(base, label=base.label + RPC, runs=frozenset({"c"}))
    return dataclasses.replace(system, configs=(*system.configs, rpc))


def _redis_system(key: str) -> System:
    return next(s for s in REDIS_SYSTEMS if s.key == key)


SYSTEMS: tuple[System, ...] = (
    _with_rpc(_redis_system("celeriac"), "threads -c 8"),
    _with_rpc(_redis_system("celery"), "threads -c 8"),
    _redis_system("dramatiq"),
)


def result_url(config: Config) -> str:
    """``rpc://`` for the rpc rows; empty (the peers' default: the private Redis) otherwise."""
    return "rpc://" if config.label.endswith(RPC) else ""

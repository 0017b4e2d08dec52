"""``python -m bench rabbitmq``: every system's workers on one private RabbitMQ node, measured in one run.

Per configuration, the Redis suite's phases (``bench.redis_suite.run``), each on a vhost of its own that
is created empty before and deleted after, so nothing a phase left behind (a failed drain's messages,
Celery's reply queues) reaches the next one:

1. idle RSS and (c): a worker starts and answers a mark task, idles 2 s (its resident memory is read),
   then ROUNDS sequential calls with their results are timed.
2. (b) and (a): with no worker running, one client queues a start mark, N no-ops (timed: (b)) and a
   finish mark; a worker starts, and (a) is N over the time between the two marks on the worker's clock.
3. (d): SLEEPERS tasks that sleep 50 ms, timed the same way.

Results and marks go to a private Redis (one database per system) unless a row says ``rpc://``.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from tests.servers import RabbitServer, rabbit_scripts

from bench.rabbit_suite import report
from bench.rabbit_suite.systems import SCHEMES, SYSTEMS, result_url
from bench.redis_suite import run as redis_run
from bench.redis_suite.run import Plan, Row
from bench.redis_suite.server import RedisServer
from bench.redis_suite.systems import Config, System, version

WORKLOADS = ("a", "b", "c", "d", "rss")

_Phase = Callable[[System, Config, str, Plan, Row, redis.Redis, dict[str, str]], None]


class Vhosts:
    """Fresh vhosts on the node, one per phase, each deleted when its phase is over."""

    def __init__(self, node: RabbitServer) -> None:
        self.node = node
        self.made = 0

    def fresh(self) -> str:
        self.made += 1
        name = f"bench-{self.made}"
        self.node.ctl("add_vhost", name)
        self.node.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def drop(self, name: str) -> None:
        self.node.ctl("delete_vhost", name)

    def url(self, system: System, name: str) -> str:
        return f"{SCHEMES[system.key]}://guest:guest@{self.node.host}:{self.node.port}/{name}"


def measure(
    system: System, config: Config, vhosts: Vhosts, results: RedisServer, plan: Plan, row: Row
) -> None:
    url = results.url(system.db)
    store = redis.Redis.from_url(url)
    # The peers read these from the environment the bench hands every worker and client it starts.
    os.environ["BENCH_RESULT_URL"] = result_url(config)
    phases: list[tuple[tuple[str, ...], bool, _Phase]] = [
        (
            ("c", "rss"),
            bool(config.runs & {"c", "rss"} and plan.workloads & {"c", "rss"}),
            redis_run._idle_and_roundtrip,
        ),
        (("a", "b"), bool("a" in config.runs and plan.workloads & {"a", "b"}), redis_run._drain),
        (("d",), "d" in config.runs and "d" in plan.workloads, redis_run._sleepers),
    ]
    try:
        for names, wanted, phase in phases:
            if not wanted:
                continue
            vhost = vhosts.fresh()
            os.environ["BENCH_BROKER_URL"] = vhosts.url(system, vhost)
            env = redis_run._env(system, url, config.variant)
            try:
                redis_run._phase(
                    row, names, lambda p=phase, e=env: p(system, config, url, plan, row, store, e)
                )
            finally:
                vhosts.drop(vhost)
    finally:
        for name in ("BENCH_BROKER_URL", "BENCH_RESULT_URL"):
            os.environ.pop(name, None)
        store.flushdb()
        store.close()


def _machine(node: RabbitServer) -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rabbit = node.ctl("version")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, RabbitMQ {rabbit} (private node, default settings), "
        f"results and marks on a private Redis, load average at start {os.getloadavg()[0]:.2f}"
    )


def main(argv: list[str]) -> int:
    args, parser, systems, workloads = redis_run.parse_options(
        "python -m bench rabbitmq", argv, SYSTEMS, WORKLOADS, __doc__.splitlines()[0]
    )
    if rabbit_scripts() is None:
        parser.error("RabbitMQ is not installed (apt-get install rabbitmq-server, or set RABBITMQ_HOME)")

    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-rabbitmq-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plan = Plan(args.n, args.rounds, args.sleepers, args.rtt_cap, args.drain_cap, workloads, workdir)
        with RedisServer(Path(tmp)) as results, RabbitServer(Path(tmp) / "rabbitmq") as node:
            print(f"RabbitMQ node {node.node} up in {node.start_seconds[0]:.1f} s", file=sys.stderr)
            machine = _machine(node)
            print(f"machine: {machine}", file=sys.stderr)
            vhosts = Vhosts(node)
            for system in systems:
                ver = version(system)
                for config in system.configs:
                    if not config.runs & workloads:
                        continue
                    row = Row(system, config, ver)
                    t0 = time.monotonic()
                    measure(system, config, vhosts, results, plan, row)
                    rows.append(row)
                    print(
                        f"  measured {system.title} {config.label} in {time.monotonic() - t0:.0f} s",
                        file=sys.stderr,
                    )
    table = report.RabbitTable(rows, None, plan, machine, time.monotonic() - started)
    print()
    print(table.text())
    if args.markdown:
        args.markdown.write_text(table.markdown())
        print(f"\nmarkdown written to {args.markdown}")
    return 0

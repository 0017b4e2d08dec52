"""The systems measured, each worker configuration, and the environment each one runs in.

Every configuration here is written into docs/benchmarks.md; change both together.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "bench" / ".envs"
#: arq pins redis-py < 6, which the project's lock cannot hold next to redis-py 8: its own venv.
ARQ_REQUIREMENT = "arq==0.28.0"
PEERS = "bench.redis_suite.peers"

_COMMON = ("--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair", "-l", "WARNING")


@dataclass(frozen=True)
class Config:
    """One worker setup: the table's row. ``runs`` names the workloads it takes part in."""

    label: str
    args: tuple[str, ...]
    runs: frozenset[str]
    variant: str = ""


@dataclass(frozen=True)
class System:
    key: str
    title: str
    dist: str
    db: int
    command: str
    configs: tuple[Config, ...]
    own_env: bool = False
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        if self.own_env:
            return ENVS / self.key / "bin" / "python"
        return Path(sys.executable)

    def argv(self, config: Config) -> list[str]:
        return [str(self.python.parent / self.command), *config.args]


def _rows(*rows: tuple[str, tuple[str, ...], str, str]) -> tuple[Config, ...]:
    return tuple(
        Config(label, args, frozenset(runs.split(",")), variant) for label, args, runs, variant in rows
    )


_ALL = "a,c,rss"
_ALL_D = "a,c,rss,d"
_CELERIAC = ("-A", f"{PEERS}.celeriac_peer:app", "worker", "-l", "WARNING", "--prefetch-multiplier", "4")
_CELERY = ("-A", f"{PEERS}.celery_peer", "worker", *_COMMON)

SYSTEMS: tuple[System, ...] = (
    System(
        "celeriac",
        "celeriac",
        "celeriac",
        1,
        "celeriac",
        _rows(
            ("threads -c 8", (*_CELERIAC, "-P", "threads", "-c", "8"), _ALL, ""),
            ("async -c 100", (*_CELERIAC, "-P", "async", "-c", "100"), _ALL_D, "async"),
            (
                "async -c 100 x2",
                (*_CELERIAC, "-P", "async", "-c", "100", "--processes", "2"),
                _ALL,
                "async",
            ),
            ("processes -c 2", (*_CELERIAC, "-P", "processes", "-c", "2"), _ALL, ""),
            ("threads -c 100", (*_CELERIAC, "-P", "threads", "-c", "100"), "d", ""),
        ),
    ),
    System(
        "celery",
        "Celery",
        "celery",
        2,
        "celery",
        _rows(
            ("prefork -c 2", (*_CELERY, "-P", "prefork", "-c", "2"), _ALL, ""),
            ("threads -c 8", (*_CELERY, "-P", "threads", "-c", "8"), _ALL, ""),
            ("threads -c 100", (*_CELERY, "-P", "threads", "-c", "100"), "d", ""),
        ),
    ),
    System(
        "dramatiq",
        "Dramatiq",
        "dramatiq",
        3,
        "dramatiq",
        _rows(
            ("-p 1 -t 8", (f"{PEERS}.dramatiq_peer", "--processes", "1", "--threads", "8"), _ALL, ""),
            ("-p 1 -t 100", (f"{PEERS}.dramatiq_peer", "--processes", "1", "--threads", "100"), "d", ""),
        ),
    ),
    System(
        "rq",
        "RQ",
        "rq",
        4,
        "rq",
        _rows(
            (
                "SimpleWorker",
                (
                    "worker",
                    "bench",
                    "--url",
                    "{url}",
                    "--worker-class",
                    "rq.worker.SimpleWorker",
                    "--logging_level",
                    "WARNING",
                ),
                _ALL,
                "",
            ),
        ),
        not_run={
            "d": "RQ runs one job at a time per worker process; concurrency 100 means 100 worker processes "
            "(`rq worker-pool -n 100`), not one worker"
        },
    ),
    System(
        "huey",
        "Huey",
        "huey",
        5,
        "huey_consumer",
        _rows(
            ("-w 8 -k thread", (f"{PEERS}.huey_peer.huey", "-w", "8", "-k", "thread", "-q"), _ALL, ""),
            ("-w 100 -k thread", (f"{PEERS}.huey_peer.huey", "-w", "100", "-k", "thread", "-q"), "d", ""),
        ),
    ),
    System(
        "arq",
        "arq",
        "arq",
        6,
        "arq",
        _rows(("max_jobs 100", (f"{PEERS}.arq_peer.WorkerSettings",), _ALL_D, "")),
        own_env=True,
    ),
    System(
        "taskiq",
        "Taskiq",
        "taskiq",
        7,
        "taskiq",
        _rows(
            (
                "--max-async-tasks 100",
                (
                    "worker",
                    f"{PEERS}.taskiq_peer:broker",
                    "--workers",
                    "1",
                    "--max-async-tasks",
                    "100",
                    "--log-level",
                    "WARNING",
                ),
                _ALL_D,
                "",
            ),
        ),
    ),
    System(
        "saq",
        "SAQ",
        "saq",
        8,
        "saq",
        _rows(("concurrency 100", (f"{PEERS}.saq_peer.settings", "--workers", "1"), _ALL_D, "")),
    ),
)


def ensure_env(system: System) -> None:
    """Create a system's own venv when it needs one (gitignored under bench/.envs)."""
    if not system.own_env:
        return
    python = system.python
    if python.exists() and version(system) == ARQ_REQUIREMENT.split("==")[1]:
        return
    uv = shutil.which("uv")
    base = [uv] if uv else [sys.executable, "-m", "uv"]
    print(f"  creating {python.parent.parent} ({ARQ_REQUIREMENT})", file=sys.stderr)
    subprocess.run(
        [*base, "venv", "--quiet", "--python", sys.executable, str(python.parent.parent)], check=True
    )
    subprocess.run([*base, "pip", "install", "--quiet", "--python", str(python), ARQ_REQUIREMENT], check=True)


def version(system: System) -> str:
    out = subprocess.run(
        [str(system.python), "-c", f"import importlib.metadata as m; print(m.version({system.dist!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"

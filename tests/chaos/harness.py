"""The chaos harness: a ledger no fault touches, the checker that reads it, the worker processes the
nemesis hurts, and the producer that feeds them.

This module is imported by the worker's pool processes too (through ``chaosapp``), so it needs nothing
beyond the standard library at import time.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.chaos.chaosapp"

# -- the ledger --------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submit (
    task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, confirmed INTEGER NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, retries INTEGER NOT NULL, redelivered INTEGER NOT NULL,
    pid INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS run_task ON run (task_id);
"""


@dataclass(frozen=True, slots=True)
class Run:
    task_id: str
    retries: int
    redelivered: bool
    pid: int
    started_at: float
    finished_at: float | None


class Ledger:
    """What was submitted and what ran, in a SQLite file (WAL) that no fault touches.

    Tasks write a ``run`` row when they start and stamp it when they finish; the producer writes a
    ``submit`` row only after ``delay()`` returned, that is after the broker committed the message.
    Times are ``time.time()``, comparable across the processes of this machine.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        # A long busy timeout: eight pool processes and the producer write here at once.
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA synchronous = NORMAL")

    @classmethod
    def create(cls, path: str | Path) -> Ledger:
        ledger = cls(path)
        ledger._conn.execute("PRAGMA journal_mode = WAL")
        ledger._conn.executescript(_SCHEMA)
        return ledger

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            return self._conn.execute(sql, params).lastrowid or 0

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- written by tasks
    def started(self, task_id: str | None, retries: int, delivery_info: dict[str, Any]) -> int:
        return self._write(
            "INSERT INTO run (task_id, retries, redelivered, pid, started_at) VALUES (?, ?, ?, ?, ?)",
            (task_id, retries, bool(delivery_info.get("redelivered")), os.getpid(), time.time()),
        )

    def finished(self, run: int) -> None:
        self._write("UPDATE run SET finished_at = ? WHERE id = ?", (time.time(), run))

    # -- written by the producer
    def submitted(self, task_id: str, kind: str, confirmed: bool) -> None:
        self._write(
            "INSERT INTO submit (task_id, kind, confirmed, at) VALUES (?, ?, ?, ?)",
            (task_id, kind, int(confirmed), time.time()),
        )

    # -- read by the checker and the nemesis
    def submits(self, kind: str | None = None, confirmed: bool = True) -> list[str]:
        sql = "SELECT task_id FROM submit WHERE confirmed = ?"
        params: list[Any] = [int(confirmed)]
        if kind is not None:
            sql, params = sql + " AND kind = ?", [*params, kind]
        return [row[0] for row in self._read(sql, params)]

    def finishes(self) -> Counter[str]:
        rows = self._read("SELECT task_id, count(*) FROM run WHERE finished_at IS NOT NULL GROUP BY task_id")
        return Counter(dict(rows))

    def unfinished(self, kind: str) -> list[str]:
        """Confirmed submits of ``kind`` that have not finished (yet)."""
        rows = self._read(
            "SELECT task_id FROM submit s WHERE s.kind = ? AND s.confirmed = 1 AND NOT EXISTS "
            "(SELECT 1 FROM run r WHERE r.task_id = s.task_id AND r.finished_at IS NOT NULL)",
            (kind,),
        )
        return [row[0] for row in rows]

    def confirmed_since(self, when: float) -> int:
        """How many publishes were confirmed at ``when`` or later (the producer works again)."""
        return int(self._read("SELECT count(*) FROM submit WHERE confirmed = 1 AND at >= ?", (when,))[0][0])

    def remaining(self, kind: str) -> int:
        return len(self.unfinished(kind))

    def done_at(self, kind: str) -> float | None:
        """When the last task of ``kind`` first finished."""
        (when,) = self._read(
            "SELECT max(first) FROM (SELECT min(r.finished_at) AS first FROM run r JOIN submit s "
            "ON s.task_id = r.task_id WHERE s.kind = ? AND r.finished_at IS NOT NULL GROUP BY r.task_id)",
            (kind,),
        )[0]
        return None if when is None else float(when)

    def runs(self, task_ids: Iterable[str] | None = None) -> list[Run]:
        rows = self._read(
            "SELECT task_id, retries, redelivered, pid, started_at, finished_at FROM run ORDER BY id"
        )
        wanted = None if task_ids is None else set(task_ids)
        return [Run(*row) for row in rows if wanted is None or row[0] in wanted]

    def busy_pids(self) -> set[int]:
        """Processes with a run started and not finished (some of them died since)."""
        return {row[0] for row in self._read("SELECT DISTINCT pid FROM run WHERE finished_at IS NULL")}


# -- the checker -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    """lost: confirmed submits with no finished run; dup: finishes beyond the first; unexpected:
    finished ids that were never submitted."""

    submitted: int
    unknown: int
    lost: list[str]
    dup: int
    dup_ids: int
    unexpected: list[str]


def check(ledger: Ledger, kind: str = "step") -> Verdict:
    """Compare what the producer confirmed with what the tasks say ran (only ``kind`` must finish)."""
    must_finish = set(ledger.submits(kind))
    every_submit = set(ledger.submits()) | set(ledger.submits(confirmed=False))
    finishes = ledger.finishes()
    return Verdict(
        submitted=len(must_finish),
        unknown=len(ledger.submits(kind, confirmed=False)),
        lost=sorted(must_finish - finishes.keys()),
        dup=sum(n - 1 for n in finishes.values()),
        dup_ids=sum(1 for n in finishes.values() if n > 1),
        unexpected=sorted(finishes.keys() - every_submit),
    )


#: One row per chaos run, printed as a table at the end of the pytest session.
REPORT: list[dict[str, str]] = []
_COLUMNS = ("run", "seed", "tasks", "faults", "lost", "dup", "unexp", "dead", "recovery", "wall", "notes")


def report(**row: object) -> str:
    """Keep a row for the session's table; return it as one line, for assertion messages."""
    REPORT.append({key: str(row.get(key, "")) for key in _COLUMNS})
    return " ".join(f"{key}={value}" for key, value in row.items())


def table(rows: Sequence[dict[str, str]] = REPORT) -> list[str]:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in _COLUMNS}
    lines = [" | ".join(c.ljust(widths[c]) for c in _COLUMNS).rstrip()]
    lines.append("-+-".join("-" * widths[c] for c in _COLUMNS))
    lines += [" | ".join(r[c].ljust(widths[c]) for c in _COLUMNS).rstrip() for r in rows]
    return lines


# -- processes ---------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed; return whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Every live process of process group ``pgid`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[1] == pgid:
            found.append(int(entry.name))
    return sorted(found)


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(set(found))


def is_pool_process(pid: int) -> bool:
    """Whether ``pid`` is a pool process (started by multiprocessing's spawn), not its resource tracker."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class WorkerProcess:
    """One ``celeriac worker`` in its own process group (its session), with one log per start."""

    def __init__(self, name: str, env: dict[str, str], args: Sequence[str], logs: Path) -> None:
        self.name, self.env, self.args, self.logs = name, env, list(args), logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log = logs / f"{name}.0.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> WorkerProcess:
        self.starts += 1
        self.log = self.logs / f"{self.name}.{self.starts}.log"
        command = [sys.executable, "-m", "celeriac", "-A", APP, "worker", "-n", f"{self.name}@chaos"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and " ready: " in self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        if not wait_until(lambda: self.ready() or not self.alive(), timeout) or not self.alive():
            raise AssertionError(f"{self.name} never got ready; log:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        """The logs of every start of this worker."""
        logs = (self.logs / f"{self.name}.{n}.log" for n in range(1, self.starts + 1))
        return "".join(log.read_text(errors="replace") for log in logs if log.exists())

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a lost machine would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM the worker (its parent only, as a supervisor does); return (exit code, seconds)."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - sent

    def stop(self) -> None:
        """Kill whatever is left of this worker's process group; always safe to call."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def pool_pids(self) -> list[int]:
        """The pool's child processes (not multiprocessing's resource tracker)."""
        if not self.alive():
            return []
        return [pid for pid in children_of(self.pid) if is_pool_process(pid)]

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for {self.pid}")


class Cluster:
    """The workers of one test; ``stop_all`` (run by the fixture, failing or not) leaves no process."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.workers: dict[str, WorkerProcess] = {}

    def start(self, name: str, *args: str, wait: bool = True) -> WorkerProcess:
        worker = self.workers[name] = WorkerProcess(name, self.env, args, self.logs)
        return worker.start(wait)

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(self.workers.values())

    def terminate_all(self, timeout: float = 15) -> None:
        for worker in self:
            if worker.alive():
                worker.terminate(timeout)

    def stop_all(self) -> None:
        for worker in self:
            worker.stop()


# -- the nemesis and the producer ---------------------------------------------------------------------


def new_seed() -> int:
    """``CHAOS_SEED`` from the environment (to replay a run), else a fresh one."""
    text = os.environ.get("CHAOS_SEED")
    return int(text) if text else random.SystemRandom().randrange(1, 2**31)


@dataclass
class Nemesis:
    """The seeded source of every choice a run makes (which process, when, which input) and the log of
    what it did. A seed replays the schedule, not the operating system's timing."""

    seed: int
    rng: random.Random = field(init=False)
    events: list[tuple[float, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def did(self, action: str, target: str) -> float:
        now = time.time()
        self.events.append((now, action, target))
        return now

    def count(self, action: str) -> int:
        return sum(1 for _, a, _ in self.events if a == action)

    @property
    def last(self) -> float:
        return self.events[-1][0] if self.events else 0.0


@dataclass(frozen=True, slots=True)
class Send:
    kind: str
    task_id: str
    publish: Callable[[str], object]


class Producer(threading.Thread):
    """Publishes ``plan`` at ``rate`` per second; a call counts as submitted once its publish returned,
    and as unknown (never lost) when it raised."""

    def __init__(self, ledger: Ledger, plan: Sequence[Send], rate: float) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.ledger, self.plan, self.rate = ledger, plan, rate
        self.sent = 0
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        for n, send in enumerate(self.plan):
            if self.halt.wait(max(start + n / self.rate - time.monotonic(), 0)):
                return
            try:
                send.publish(send.task_id)
            except Exception as exc:
                self.errors.append(f"{send.task_id}: {exc!r}")
                self.ledger.submitted(send.task_id, send.kind, confirmed=False)
            else:
                self.ledger.submitted(send.task_id, send.kind, confirmed=True)
            self.sent = n + 1

    def stop(self) -> None:
        self.halt.set()
        if self.ident is not None:
            self.join(30)

    def __enter__(self) -> Producer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()  # a failing test must not leave it publishing into the next test's broker

"""The table: printed as text at the end of a run, and as markdown with ``--markdown FILE``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.redis_suite.floor import Floor
    from bench.redis_suite.run import Plan, Row

HEADER = (
    "system",
    "version",
    "config",
    "(a) drain/s",
    "(b) enqueue/s",
    "(c) p50/p95/p99 ms",
    "(d) s",
    "idle RSS MB",
)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def several_processes(row: Row) -> bool:
    """Whether a row runs several workers under one supervisor (``--processes 2``, label ``... x2``)."""
    return row.config.label.endswith(" x2")


class Table:
    def __init__(self, rows: list[Row], fl: Floor | None, plan: Plan, machine: str, elapsed: float) -> None:
        self.rows, self.floor, self.plan, self.machine, self.elapsed = rows, fl, plan, machine, elapsed
        self.notes: list[str] = []

    def best_drain(self, key: str, *, one_process: bool = False) -> float | None:
        """The best drain among ``key``'s rows; ``one_process`` leaves out the rows of several workers."""
        rates = [
            r.drain
            for r in self.rows
            if r.system.key == key and r.drain is not None and not (one_process and several_processes(r))
        ]
        return max(rates) if rates else None

    def _note(self, text: str) -> str:
        if text not in self.notes:
            self.notes.append(text)
        return f"n/a[{self.notes.index(text) + 1}]"

    def _cell(self, row: Row, workload: str, value: str | None) -> str:
        if workload in row.failed:
            return self._note(f"{row.system.title} {row.config.label}, ({workload}): {row.failed[workload]}")
        if value is not None:
            return value
        if workload in row.system.not_run:
            return self._note(f"{row.system.title}, ({workload}): {row.system.not_run[workload]}")
        return "-"

    def cells(self) -> list[tuple[str, ...]]:
        self.notes = []
        out: list[tuple[str, ...]] = []
        for row in self.rows:
            rtt = None
            if row.rtt_ms:
                rtt = "/".join(f"{percentile(row.rtt_ms, p):.2f}" for p in (0.5, 0.95, 0.99))
                if len(row.rtt_ms) < self.plan.rounds:
                    rtt += f" ({len(row.rtt_ms)} calls)"
            out.append(
                (
                    row.system.title,
                    row.version,
                    row.config.label,
                    self._cell(row, "a", None if row.drain is None else f"{row.drain:,.0f}"),
                    self._cell(row, "b", None if row.enqueue is None else f"{row.enqueue:,.0f}"),
                    self._cell(row, "c", rtt),
                    self._cell(row, "d", None if row.sleep_s is None else f"{row.sleep_s:.2f}"),
                    self._cell(row, "rss", None if row.rss_mb is None else f"{row.rss_mb:.0f}"),
                )
            )
        if self.floor is not None:
            f = self.floor
            out.append(
                (
                    "(e) floor",
                    "redis-py",
                    "1 cmd/round trip",
                    f"{f.sequential:,.0f}",
                    f"{f.enqueue_sequential:,.0f}",
                    "-",
                    "-",
                    "-",
                )
            )
            out.append(
                (
                    "(e) floor",
                    "redis-py",
                    "pipelined x100",
                    f"{f.pipelined:,.0f}",
                    f"{f.enqueue_pipelined:,.0f}",
                    "-",
                    "-",
                    "-",
                )
            )
        return out

    def preamble(self) -> list[str]:
        p = self.plan
        return [
            f"machine: {self.machine}",
            f"(a) drain {p.n:,} pre-enqueued no-op tasks, one worker; (b) enqueue {p.n:,} no-ops from one "
            f"client; (c) {p.rounds:,} sequential calls with results, worker idle; (d) {p.sleepers:,} tasks "
            f"sleeping 50 ms (ideal {p.sleepers / 100 * 0.05:.2f} s at concurrency 100); (e) bare redis-py: "
            "LPUSH 400 B + RPOP + SET per task (b column: LPUSH alone); idle RSS: worker process tree",
            f"whole run: {self.elapsed / 60:.1f} min",
        ]

    def targets(self) -> list[str]:
        lines = []
        ours, celery = self.best_drain("celeriac"), self.best_drain("celery")
        peers = [(r.system.title, r.drain) for r in self.rows if r.system.key != "celeriac" and r.drain]
        if ours and celery:
            lines.append(
                f"(a) celeriac best {ours:,.0f}/s = {ours / celery:.1f}x Celery's best {celery:,.0f}/s "
                f"(target >= 5x)"
            )
        if ours and peers:
            name, rate = max(peers, key=lambda item: item[1] or 0.0)
            lines.append(
                f"(a) best peer: {name} {rate:,.0f}/s; celeriac {'ahead' if ours > (rate or 0) else 'behind'}"
            )
        if ours and self.floor:
            lines.append(
                f"(a) celeriac best = {ours / self.floor.sequential:.0%} of the sequential floor, "
                f"{ours / self.floor.pipelined:.0%} of the pipelined floor"
            )
        for r in self.rows:
            if r.system.key == "celeriac" and r.rtt_ms:
                p50, p99 = percentile(r.rtt_ms, 0.5), percentile(r.rtt_ms, 0.99)
                ok = "met" if p50 < 1 and p99 < 5 else "not met"
                lines.append(
                    f"(c) celeriac {r.config.label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                    f"(target p50 < 1, p99 < 5: {ok})"
                )
        ideal = self.plan.sleepers / 100 * 0.05
        for r in self.rows:
            if r.system.key == "celeriac" and r.sleep_s is not None:
                ok = "met" if r.sleep_s <= ideal * 1.2 else "not met"
                lines.append(
                    f"(d) celeriac {r.config.label}: {r.sleep_s:.2f} s vs ideal {ideal:.2f} s "
                    f"(target within 20%: {ok})"
                )
        # Like with like: our processes pool against Celery's prefork, threads and async against threads.
        kind = {"processes": "prefork", "threads": "threads", "async": "threads"}
        celery_rss = {
            r.config.label.split()[0]: r.rss_mb for r in self.rows if r.system.key == "celery" and r.rss_mb
        }
        for r in self.rows:
            # Several worker processes against Celery's several processes.
            like = "prefork" if several_processes(r) else kind.get(r.config.label.split()[0], "")
            theirs = celery_rss.get(like)
            if r.system.key == "celeriac" and r.rss_mb and theirs:
                ok = "met" if r.rss_mb < theirs else "not met"
                lines.append(
                    f"idle RSS celeriac {r.config.label}: {r.rss_mb:.0f} MB vs Celery "
                    f"{like} {theirs:.0f} MB (target below Celery's: {ok})"
                )
        return lines

    def text(self) -> str:
        cells = [HEADER, *self.cells()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
        lines = [*self.preamble(), ""]
        for n, row in enumerate(cells):
            lines.append(
                "  ".join(
                    c.ljust(w) if i < 3 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
            if n == 0:
                lines.append("-" * len(lines[-1]))
        lines += [f"[{i}] {note}" for i, note in enumerate(self.notes, 1)]
        lines += ["", *self.targets()]
        return "\n".join(lines)

    def markdown(self) -> str:
        cells = self.cells()
        lines = [*(f"- {line}" for line in self.preamble()), ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        lines += ["", *(f"[{i}] {note}  " for i, note in enumerate(self.notes, 1))]
        lines += ["", *(f"- {line}" for line in self.targets())]
        return "\n".join(lines) + "\n"

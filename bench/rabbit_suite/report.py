"""The RabbitMQ table: the Redis suite's columns, this suite's preamble and the issue's targets."""

from __future__ import annotations

from bench.redis_suite.report import Table, percentile


class RabbitTable(Table):
    """Targets: (a) at least 5x Celery's best drain and ahead of Dramatiq; (c) p50 under 2 ms."""

    def preamble(self) -> list[str]:
        p = self.plan
        return [
            f"machine: {self.machine}",
            f"(a) drain {p.n:,} pre-enqueued no-op tasks, one worker; (b) enqueue {p.n:,} no-ops from one "
            f"client; (c) {p.rounds:,} sequential calls with results, worker idle (results on Redis, or "
            f"over RabbitMQ in the rpc:// rows); (d) {p.sleepers:,} tasks sleeping 50 ms (ideal "
            f"{p.sleepers / 100 * 0.05:.2f} s at concurrency 100); idle RSS: worker process tree",
            f"whole run: {self.elapsed / 60:.1f} min",
        ]

    def targets(self) -> list[str]:
        best = self.best_drain
        lines = []
        ours, celery, dramatiq = best("celeriac"), best("celery"), best("dramatiq")
        if ours and celery:
            ok = "met" if ours >= 5 * celery else "not met"
            lines.append(
                f"(a) celeriac best {ours:,.0f}/s = {ours / celery:.1f}x Celery's best {celery:,.0f}/s "
                f"(target >= 5x: {ok})"
            )
            single = best("celeriac", one_process=True)
            if single and single != ours:
                lines.append(f"(a) celeriac best in one process {single:,.0f}/s = {single / celery:.1f}x")
        if ours and dramatiq:
            ok = "met" if ours > dramatiq else "not met"
            lines.append(
                f"(a) celeriac best {ours:,.0f}/s vs Dramatiq's best {dramatiq:,.0f}/s (target ahead: {ok})"
            )
        for r in self.rows:
            if r.system.key == "celeriac" and r.rtt_ms:
                p50, p99 = percentile(r.rtt_ms, 0.5), percentile(r.rtt_ms, 0.99)
                ok = "met" if p50 < 2 else "not met"
                lines.append(
                    f"(c) celeriac {r.config.label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                    f"(target p50 < 2: {ok})"
                )
        ideal = self.plan.sleepers / 100 * 0.05
        for r in self.rows:
            if r.system.key == "celeriac" and r.sleep_s is not None:
                lines.append(f"(d) celeriac {r.config.label}: {r.sleep_s:.2f} s vs ideal {ideal:.2f} s")
        return lines

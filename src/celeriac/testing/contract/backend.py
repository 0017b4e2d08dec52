"""The Backend contract as a pytest suite: what results and the worker rely on, for any result backend.

Run it against your own backend with a kit (``celeriac.testing.contract.kit.BackendKit``) that says how
to make your backend and clean up after a test::

    import pytest
    from celeriac.testing.contract import BackendContract, BackendKit, CleanupContract

    class MyKit(BackendKit):
        def clean(self): ...

    class TestMyBackend(BackendContract, CleanupContract):  # CleanupContract: if it has cleanup()
        @pytest.fixture
        def backend_kit(self):
            kit = MyKit("mybackend://localhost")
            yield kit
            kit.clean()

pytest collects ``TestMyBackend`` with every test of the contracts it subclasses; the base classes are
not collected (their names do not start with ``Test``). Every test requests the fixture
``backend_kit``, so one parametrised fixture in a ``conftest.py`` runs the suite on several backends.
One test, marked ``chaos``, races many rounds of chord reports; ``-m "not chaos"`` leaves it out.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import states
from celeriac.backends import ResultMeta
from celeriac.backends.base import ChordClaim, ChordPart
from celeriac.testing.contract.kit import BackendKit

__all__ = ["BackendContract", "CleanupContract"]


def _now() -> datetime:
    # Whole seconds: a table that Celery created on MySQL keeps no fractions of a second.
    return datetime.now(UTC).replace(microsecond=0)


def _failure(message: str) -> dict[str, Any]:
    return {"exc_type": "ValueError", "exc_message": [message], "exc_module": "builtins"}


def _header(group_id: str, size: int) -> list[ChordPart]:
    return [ChordPart(f"{group_id}-{n}", n, states.SUCCESS, {"n": n, "s": "ü"}) for n in range(size)]


def _race(backend_kit: BackendKit, size: int, callers: int, copies: int) -> tuple[list[ChordClaim], float]:
    """Report ``size`` parts of one chord from ``callers`` threads at once (each its own backend and
    event loop), with ``copies`` parts reported a second time by another thread (redeliveries)."""
    group_id = backend_kit.group_id()
    parts = _header(group_id, size)
    plan: list[list[ChordPart]] = [[] for _ in range(callers)]
    for n, part in enumerate(random.sample(parts, size)):
        plan[n % callers].append(part)
    for part in random.sample(parts, copies):
        plan[random.randrange(callers)].append(part)
    for mine in plan:
        random.shuffle(mine)
    claims: list[ChordClaim] = []
    errors: list[BaseException] = []
    ready = threading.Barrier(callers + 1)

    def caller(mine: list[ChordPart]) -> None:
        async def report() -> None:
            backend = backend_kit.backend()
            try:
                await backend.restore_group(group_id)  # connected before the race starts
                ready.wait()
                for part in mine:
                    claim = await backend.chord_part(group_id, part, size)
                    if claim is not None:
                        claims.append(claim)
            finally:
                await backend.close()

        try:
            asyncio.run(report())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(mine,)) for mine in plan]
    for thread in threads:
        thread.start()
    ready.wait(timeout=30)
    started = time.monotonic()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert len(claims) == 1, f"{len(claims)} callers claimed the chord"
    assert list(claims[0].parts) == parts
    return claims, elapsed


class BackendContract:
    """Every behaviour a result backend promises (see ``celeriac.backends.base.Backend``), one test each.

    Subclass it as ``Test...`` and provide a ``backend_kit`` fixture; each test makes its backends and
    ids through the kit, runs one scenario on an event loop, and leaves cleaning to the fixture.
    """

    def test_store_and_get_round_trip(self, backend_kit: BackendKit) -> None:
        """A stored record reads back equal, through this backend and another client of the store."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            ok_id, failed_id, child_id = backend_kit.task_id(), backend_kit.task_id(), backend_kit.task_id()
            ok = ResultMeta(
                ok_id,
                states.SUCCESS,
                result={"total": 5, "parts": [2, 3], "note": "ünïcode"},
                date_done=_now(),
                children=[[[child_id, None], None]],
                extended={
                    "name": "proj.add",
                    "args": [2, 3],
                    "kwargs": {"x": 1},
                    "worker": "w1@host",
                    "retries": 1,
                    "queue": "celery",
                },
            )
            failed = ResultMeta(
                failed_id,
                states.FAILURE,
                result={"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"},
                traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: boom\n',
                date_done=_now(),
            )
            await backend.store([ok, failed])
            assert await backend.get(ok_id) == ok
            assert await backend.get(failed_id) == failed
            # Another client of the same store reads the same records.
            assert await backend_kit.backend().get_many([ok_id, failed_id]) == {ok_id: ok, failed_id: failed}

        backend_kit.run(scenario)

    def test_unknown_task_is_pending(self, backend_kit: BackendKit) -> None:
        """A task with no record is PENDING, and ``get_many`` leaves it out."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            unknown = backend_kit.task_id()
            meta = await backend.get(unknown)
            assert (meta.task_id, meta.status, meta.result, meta.ready) == (
                unknown,
                states.PENDING,
                None,
                False,
            )
            assert await backend.get_many([unknown]) == {}

        backend_kit.run(scenario)

    def test_store_many_at_once(self, backend_kit: BackendKit) -> None:
        """One ``store`` call keeps many records, all read back by one ``get_many``."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            metas = [
                ResultMeta(backend_kit.task_id(), states.SUCCESS, result=n, date_done=_now())
                for n in range(50)
            ]
            await backend.store(metas)
            found = await backend.get_many([m.task_id for m in metas] + [backend_kit.task_id()])
            assert found == {m.task_id: m for m in metas}

        backend_kit.run(scenario)

    def test_store_replaces_the_previous_record(self, backend_kit: BackendKit) -> None:
        """A task's new record replaces its previous one; within one call the last wins."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            task_id = backend_kit.task_id()
            await backend.store([ResultMeta(task_id, states.STARTED, result={"pid": 1, "hostname": "w1"})])
            assert (await backend.get(task_id)).status == states.STARTED
            done = ResultMeta(task_id, states.SUCCESS, result=[1, 2], date_done=_now())
            await backend.store([done])
            assert await backend.get(task_id) == done
            # Two records of one task in one call: the last one wins.
            first, last = (
                ResultMeta(task_id, states.RETRY),
                ResultMeta(task_id, states.SUCCESS, 7, date_done=_now()),
            )
            await backend.store([first, last])
            assert await backend.get(task_id) == last

        backend_kit.run(scenario)

    def test_forget_deletes_the_record(self, backend_kit: BackendKit) -> None:
        """A forgotten task is PENDING again; forgetting it twice is no error."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            task_id = backend_kit.task_id()
            await backend.store([ResultMeta(task_id, states.SUCCESS, result=1, date_done=_now())])
            await backend.forget(task_id)
            assert (await backend.get(task_id)).status == states.PENDING
            await backend.forget(task_id)  # forgetting twice is fine

        backend_kit.run(scenario)

    def test_wait_returns_when_another_task_stores_the_result(self, backend_kit: BackendKit) -> None:
        """``wait`` returns the ready record soon after it is stored, passing over unready states."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            task_id = backend_kit.task_id()

            async def finish_later() -> None:
                await asyncio.sleep(0.2)
                await backend.store([ResultMeta(task_id, states.STARTED)])
                await asyncio.sleep(0.1)
                await backend.store([ResultMeta(task_id, states.SUCCESS, result="done", date_done=_now())])

            finishing = asyncio.create_task(finish_later())
            started = time.monotonic()
            meta = await backend.wait(task_id, timeout=5.0)
            assert (meta.status, meta.result) == (states.SUCCESS, "done")
            assert 0.25 <= time.monotonic() - started < 1.5
            await finishing

        backend_kit.run(scenario)

    def test_wait_returns_when_another_thread_stores_the_result(self, backend_kit: BackendKit) -> None:
        """``wait`` returns soon after another client, on another thread, stores the result."""

        task_id = backend_kit.task_id()

        async def finish_later() -> None:
            await asyncio.sleep(0.3)
            other = backend_kit.backend()  # its own instance, on its own loop and thread
            await other.store(
                [
                    ResultMeta(
                        task_id,
                        states.FAILURE,
                        result={"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"},
                    )
                ]
            )
            await other.close()

        async def scenario() -> None:
            backend = backend_kit.backend()
            await backend.get(task_id)
            thread = backend_kit.run_in_thread(finish_later)
            started = time.monotonic()
            meta = await backend.wait(task_id, timeout=5.0)
            waited = time.monotonic() - started
            thread.join(5)
            assert meta.status == states.FAILURE and meta.result["exc_type"] == "KeyError"
            assert 0.25 <= waited < 1.5

        backend_kit.run(scenario)

    def test_wait_times_out(self, backend_kit: BackendKit) -> None:
        """``wait`` on a task that never finishes raises TimeoutError naming it, after the timeout."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            task_id = backend_kit.task_id()
            await backend.store([ResultMeta(task_id, states.STARTED)])
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=task_id):
                await backend.wait(task_id, timeout=0.3, interval=0.05)
            assert 0.25 <= time.monotonic() - started < 2.0

        backend_kit.run(scenario)

    # -- saved groups

    def test_group_save_restore_forget_round_trip(self, backend_kit: BackendKit) -> None:
        """A saved group reads back equal, is replaced by a new save, and is gone once forgotten."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            group_id, parent, nested = backend_kit.group_id(), backend_kit.task_id(), backend_kit.group_id()
            members = [[[backend_kit.task_id(), None], None] for _ in range(3)]
            inner = [[nested, None], [[[backend_kit.task_id(), None], None]]]
            saved = [[group_id, [[parent, None], None]], [*members, inner]]
            assert await backend.restore_group(group_id) is None
            await backend.save_group(group_id, saved)
            assert await backend.restore_group(group_id) == saved
            # Another client reads it; saving again replaces it.
            assert await backend_kit.backend().restore_group(group_id) == saved
            again = [[group_id, None], members[:1]]
            await backend.save_group(group_id, again)
            assert await backend.restore_group(group_id) == again
            await backend.forget_group(group_id)
            assert await backend.restore_group(group_id) is None
            await backend.forget_group(group_id)  # forgetting twice is fine

        backend_kit.run(scenario)

    # -- the chord counter

    def test_chord_completes_once_with_the_parts_in_header_order(self, backend_kit: BackendKit) -> None:
        """The last part claims the chord with every result in header order, exactly once."""

        async def scenario() -> None:
            backend, other = backend_kit.backend(), backend_kit.backend()
            group_id = backend_kit.group_id()
            parts = _header(group_id, 6)
            parts[4] = ChordPart(parts[4].task_id, 4, states.FAILURE, _failure("boom"))
            arrival = [3, 5, 0, 4, 1]
            for n in arrival:
                assert await (backend if n % 2 else other).chord_part(group_id, parts[n], 6) is None
            claim = await other.chord_part(group_id, parts[2], 6)
            assert claim is not None and claim.group_id == group_id
            assert list(claim.parts) == parts  # by index, whatever the arrival order
            assert claim.values[4] == _failure("boom") and claim.parts[4].status == states.FAILURE
            # While the claim holds, nobody else gets the chord; after chord_done, late copies are ignored.
            assert await backend.chord_part(group_id, parts[2], 6) is None
            await backend.chord_done(claim)
            for part in parts:
                assert await other.chord_part(group_id, part, 6) is None

        backend_kit.run(scenario)

    def test_chord_grown_by_add_to_chord_waits_for_the_added_parts(self, backend_kit: BackendKit) -> None:
        """``chord_grow`` (a header task's ``add_to_chord``) makes the header larger than the size its
        parts report, whether it comes before any report or after some."""

        async def scenario() -> None:
            backend, other = backend_kit.backend(), backend_kit.backend()
            for grow_first in (True, False):
                group_id = backend_kit.group_id()
                await backend.chord_begin(group_id, 2)
                first, second, added, again = _header(group_id, 4)
                if grow_first:
                    await other.chord_grow(group_id, 2)
                assert await backend.chord_part(group_id, first, 2) is None
                if not grow_first:
                    await other.chord_grow(group_id, 2)
                assert await backend.chord_part(group_id, second, 2) is None
                assert await other.chord_part(group_id, added, 2) is None
                claim = await backend.chord_part(group_id, again, 2)
                assert claim is not None and list(claim.parts) == [first, second, added, again]
                await backend.chord_done(claim)

        backend_kit.run(scenario)

    def test_chord_counts_a_redelivered_part_once(self, backend_kit: BackendKit) -> None:
        """A part reported twice (a redelivered message) is counted once."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            group_id = backend_kit.group_id()
            first, second, third = _header(group_id, 3)
            assert await backend.chord_part(group_id, first, 3) is None
            # The same task reported again (a redelivered message, with another result): not counted again.
            rerun = ChordPart(first.task_id, 0, states.SUCCESS, "another run")
            assert await backend.chord_part(group_id, rerun, 3) is None
            assert await backend.chord_part(group_id, second, 3) is None
            assert await backend.chord_part(group_id, second, 3) is None
            claim = await backend.chord_part(group_id, third, 3)
            assert claim is not None and list(claim.parts) == [first, second, third]
            await backend.chord_done(claim)

        backend_kit.run(scenario)

    def test_chord_parts_without_index_come_last_in_arrival_order(self, backend_kit: BackendKit) -> None:
        """Parts without a header index come after the indexed ones, in arrival order."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            group_id = backend_kit.group_id()
            indexed = _header(group_id, 2)
            loose = ChordPart(f"{group_id}-loose", None, states.SUCCESS, "x")
            assert await backend.chord_part(group_id, loose, 3) is None
            assert await backend.chord_part(group_id, indexed[1], 3) is None
            claim = await backend.chord_part(group_id, indexed[0], 3)
            assert claim is not None and list(claim.parts) == [*indexed, loose]
            await backend.chord_done(claim)

        backend_kit.run(scenario)

    def test_chord_claim_passes_on_when_its_lease_runs_out(self, backend_kit: BackendKit) -> None:
        """A claim whose lease ran out passes to the next report, and the old claimant cannot end it."""

        """A worker that claimed the chord and died: the redelivered part claims it again, once."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            group_id = backend_kit.group_id()
            parts = _header(group_id, 2)
            assert await backend.chord_part(group_id, parts[0], 2, lease=0.3) is None
            lost = await backend.chord_part(group_id, parts[1], 2, lease=0.3)
            assert lost is not None
            assert await backend.chord_part(group_id, parts[1], 2, lease=0.3) is None  # the lease holds
            await asyncio.sleep(0.4)
            again = await backend.chord_part(group_id, parts[1], 2, lease=30.0)
            assert again is not None and again.parts == lost.parts and again.token != lost.token
            # The first claimant wakes up late: it cannot end a chord that is no longer its own.
            await backend.chord_done(lost)
            assert await backend.chord_part(group_id, parts[0], 2) is None  # still claimed by `again`
            await backend.chord_done(again)
            assert await backend.chord_part(group_id, parts[1], 2, lease=0.3) is None

        backend_kit.run(scenario)

    def test_chord_begin_lets_a_done_chord_run_again(self, backend_kit: BackendKit) -> None:
        """``chord_begin`` resets a finished chord, so the same frozen chord can run again."""

        async def scenario() -> None:
            backend = backend_kit.backend()
            group_id = backend_kit.group_id()
            await backend.chord_begin(group_id, 1)
            [part] = _header(group_id, 1)
            first = await backend.chord_part(group_id, part, 1)
            assert first is not None
            await backend.chord_done(first)
            assert await backend.chord_part(group_id, part, 1) is None
            await backend.chord_begin(group_id, 1)  # the same frozen chord, applied again
            again = await backend.chord_part(group_id, part, 1)
            assert again is not None and again.parts == first.parts
            await backend.chord_done(again)

        backend_kit.run(scenario)

    def test_chord_concurrent_reports_complete_it_exactly_once(self, backend_kit: BackendKit) -> None:
        """Reports racing from eight threads, copies included, claim the chord exactly once."""

        for _ in range(2):
            claims, elapsed = _race(backend_kit, size=200, callers=8, copies=40)
            print(f"{backend_kit.url}: 200 parts + 40 copies from 8 threads in {elapsed:.3f}s")

            async def finish(claim: ChordClaim = claims[0]) -> None:
                backend = backend_kit.backend()
                await backend.chord_done(claim)
                assert await backend.chord_part(claim.group_id, claim.parts[0], 200) is None

            backend_kit.run(finish)

    @pytest.mark.chaos
    def test_chord_concurrent_reports_many_rounds(self, backend_kit: BackendKit) -> None:
        """The concurrent-report race for many rounds, large and small (marked ``chaos``: long)."""

        timings = [_race(backend_kit, size=200, callers=8, copies=100)[1] for _ in range(15)]
        print(f"{backend_kit.url}: 15 rounds, slowest {max(timings):.3f}s, mean {sum(timings) / 15:.3f}s")
        small = [_race(backend_kit, size=2, callers=2, copies=2)[1] for _ in range(100)]
        print(f"{backend_kit.url}: 100 two-part races, slowest {max(small):.3f}s")


class CleanupContract:
    """For a backend with a ``cleanup()`` sweep: expired records go, fresh and unfinished ones stay.

    Backends whose store expires records itself (Redis, with ``SET EX``) have nothing to sweep and
    leave this suite out.
    """

    def test_cleanup_deletes_expired_results(self, backend_kit: BackendKit) -> None:
        """``cleanup`` deletes finished records older than ``expires``; fresh and unfinished ones stay."""

        async def scenario() -> None:
            backend = backend_kit.backend(expires=3600.0)
            old, fresh, running = backend_kit.task_id(), backend_kit.task_id(), backend_kit.task_id()
            await backend.store(
                [
                    ResultMeta(old, states.SUCCESS, result=1, date_done=_now() - timedelta(hours=2)),
                    ResultMeta(fresh, states.SUCCESS, result=2, date_done=_now() - timedelta(minutes=30)),
                    ResultMeta(running, states.STARTED),
                ]
            )
            removed = await backend.cleanup()  # type: ignore[attr-defined]
            assert removed >= 1
            assert set(await backend.get_many([old, fresh, running])) == {fresh, running}

        backend_kit.run(scenario)

"""GroupResult on the memory backend: order, timeouts, failures, counts, save and restore."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import celeriac
from celeriac import AsyncResult, Celeriac, GroupResult, states
from celeriac.backends import ResultMeta
from celeriac.exceptions import TimeoutError
from celeriac.memory import backend as memory_backend
from celeriac.result import result_from_tuple


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = f"group-unit-{uuid.uuid4().hex[:8]}"
    made = Celeriac("g", broker=f"memory://{name}", backend=f"memory://{name}")
    yield made
    made.close()
    memory_backend.reset(f"memory://{name}")


def store(app: Celeriac, *metas: ResultMeta) -> None:
    async def write() -> None:
        await app.backend().store(list(metas))

    app.run(write())


def done(task_id: str, value: Any) -> ResultMeta:
    return ResultMeta(task_id, states.SUCCESS, result=value, date_done=datetime.now(UTC))


def failed(task_id: str, message: str) -> ResultMeta:
    exc = {"exc_type": "KeyError", "exc_message": [message], "exc_module": "builtins"}
    return ResultMeta(task_id, states.FAILURE, result=exc, date_done=datetime.now(UTC))


def group_of(app: Celeriac, size: int) -> GroupResult[Any]:
    ids = [f"t{n}-{uuid.uuid4().hex[:6]}" for n in range(size)]
    return GroupResult(f"g-{uuid.uuid4().hex[:6]}", [AsyncResult[Any](t, app=app) for t in ids], app=app)


def later(delay: float, action: Any) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_group_result_is_public() -> None:
    assert "GroupResult" in celeriac.__all__ and celeriac.GroupResult is GroupResult


def test_join_returns_values_in_group_order_whatever_order_they_finish(app: Celeriac) -> None:
    group = group_of(app, 4)
    ids = [r.id for r in group]
    store(app, done(ids[3], "d"), done(ids[1], "b"))
    finishing = later(0.2, lambda: store(app, done(ids[2], "c"), done(ids[0], "a")))
    started = time.monotonic()
    assert group.join(timeout=5) == ["a", "b", "c", "d"]
    assert 0.15 < time.monotonic() - started < 2
    assert group.get() == ["a", "b", "c", "d"]  # known now: no waiting
    finishing.join()


def test_timeout_bounds_the_whole_join(app: Celeriac) -> None:
    group = group_of(app, 3)
    store(app, done(group[0].id, 1))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        group.get(timeout=0.3)
    assert 0.25 < time.monotonic() - started < 1.5


def test_failure_propagates_at_once_or_comes_back_as_a_value(app: Celeriac) -> None:
    group = group_of(app, 3)
    store(app, failed(group[1].id, "gone"))
    started = time.monotonic()
    # Member 0 never finishes: the failure of member 1 ends the join anyway.
    with pytest.raises(KeyError, match="gone"):
        group.get(timeout=5)
    assert time.monotonic() - started < 1
    store(app, done(group[0].id, 0), done(group[2].id, 2))
    values = group.get(propagate=False)
    assert values[0] == 0 and values[2] == 2
    assert isinstance(values[1], KeyError) and values[1].args == ("gone",)


def test_state_counts(app: Celeriac) -> None:
    group = group_of(app, 3)
    assert (group.ready(), group.waiting(), group.completed_count()) == (False, True, 0)
    store(app, done(group[0].id, 0), done(group[1].id, 1))
    assert (group.ready(), group.successful(), group.completed_count()) == (False, False, 2)
    store(app, failed(group[2].id, "x"))
    assert (group.ready(), group.waiting(), group.failed(), group.successful()) == (True, False, True, False)
    assert group.completed_count() == 2


def test_sequence_protocol_and_celerys_tuple(app: Celeriac) -> None:
    parent = AsyncResult[Any]("p1", app=app)
    group = GroupResult("g1", [AsyncResult[Any]("a", app=app), AsyncResult[Any]("b", app=app)], parent=parent)
    assert len(group) == 2 and [r.id for r in group] == ["a", "b"] and group[1].id == "b"
    assert group.children == group.results and group.app is app  # app taken from the members
    assert group.as_tuple() == (("g1", (("p1", None), None)), [(("a", None), None), (("b", None), None)])
    assert result_from_tuple(group.as_tuple(), app) == group
    with pytest.raises(ValueError):
        GroupResult("empty")


def test_save_restore_forget(app: Celeriac) -> None:
    group = group_of(app, 2)
    nested = GroupResult("inner", [AsyncResult[Any]("x", app=app)], app=app)
    whole = GroupResult(group.id, [*group.results, nested], app=app)
    assert GroupResult.restore(whole.id, app=app) is None
    whole.save()
    restored = GroupResult.restore(whole.id, app=app)
    assert restored == whole and isinstance(restored[2], GroupResult)
    store(app, done(group[0].id, 0), done(group[1].id, 1), done("x", "nested"))
    assert restored.get(timeout=5) == [0, 1, ["nested"]]
    restored.forget()
    assert GroupResult.restore(whole.id, app=app) is None
    assert AsyncResult[Any](group[0].id, app=app).state == states.PENDING


def test_revoke_marks_every_member(app: Celeriac) -> None:
    group = group_of(app, 2)
    store(app, done(group[0].id, "kept"))
    group.revoke()
    assert group.get(propagate=False)[0] == "kept"
    assert AsyncResult[Any](group[1].id, app=app).state == states.REVOKED


def test_delete_keeps_the_members(app: Celeriac) -> None:
    group = group_of(app, 1)
    store(app, done(group[0].id, 5))
    group.save()
    group.delete()
    assert GroupResult.restore(group.id, app=app) is None
    assert AsyncResult[Any](group[0].id, app=app).get(timeout=1) == 5


def test_async_twins(app: Celeriac) -> None:
    group = group_of(app, 2)

    async def scenario() -> None:
        await app.backend().store([done(group[0].id, 1), done(group[1].id, 2)])
        await group.asave()
        restored = await GroupResult.arestore(group.id, app=app)
        assert restored is not None and await restored.ajoin(timeout=5) == [1, 2]
        assert await restored.astates() == [states.SUCCESS, states.SUCCESS]
        await restored.aforget()
        assert await GroupResult.arestore(group.id, app=app) is None

    app.run(scenario())


def test_junk_tuples_are_refused(app: Celeriac) -> None:
    for junk in (None, "x", [1, None], [["id", None], "members"], [[None, None], None]):
        with pytest.raises(ValueError):
            result_from_tuple(junk, app)

"""Saved groups and the chord counter, shared with Celery 5.7 both ways.

On Redis (database 14, no key prefix on either side) Celery's ``GroupResult.save()`` and ours write the
same ``celery-taskset-meta-<id>`` key, and a chord's header may be counted partly by Celery's
``RedisBackend.on_chord_part_return`` (what a Celery worker calls when a header task ends) and partly
by our ``chord_part``: the body is sent once, by whichever side completes the header. On SQLite and
PostgreSQL, Celery's database backend and ours share ``celery_tasksetmeta``, including the pickled rows
Celery writes with the pickle serializer, which we read without unpickling Celery's classes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.app.task import Context
from celery.result import GroupResult as CeleryGroupResult

from celeriac import AsyncResult, Celeriac, GroupResult, states
from celeriac.backends.base import ChordPart
from celeriac.sql.backend import group_meta
from celeriac.sql.database import engine_url
from tests.interop.conftest import require_redis

if TYPE_CHECKING:
    from tests.interop.conftest import ResultDB

REDIS = "redis://127.0.0.1:6379/14"
# Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
WAIT = 10.0


class Ids:
    """Fresh task and group ids whose Redis keys (results, saved groups, chord state) go after the test."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def task(self) -> str:
        task_id = f"interop-{uuid.uuid4()}"
        self.keys.append(f"celery-task-meta-{task_id}")
        return task_id

    def group(self) -> str:
        group_id = f"interop-{uuid.uuid4()}"
        self.keys += [f"celery-taskset-meta-{group_id}{s}" for s in ("", ".j", ".t", ".s", ".d", ".c")]
        return group_id


@pytest.fixture
def ids() -> Iterator[Ids]:
    require_redis()
    import redis

    made = Ids()
    yield made
    client = redis.Redis.from_url(REDIS)
    try:
        if made.keys:
            client.delete(*made.keys)
    finally:
        client.close()


def _shape(group: Any) -> Any:
    """A group's ids as nested lists (ours and Celery's alike): [id, parent id, [members]]."""
    members = getattr(group, "results", None)
    parent = group.parent.id if group.parent is not None else None
    if members is None:
        return [group.id, parent]
    return [group.id, parent, [_shape(m) for m in members]]


def _celery_group(celery_app: Celery, ids: Callable[[], str], gid: str) -> CeleryGroupResult:
    inner = celery_app.GroupResult(f"{gid}-inner", [celery_app.AsyncResult(ids())])
    members = [celery_app.AsyncResult(ids()) for _ in range(3)]
    return celery_app.GroupResult(gid, [*members, inner], parent=celery_app.AsyncResult(ids()))


def _our_group(app: Celeriac, ids: Callable[[], str], gid: str) -> GroupResult[Any]:
    inner = GroupResult(f"{gid}-inner", [AsyncResult[Any](ids(), app=app)], app=app)
    members: list[Any] = [AsyncResult[Any](ids(), app=app) for _ in range(3)]
    return GroupResult(gid, [*members, inner], app=app, parent=AsyncResult[Any](ids(), app=app))


# -- saved groups on Redis ----------------------------------------------------------------------------


def test_redis_celery_saves_a_group_and_celeriac_restores_it(
    ids: Ids, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    celery_app = make_celery(result_backend=REDIS)
    saved = _celery_group(celery_app, ids.task, ids.group())
    saved.save()
    for n, member in enumerate(saved.results[:3]):
        celery_app.backend.store_result(member.id, {"n": n}, states.SUCCESS)
    celery_app.backend.store_result(saved.results[3].results[0].id, "inner", states.SUCCESS)

    app = make_celeriac(backend=REDIS)
    restored = GroupResult.restore(saved.id, app=app)
    assert restored is not None and _shape(restored) == _shape(saved)
    assert restored.get(timeout=WAIT) == [{"n": 0}, {"n": 1}, {"n": 2}, ["inner"]]
    restored.delete()
    assert celery_app.GroupResult.restore(saved.id) is None


def test_redis_celeriac_saves_a_group_and_celery_restores_it(
    ids: Ids, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=REDIS)
    saved = _our_group(app, ids.task, ids.group())
    saved.save()
    celery_app = make_celery(result_backend=REDIS)
    restored = celery_app.GroupResult.restore(saved.id)
    assert isinstance(restored, CeleryGroupResult) and _shape(restored) == _shape(saved)
    for n, member in enumerate(saved.results[:3]):
        celery_app.backend.store_result(member.id, n, states.SUCCESS)
    celery_app.backend.store_result(saved.leaves()[-1].id, 3, states.SUCCESS)
    # Read without Celery's get(): that starts Celery's pub/sub consumer, whose connection Celery never
    # closes (a ResourceWarning later on).
    assert restored.ready() and [r.result for r in restored.results[:3]] == [0, 1, 2]
    assert restored.results[3].results[0].result == 3
    # Expired like a result: Celery's result_expires is ours too (one day by default).
    import redis

    with redis.Redis.from_url(REDIS) as client:
        assert 86000 < client.ttl(f"celery-taskset-meta-{saved.id}") <= 86400


# -- one chord's header counted by Celery and by celeriac ---------------------------------------------


def _body(celery_app: Celery) -> Any:
    # ignore_result: else Celery subscribes to the body's result channel when it sends the body, on a
    # pub/sub connection it never closes (a ResourceWarning in some later test).
    return celery_app.signature("interop.body").set(ignore_result=True)


def _report_with_celery(celery_app: Celery, gid: str, part: ChordPart, body: Any) -> None:
    """What a Celery worker does when a header task of chord ``gid`` ends."""
    request = Context(id=part.task_id, group=gid, group_index=part.index, chord=body)
    celery_app.backend.on_chord_part_return(request, part.status, part.result)


def _bodies_sent(celery_app: Celery) -> list[Any]:
    """The args of every task message Celery published on its default queue (kombu memory://)."""
    sent = []
    with celery_app.connection_for_write() as conn:
        queue = conn.SimpleQueue(celery_app.conf.task_default_queue, no_ack=True)
        try:
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    break
                sent.append((message.headers["task"], message.payload[0]))
        finally:
            queue.close()
    return sent


def _run(app: Celeriac, coroutine: Any) -> Any:
    return app.run(coroutine)


def test_redis_chord_completed_by_celeriac_after_celery_counted_some_parts(
    ids: Ids, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    celery_app = make_celery(result_backend=REDIS)
    gid = ids.group()
    body = _body(celery_app)
    parts = [ChordPart(ids.task(), n, states.SUCCESS, {"n": n}) for n in range(4)]
    celery_app.backend.set_chord_size(gid, 4)  # Celery's client does this when it sends the header
    _report_with_celery(celery_app, gid, parts[2], body)
    _report_with_celery(celery_app, gid, parts[0], body)
    _report_with_celery(celery_app, gid, parts[0], body)  # redelivered on the Celery side

    app = make_celeriac(backend=REDIS)

    async def ours() -> None:
        backend = app.backend()
        assert await backend.chord_part(gid, parts[0], 4) is None  # and once more on ours
        assert await backend.chord_part(gid, parts[3], 4) is None
        claim = await backend.chord_part(gid, parts[1], 4)
        assert claim is not None and list(claim.parts) == parts
        await backend.chord_done(claim)

    _run(app, ours())
    # A late copy of a header task on a Celery worker sends nothing: the chord is done.
    _report_with_celery(celery_app, gid, parts[3], body)
    assert _bodies_sent(celery_app) == []


def test_redis_chord_completed_by_celery_after_celeriac_counted_some_parts(
    ids: Ids, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    celery_app = make_celery(result_backend=REDIS)
    gid = ids.group()
    body = _body(celery_app)
    failure = {"exc_type": "ValueError", "exc_message": ["late"], "exc_module": "builtins"}
    parts = [ChordPart(ids.task(), n, states.SUCCESS, n * 10) for n in range(3)]
    app = make_celeriac(backend=REDIS)

    async def ours() -> None:
        # No set_chord_size here: a header sent by celeriac records its size with its first part.
        backend = app.backend()
        for part in parts[:2]:
            assert await backend.chord_part(gid, part, 3) is None

    _run(app, ours())
    _report_with_celery(celery_app, gid, parts[2], body)
    assert _bodies_sent(celery_app) == [("interop.body", [[0, 10, 20]])]  # once, in header order

    async def late() -> None:
        assert await app.backend().chord_part(gid, parts[1], 3) is None
        other = ChordPart(parts[0].task_id, 0, states.FAILURE, failure)
        assert await app.backend().chord_part(gid, other, 3) is None

    _run(app, late())
    assert _bodies_sent(celery_app) == []


# -- saved groups in celery_tasksetmeta (SQLite, PostgreSQL) ----------------------------------------


@pytest.fixture
def group_rows(result_db: ResultDB) -> Iterator[list[str]]:
    """Group ids whose ``celery_tasksetmeta`` rows are deleted after the test."""
    made: list[str] = []
    yield made
    if result_db.kind != "sqlite" and made:
        engine = sa.create_engine(engine_url(result_db.url))
        try:
            with engine.begin() as conn:
                conn.execute(group_meta.delete().where(group_meta.c.taskset_id.in_(made)))
        finally:
            engine.dispose()


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_sql_celery_saves_a_group_and_celeriac_restores_it(
    result_db: ResultDB,
    group_rows: list[str],
    serializer: str,
    make_celeriac: Callable[..., Celeriac],
    make_celery: Callable[..., Celery],
) -> None:
    # With the pickle serializer Celery pickles the GroupResult object (with its backend and app); we
    # read it without importing any of it.
    celery_app = make_celery(
        result_backend=result_db.url,
        result_serializer=serializer,
        result_accept_content=["json", "pickle"],
        accept_content=["json", "pickle"],
    )
    gid = f"interop-{uuid.uuid4()}"
    group_rows.append(gid)
    saved = _celery_group(celery_app, result_db.task_id, gid)
    if serializer == "pickle":  # Celery pickles only the group's own members, not a parent
        saved.parent = None
    saved.save()
    engine = sa.create_engine(engine_url(result_db.url))
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(group_meta.c.result).where(group_meta.c.taskset_id == gid)).scalar()
    finally:
        engine.dispose()
    assert row is not None and bytes(row)[:1] == (b"\x80" if serializer == "pickle" else b"[")
    app = make_celeriac(backend=result_db.url)  # accepts JSON only
    restored = GroupResult.restore(gid, app=app)
    assert restored is not None and _shape(restored) == _shape(saved)
    restored.delete()
    assert celery_app.GroupResult.restore(gid) is None


def test_sql_celeriac_saves_a_group_and_celery_restores_it(
    result_db: ResultDB,
    group_rows: list[str],
    make_celeriac: Callable[..., Celeriac],
    make_celery: Callable[..., Celery],
) -> None:
    app = make_celeriac(backend=result_db.url)
    gid = f"interop-{uuid.uuid4()}"
    group_rows.append(gid)
    saved = _our_group(app, result_db.task_id, gid)
    saved.save()
    celery_app = make_celery(result_backend=result_db.url)
    restored = celery_app.GroupResult.restore(gid)
    assert isinstance(restored, CeleryGroupResult) and _shape(restored) == _shape(saved)
    celery_app.backend.store_result(saved.results[0].id, "first", states.SUCCESS)
    assert restored.results[0].get(timeout=WAIT) == "first"


def test_redis_chord_begun_by_celeriac_completed_by_celery_workers_alone(
    ids: Ids, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    """A header sent by a celeriac client whose every task runs on a Celery worker."""
    app = make_celeriac(backend=REDIS)
    celery_app = make_celery(result_backend=REDIS)
    gid = ids.group()

    async def begin() -> None:
        await app.backend().chord_begin(gid, 2)

    _run(app, begin())
    body = _body(celery_app)
    for n in (1, 0):
        _report_with_celery(celery_app, gid, ChordPart(ids.task(), n, states.SUCCESS, f"v{n}"), body)
    assert _bodies_sent(celery_app) == [("interop.body", [["v0", "v1"]])]

"""Every canvas primitive, end to end, on every broker/backend pair: an in-process worker runs the tasks.

The same scenarios run on memory, SQLite, PostgreSQL, MariaDB and Redis (each as broker and result backend),
on Redis brokering for a SQL backend and on RabbitMQ brokering for Redis (``CANVAS_PAIRS`` in conftest).
Every ``get`` has a timeout: a workflow that never ends fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, GroupResult, chain, chord, group, states
from celeriac.canvas import StampingVisitor, chunks, xmap, xstarmap
from celeriac.exceptions import ChordError, ImproperlyConfigured, TimeoutError
from celeriac.testing import start_worker
from celeriac.testing.contract import BrokerKit

T = 20.0  # every wait's bound: generous for a busy 2-core machine


class Flow:
    """An app with the scenario tasks, its worker running; ``errbacks`` counts errback runs by task id.

    ``idle_queue`` is a queue no worker consumes.
    """

    def __init__(self, app: Celeriac, idle_queue: str) -> None:
        self.app = app
        self.idle_queue = idle_queue
        self.errbacks: list[str] = []
        self.bodies: list[Any] = []
        lock = threading.Lock()

        @app.task(name="canvas.add")
        def add(x: int, y: int) -> int:
            return x + y

        @app.task(name="canvas.total")
        def total(values: list[int]) -> int:
            with lock:
                self.bodies.append(values)
            return sum(values)

        @app.task(name="canvas.boom")
        def boom(*args: Any) -> None:
            raise ValueError("boom")

        @app.task(name="canvas.ident")
        def ident(x: Any) -> Any:
            return x

        @app.task(name="canvas.on_error")
        def on_error(task_id: str) -> str:
            with lock:
                self.errbacks.append(task_id)
            return task_id

        @app.task(name="canvas.replaced", bind=True)
        def replaced(task: Any, x: int) -> None:
            task.replace(add.s(x, 100))

        @app.task(name="canvas.fan_out", bind=True)
        def fan_out(task: Any, x: int) -> None:
            task.replace(group(add.s(x, 1), add.s(x, 2)))

        @app.task(name="canvas.count")
        def count(values: list[Any]) -> int:
            return len(values)

        self.runs: Counter[int] = Counter()
        self.new_style: list[tuple[str | None, str, bool]] = []

        @app.task(name="canvas.on_error_new")
        def on_error_new(request: Any, exc: BaseException, traceback: str | None) -> None:
            with lock:
                self.new_style.append((request.id, repr(exc), "boom" in (traceback or "")))

        self.on_error_new = on_error_new

        @app.task(name="canvas.replaced_empty", bind=True)
        def replaced_empty(task: Any, *_: Any) -> None:
            task.replace(chain())

        self.replaced_empty = replaced_empty

        @app.task(name="canvas.sends_a_chain")
        def sends_a_chain() -> Any:
            return (add.s(1, 1) | add.s(2) | group(add.s(3), add.s(4)) | total.s()).apply_async()

        self.sends_a_chain = sends_a_chain

        @app.task(name="canvas.replaced_by_chain_and_group", bind=True)
        def replaced_by_chain_and_group(task: Any) -> None:
            task.replace(chain(add.s(1, 2), group(add.s(1), add.s(2))))

        self.replaced_by_chain_and_group = replaced_by_chain_and_group

        @app.task(name="canvas.adds_to_its_chord", bind=True)
        def adds_to_its_chord(task: Any, nums: list[int], val: int) -> int:
            for num in nums:
                task.add_to_chord(add.s(num, val))
            return 0

        self.adds_to_its_chord = adds_to_its_chord

        @app.task(name="canvas.stamps", bind=True)
        def stamps(task: Any, *_: Any) -> dict[str, Any]:
            return dict(task.request.stamps or {})

        self.stamps = stamps

        @app.task(name="canvas.counted")
        def counted(x: int) -> int:
            with lock:
                self.runs[x] += 1
            return x

        self.fan_out, self.count, self.counted = fan_out, count, counted

        self.add, self.total, self.boom, self.ident, self.on_error, self.replaced = (
            add,
            total,
            boom,
            ident,
            on_error,
            replaced,
        )


@pytest.fixture
def flow(canvas_stores: tuple[BrokerKit, str]) -> Iterator[Flow]:
    kit, backend = canvas_stores
    app = Celeriac("canvas", broker=kit.url, backend=backend)
    app.conf.task_default_queue = kit.queue()
    app.conf.broker_transport_options = dict(kit.defaults)
    flow = Flow(app, idle_queue=kit.queue())
    try:
        with start_worker(app, concurrency=4):
            yield flow
    finally:
        app.close()


def test_chain_passes_each_result_on(flow: Flow) -> None:
    result = (flow.add.s(1, 2) | flow.add.s(3) | flow.add.s(4)).apply_async()
    assert result.get(timeout=T) == 10
    assert result.parent is not None and result.parent.get(timeout=T) == 6


def test_group_returns_results_in_order(flow: Flow) -> None:
    result = group(flow.add.s(i, i) for i in range(10)).apply_async()
    assert result.get(timeout=T) == [2 * i for i in range(10)]
    assert result.completed_count() == 10 and result.successful()


def test_chord_gives_the_body_the_header_results_in_order(flow: Flow) -> None:
    result = chord([flow.add.s(i, i) for i in range(8)], flow.total.s()).apply_async()
    assert result.get(timeout=T) == 56
    assert flow.bodies == [[2 * i for i in range(8)]]
    assert result.parent is not None and result.parent.get(timeout=T) == [2 * i for i in range(8)]


def test_chord_spelled_as_a_call_and_with_an_empty_header(flow: Flow) -> None:
    assert chord([flow.add.s(1, 1)])(flow.total.s()).get(timeout=T) == 2
    assert chord([], flow.total.s()).apply_async().get(timeout=T) == 0


def test_chains_of_groups_groups_of_chains_and_nested_chords(flow: Flow) -> None:
    add, total = flow.add, flow.total
    assert (add.s(1, 2) | group(add.s(1), add.s(2)) | total.s()).apply_async().get(timeout=T) == 9
    assert group(add.s(1, 2) | add.s(3), add.s(5, 6)).apply_async().get(timeout=T) == [6, 11]
    assert chord([add.s(1, 2) | add.s(3), add.s(5, 6)], total.s()).apply_async().get(timeout=T) == 17
    nested = chord([chord([add.s(1, 1), add.s(2, 2)], total.s()), add.s(10, 10)], total.s())
    assert nested.apply_async().get(timeout=T) == 26
    inner_group = chord([group(add.s(1, 1), add.s(2, 2)), add.s(3, 3)], total.s())  # spliced in: 3 parts
    assert inner_group.apply_async().get(timeout=T) == 12
    fan_in = group(add.s(1, 1), add.s(2, 2)) | group(total.s(), flow.count.s())  # a chord with a group body
    assert fan_in.apply_async().get(timeout=T) == [6, 2]
    assert (add.s(1, 1) | group(add.s(1), add.s(2))).apply_async().get(timeout=T) == [3, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], total.s() | add.s(100)).apply_async().get(timeout=T) == 106
    middle = add.s(1, 1) | chord([add.s(1), add.s(2)], total.s()) | add.s(1000)
    assert middle.apply_async().get(timeout=T) == 1007


def test_chunks_map_and_starmap(flow: Flow) -> None:
    pairs = [(i, i) for i in range(5)]
    assert flow.add.chunks(pairs, 2).apply_async().get(timeout=T) == [[0, 2], [4, 6], [8]]
    assert chunks(flow.add.s(), pairs, 5).apply_async().get(timeout=T) == [[0, 2, 4, 6, 8]]
    assert xmap(flow.total.s(), [[1], [2, 3]]).apply_async().get(timeout=T) == [1, 5]
    assert xstarmap(flow.add.s(), pairs[:2]).apply_async().get(timeout=T) == [0, 2]
    assert flow.total.map([[4]]).apply_async().get(timeout=T) == [4]


def test_a_failing_header_task_fails_the_body_and_runs_its_errback_once(flow: Flow) -> None:
    body = flow.total.s()
    body.link_error(flow.on_error.s())
    failing = flow.boom.s()
    result = chord([flow.add.s(1, 1), failing, flow.add.s(2, 2)], body).apply_async()
    with pytest.raises(ChordError) as caught:
        result.get(timeout=T)
    header = result.parent
    assert header is not None
    culprit = header.results[1].id
    assert culprit in str(caught.value) and "ValueError('boom')" in str(caught.value)
    assert result.state == states.FAILURE
    _eventually(lambda: flow.errbacks == [result.id])
    assert flow.bodies == []


def test_a_failure_inside_a_chain_in_a_chord_header_reaches_the_errback_once(flow: Flow) -> None:
    add, boom, ident = flow.add, flow.boom, flow.ident
    body = flow.total.s()
    body.link_error(flow.on_error.s())
    header = [group(add.s(1, 1) | boom.s() | ident.s(), add.s(2, 2) | ident.s()), add.s(3, 3)]
    result = chord(header, body).apply_async()
    with pytest.raises(ChordError, match="boom"):
        result.get(timeout=T)
    _eventually(lambda: flow.errbacks == [result.id])
    assert flow.bodies == []


def test_a_failed_chain_link_fails_every_later_result(flow: Flow) -> None:
    result = (flow.add.s(1, 1) | flow.boom.s() | flow.ident.s() | flow.ident.s()).apply_async()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=T)
    assert result.parent is not None
    with pytest.raises(ValueError, match="boom"):
        result.parent.get(timeout=T)


def test_link_and_link_error(flow: Flow) -> None:
    sig = flow.add.s(2, 3)
    sig.link(flow.total.si([7]))
    assert sig.apply_async().get(timeout=T) == 5
    _eventually(lambda: flow.bodies == [[7]])
    bad = flow.boom.s()
    bad.link_error(flow.on_error.s())
    result = bad.apply_async()
    with pytest.raises(ValueError):
        result.get(timeout=T)
    _eventually(lambda: flow.errbacks == [result.id])


def test_replace_takes_over_the_id_the_chain_and_the_chord(flow: Flow) -> None:
    assert flow.replaced.delay(1).get(timeout=T) == 101
    assert (flow.replaced.s(2) | flow.add.s(1)).apply_async().get(timeout=T) == 103
    assert chord([flow.replaced.s(3), flow.add.s(1, 1)], flow.total.s()).apply_async().get(timeout=T) == 105
    assert flow.fan_out.delay(10).get(timeout=T) == [11, 12]  # a group's replacement gives its list


def test_a_chords_link_and_link_error_are_its_bodys(flow: Flow) -> None:
    add, total = flow.add, flow.total
    linked = chord([add.s(1, 1), add.s(2, 2)], total.s()).apply_async(link=flow.counted.s())
    assert linked.get(timeout=T) == 6
    _eventually(lambda: flow.runs == {6: 1})  # the body's result, once: never the header tasks'
    failing = chord([add.s(1, 1), flow.boom.s()], total.s())
    result = failing.apply_async(link_error=flow.on_error.s())
    with pytest.raises(ChordError):
        result.get(timeout=T)
    _eventually(lambda: flow.errbacks == [result.id])  # the body's errback, with the body's id
    ends_in_chord = add.s(1, 1) | chord([add.s(1), add.s(2)], total.s())
    assert ends_in_chord.apply_async(link=flow.counted.s()).get(timeout=T) == 7
    _eventually(lambda: flow.runs == {6: 1, 7: 1})
    time.sleep(0.3)
    assert flow.runs == {6: 1, 7: 1} and flow.errbacks == [result.id]


def test_an_errback_given_as_one_signature_dict_runs_once(flow: Flow) -> None:
    body = flow.total.s()
    body["options"]["link_error"] = dict(flow.on_error.s())  # one dict, not a list: as Celery may send it
    result = chord([flow.boom.s()], body).apply_async()
    with pytest.raises(ChordError):
        result.get(timeout=T)
    _eventually(lambda: flow.errbacks == [result.id])


def test_replacing_with_a_chain_that_ends_in_a_group_gives_the_groups_list(flow: Flow) -> None:
    assert flow.replaced_by_chain_and_group.delay().get(timeout=T) == [4, 5]


def test_add_to_chord_makes_the_body_wait_for_the_added_tasks(flow: Flow) -> None:
    result = (
        group(flow.adds_to_its_chord.s([1, 2, 3], 4), flow.add.s(10, 10)) | flow.ident.s()
    ).apply_async()
    assert sorted(result.get(timeout=T)) == [0, 5, 6, 7, 20]
    with pytest.raises(ValueError, match="not part of any chord"):
        flow.adds_to_its_chord.delay([1], 1).get(timeout=T)


class _Tenant(StampingVisitor):
    def on_signature(self, actual_sig: Any, **headers: Any) -> dict[str, Any]:
        return {"on_signature": actual_sig.name.rsplit(".", 1)[-1]}


def test_a_stamped_workflow_completes_and_every_task_sees_its_stamps(flow: Flow) -> None:
    stamps, add = flow.stamps, flow.add
    flow_sig = chain(add.s(1, 1), group(stamps.s(), stamps.s()), stamps.s())
    flow_sig.stamp(_Tenant(), tenant="acme")
    result = flow_sig.apply_async()
    assert result.get(timeout=T) == {"tenant": "acme", "on_signature": "stamps"}
    groups = result.parent
    assert groups is not None and groups.get(timeout=T) == [{"tenant": "acme", "on_signature": "stamps"}] * 2
    body = stamps.s()
    stamped_chord = chord([stamps.s(), stamps.s()], body).stamp(tenant="t2")
    assert stamped_chord.apply_async().get(timeout=T) == {"tenant": "t2"}
    one = stamps.s().stamp(tenant="t3").stamp(append_stamps=True, tenant="t4")
    assert sorted(one.apply_async().get(timeout=T)["tenant"]) == ["t3", "t4"]  # appended: both kept
    direct = stamps.apply_async(stamped_headers=["mine"], mine="custom")  # Celery's direct form
    assert direct.get(timeout=T) == {"mine": "custom"}


def test_replacing_with_an_empty_chain_fails_as_in_celery(flow: Flow) -> None:
    result = (flow.ident.s(1) | flow.replaced_empty.s()).apply_async()
    with pytest.raises(ImproperlyConfigured, match="Cannot replace with an empty chain"):
        result.get(timeout=T)


def test_a_task_returning_a_result_handle_stores_celerys_tuple(flow: Flow) -> None:
    stored = flow.sends_a_chain.delay().get(timeout=T)
    (last_id, parent), members = stored  # ((id, parent tuple), None), as Celery stores it
    assert members is None and isinstance(parent, list) and len(stored) == 2
    assert flow.app.AsyncResult(last_id).get(timeout=T) == 15  # 1 + 1 + 2 = 4, then (4 + 3) + (4 + 4)


def test_get_of_every_primitive_ends_at_its_timeout(flow: Flow) -> None:
    never = flow.add.s(1, 1).set(queue=flow.idle_queue)
    for sig in (
        never,
        chain(never, flow.add.s(1)),
        group(never, flow.add.s(1, 1)),
        chord([never], flow.total.s()),
    ):
        result = sig.clone().apply_async()
        with pytest.raises(TimeoutError):
            result.get(timeout=0.5)


def test_new_style_errbacks_get_the_request_the_error_and_the_traceback(flow: Flow) -> None:
    bad = flow.boom.s(1)
    bad.link_error(flow.on_error_new.s())
    bad.link_error(flow.on_error.s())  # an old-style one beside it still gets the task's id
    result = bad.apply_async()
    with pytest.raises(ValueError):
        result.get(timeout=T)
    _eventually(lambda: flow.new_style == [(result.id, "ValueError('boom')", True)])
    _eventually(lambda: flow.errbacks == [result.id])
    body = flow.total.s()
    body.link_error(flow.on_error_new.s())
    chorded = chord([flow.boom.s()], body).apply_async()
    with pytest.raises(ChordError):
        chorded.get(timeout=T)
    _eventually(lambda: len(flow.new_style) == 2)
    assert flow.new_style[1][0] == chorded.id and flow.new_style[1][1].startswith("ChordError(")


def test_a_follow_up_that_cannot_be_sent_fails_alone_and_never_reruns_its_task(flow: Flow) -> None:
    add, counted = flow.add, flow.counted
    unsendable = add.s(1).set(priority=999)  # out of range: no retry can send it
    unsendable.link_error(flow.on_error.s())
    callback_id = unsendable.freeze().id
    assert callback_id is not None
    linked = counted.s(5)
    linked.link(unsendable)
    assert linked.apply_async().get(timeout=T) == 5
    with pytest.raises(ValueError, match="priority"):
        flow.app.AsyncResult(callback_id).get(timeout=T)
    _eventually(lambda: flow.errbacks == [callback_id])  # the failed follow-up's own errback ran

    chained = (counted.s(6) | add.s(1).set(priority=999) | add.s(2)).apply_async()
    with pytest.raises(ValueError, match="priority"):
        chained.get(timeout=T)  # the step after the unsendable one fails too: nobody waits forever
    with pytest.raises(ValueError, match="priority"):
        chorded = chord([counted.s(7), counted.s(8)], flow.total.s().set(priority=999)).apply_async()
        chorded.get(timeout=T)
    time.sleep(0.5)  # a run again, if any, would come now
    assert flow.runs == {5: 1, 6: 1, 7: 1, 8: 1}


def test_options_celery_keeps_in_embedded_signatures_are_ignored(flow: Flow) -> None:
    follow = flow.total.si([9])
    follow["options"].update(immutable=True, on_signature=None, stamp="x")  # as Celery's messages carry
    step = flow.add.s(1)
    step["options"]["immutable"] = False
    linked = flow.counted.s(9)
    linked.link(follow)
    assert (linked | step).apply_async().get(timeout=T) == 10
    _eventually(lambda: flow.bodies == [[9]])
    with pytest.raises(TypeError, match="unexpected option 'stamp'"):
        flow.add.s(1, 1).apply_async(stamp="x")  # a caller's own unknown option is still a typo


def test_a_group_body_fails_with_the_header_tasks_own_error_and_the_chain_after_it_fails_too(
    flow: Flow,
) -> None:
    """As Celery: each task of a group body fails with what the header task raised (so the group's result
    raises it), and runs its errbacks once; the steps after the body fail too, instead of waiting forever."""
    add, boom, total = flow.add, flow.boom, flow.total
    body = group(add.s(1), add.s(2))
    result = chord([add.s(1, 1), boom.s()], body).apply_async(link_error=flow.on_error.s())
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=T)
    assert isinstance(result, GroupResult)
    _eventually(lambda: sorted(flow.errbacks) == sorted(r.id for r in result.results))
    followed = chain(chord([add.s(1, 1), boom.s()], group(add.s(1), add.s(2))), chord([add.s(1)], total.s()))
    outer = group(followed, add.s(1, 1)).apply_async()
    with pytest.raises((ChordError, ValueError)):
        outer.get(timeout=T)
    assert outer.results[0].state == states.FAILURE
    time.sleep(0.3)
    assert len(flow.errbacks) == 2 and flow.bodies == []


def test_a_chord_body_that_is_a_chord_runs_the_errbacks_given_to_it_once(flow: Flow) -> None:
    add, total = flow.add, flow.total
    body = chord([total.s(), total.s()], total.s())
    result = chord([add.s(1, 1), flow.boom.s()], body).apply_async(link_error=flow.on_error.s())
    with pytest.raises(ChordError, match="boom"):
        result.get(timeout=T)
    _eventually(lambda: flow.errbacks == [result.id])  # the inner body's id: its result holds the failure
    time.sleep(0.3)
    assert flow.errbacks == [result.id] and flow.bodies == []


def test_an_errback_linked_to_a_chord_and_to_a_chord_in_its_header_runs_once(flow: Flow) -> None:
    """One failure, one call: Celery's ``chord.link_error`` links the errback to the chords in the header
    too; the inner chord's failure fails the outer one, whose body runs it."""
    inner = chord([flow.add.s(1, 1), flow.boom.s()], flow.ident.s())
    inner.link_error(flow.on_error.s())
    outer = chord([flow.ident.si(3), inner], flow.total.s())
    outer.link_error(flow.on_error.s())
    result = outer.apply_async()
    with pytest.raises(ChordError):
        result.get(timeout=T)
    _eventually(lambda: flow.errbacks == [result.id])
    time.sleep(0.3)
    assert flow.errbacks == [result.id] and flow.bodies == []


def _eventually(check: Any, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)

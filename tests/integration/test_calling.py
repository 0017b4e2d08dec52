"""The calling API against an in-process worker (``celeriac.testing``) on the memory broker."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from celeriac import states
from celeriac.exceptions import Reject, SoftTimeLimitExceeded, TaskRevokedError
from celeriac.testing import start_worker


def test_delay_get_from_threads_and_async(celeriac_app):
    @celeriac_app.task
    def add(x, y):
        return x + y

    with start_worker(celeriac_app):
        with ThreadPoolExecutor(8) as pool:
            values = list(pool.map(lambda i: add.delay(i, i).get(timeout=10), range(40)))
        assert values == [2 * i for i in range(40)]

        async def in_a_loop():
            results = [await add.adelay(i, 1) for i in range(10)]
            return [await r.aget(timeout=10) for r in results]

        assert asyncio.run(in_a_loop()) == list(range(1, 11))


def test_request_context_children_and_parent_ids(celeriac_app):
    @celeriac_app.task
    def child(x):
        return x

    @celeriac_app.task(bind=True)
    def parent(self):
        sent = child.delay(5)
        return {
            "id": self.request.id,
            "hostname": self.request.hostname,
            "child": sent.id,
            "queue": self.request.delivery_info["routing_key"],
            "root": self.request.root_id,
        }

    with start_worker(celeriac_app):
        result = parent.delay()
        info = result.get(timeout=10)
        assert info["id"] == result.id and info["root"] == result.id and info["queue"] == "celery"
        assert info["hostname"].startswith("celeriac@")
        kids = result.children
        assert [k.id for k in kids] == [info["child"]]
        assert kids[0].get(timeout=10) == 5


def test_request_context_has_every_field_of_celerys(celeriac_app):
    @celeriac_app.task(bind=True, soft_time_limit=7)
    def look(self):
        request = self.request
        return {
            "limits": [request.time_limit, request.soft_time_limit, list(request.timelimit)],
            "reply_to": request.reply_to,
            "correlation_id": request.correlation_id,
            "properties": sorted(request.properties),
            "nesting": request.replaced_task_nesting,
            "stamps": [request.stamped_headers, request.stamps],
            "group": [request.group, request.group_index, request.taskset],
            "origin": request.origin,
            "ignore_result": request.ignore_result,
            "utc": request.utc,
            "fields": sorted(request.as_dict()),
        }

    stamps = {"stamped_headers": ["on_tenant"], "stamps": {"on_tenant": "acme"}, "replaced_task_nesting": 2}
    with start_worker(celeriac_app):
        result = look.apply_async(time_limit=30, headers=stamps, group_id="g-1", group_index=3)
        info = result.get(timeout=10)
    assert info["limits"] == [30, 7, [30, 7]]  # the call's hard limit, the task's own soft one
    assert info["reply_to"] == celeriac_app.oid and info["correlation_id"] == result.id
    assert "correlation_id" in info["properties"]
    assert info["nesting"] == 2
    assert info["stamps"] == [["on_tenant"], {"on_tenant": "acme"}]
    assert info["group"] == ["g-1", 3, "g-1"]
    assert info["origin"].startswith("gen") and info["ignore_result"] is False and info["utc"] is True
    celery_fields = {
        "args",
        "callbacks",
        "called_directly",
        "chain",
        "chord",
        "correlation_id",
        "delivery_info",
        "errbacks",
        "eta",
        "expires",
        "group",
        "group_index",
        "headers",
        "hostname",
        "id",
        "ignore_result",
        "is_eager",
        "kwargs",
        "logfile",
        "loglevel",
        "origin",
        "parent_id",
        "properties",
        "reply_to",
        "retries",
        "replaced_task_nesting",
        "root_id",
        "shadow",
        "timelimit",
        "time_limit",
        "soft_time_limit",
        "utc",
        "stamped_headers",
        "stamps",
    }  # Celery 5.7's Context attributes (taskset is its alias of group)
    assert celery_fields <= set(info["fields"])


def test_link_link_error_and_chains(celeriac_app):
    seen = []

    @celeriac_app.task
    def add(x, y):
        return x + y

    @celeriac_app.task
    def record(value):
        seen.append(value)

    @celeriac_app.task
    def boom():
        raise RuntimeError("no")

    with start_worker(celeriac_app):
        add.apply_async((1, 2), link=record.s()).get(timeout=10)
        boom.apply_async(link_error=record.s())
        assert (add.s(1, 1) | add.s(10) | add.s(100)).delay().get(timeout=10) == 112
        assert (add.s(2, 2) | add.si(0, 1))().get(timeout=10) == 1
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen[0] == 3 and isinstance(seen[1], str)  # the errback gets the failed task's id


def test_countdown_eta_and_expires(celeriac_app):
    from datetime import UTC, datetime, timedelta

    @celeriac_app.task
    def now():
        return time.time()

    with start_worker(celeriac_app):
        sent = time.time()
        later = now.apply_async(countdown=0.5)
        at = now.apply_async(eta=datetime.now(UTC) + timedelta(seconds=0.3))
        assert later.get(timeout=10) - sent >= 0.5
        assert at.get(timeout=10) - sent >= 0.3
        gone = now.apply_async(expires=datetime.now(UTC) - timedelta(seconds=1))
        with pytest.raises(TaskRevokedError):
            gone.get(timeout=10)
        assert gone.state == states.REVOKED


def test_a_task_that_expires_while_it_waits_for_a_slot_is_not_run(celeriac_app):
    ran = []

    @celeriac_app.task
    def slow(seconds):
        time.sleep(seconds)

    @celeriac_app.task
    def quick():
        ran.append(1)

    with start_worker(celeriac_app, concurrency=1, prefetch_multiplier=4):
        busy = slow.delay(1.0)
        late = quick.apply_async(expires=0.3)  # prefetched at once, then waits for the busy slot
        with pytest.raises(TaskRevokedError, match="expired"):
            late.get(timeout=10)
        busy.get(timeout=10)
    assert late.state == states.REVOKED and ran == []


def test_retry_with_new_args_or_kwargs_replaces_only_what_they_name(celeriac_app):
    @celeriac_app.task(bind=True, max_retries=1)
    def args_after_kwargs(self, foo, bar, label=None):
        if not self.request.retries:
            raise self.retry(args=(foo + 1, bar + 1), countdown=0)
        return [foo, bar, label, self.request.retries]

    @celeriac_app.task(bind=True, max_retries=1)
    def kwargs_after_args(self, foo, bar):
        if not self.request.retries:
            raise self.retry(kwargs={"foo": foo + 1}, countdown=0)
        return [foo, bar, self.request.retries]

    with start_worker(celeriac_app):
        kept = args_after_kwargs.apply_async(kwargs={"foo": 1, "bar": 2, "label": "kept"})
        assert kept.get(timeout=10) == [2, 3, "kept", 1]  # Celery's own test of it
        assert kwargs_after_args.apply_async(args=(1, 2)).get(timeout=10) == [2, 2, 1]


def test_revoke_is_kept_until_a_worker_sees_the_task(celeriac_app):
    ran = []

    @celeriac_app.task
    def job(n):
        ran.append(n)

    first = job.delay(1)
    job.delay(2)
    first.revoke()
    with start_worker(celeriac_app):
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    assert ran == [2]
    assert first.state == states.REVOKED


def test_priority_and_routes(celeriac_app):
    order = []
    celeriac_app.conf.task_routes = {"*.routed": "special"}

    @celeriac_app.task
    def note(tag):
        order.append(tag)

    @celeriac_app.task(name="t.routed")
    def routed():
        return threading.current_thread().name

    note.apply_async(("low",), priority=9)
    note.apply_async(("high",), priority=0)
    with start_worker(celeriac_app, concurrency=1):
        deadline = time.monotonic() + 10
        while len(order) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        pending = routed.delay()
        time.sleep(0.3)
        assert pending.state == states.PENDING  # nobody serves "special" yet
    assert order == ["high", "low"]
    with start_worker(celeriac_app, queues=["special"]):
        assert pending.get(timeout=10)


def test_ignore_result_track_started_and_override(celeriac_app):
    gate = threading.Event()

    @celeriac_app.task(ignore_result=True)
    def quiet():
        return 1

    @celeriac_app.task(track_started=True)
    def slow():
        gate.wait(10)
        return "ok"

    with start_worker(celeriac_app):
        assert quiet.apply_async(ignore_result=False).get(timeout=10) == 1
        silent = quiet.delay()
        running = slow.delay()
        deadline = time.monotonic() + 10
        while running.state != states.STARTED and time.monotonic() < deadline:
            time.sleep(0.02)
        assert running.state == states.STARTED
        gate.set()
        assert running.get(timeout=10) == "ok"
        time.sleep(0.2)
        assert silent.state == states.PENDING


def test_rate_limit_spaces_runs(celeriac_app):
    @celeriac_app.task(rate_limit="10/s")
    def tick():
        return time.monotonic()

    with start_worker(celeriac_app, concurrency=4):
        stamps = sorted(r.get(timeout=20) for r in [tick.delay() for _ in range(20)])
    # a bucket of 10 is spent at once, then one every 0.1 s
    assert stamps[-1] - stamps[0] >= 0.85


def test_soft_time_limit_and_retries_end_to_end(celeriac_app):
    @celeriac_app.task(soft_time_limit=0.2)
    def sleepy():
        try:
            time.sleep(5)
        except SoftTimeLimitExceeded:
            return "cleaned up"

    @celeriac_app.task(bind=True, max_retries=3)
    def flaky(self):
        if self.request.retries < 2:
            raise self.retry(countdown=0.05)
        return self.request.retries

    @celeriac_app.task(autoretry_for=(KeyError,), max_retries=1, retry_kwargs={"countdown": 0})
    def hopeless():
        raise KeyError("x")

    with start_worker(celeriac_app):
        assert sleepy.delay().get(timeout=10) == "cleaned up"
        assert flaky.delay().get(timeout=10) == 2
        with pytest.raises(KeyError):
            hopeless.delay().get(timeout=10)


def test_reject_dead_letters_and_the_caller_gets_an_error(celeriac_app):
    @celeriac_app.task
    def refuse():
        raise Reject("not for us")

    with start_worker(celeriac_app):
        result = refuse.delay()
        with pytest.raises(Reject):
            result.get(timeout=10)

    async def letters():
        return await celeriac_app.broker().dead_letters()

    reasons = [d.reason for d in celeriac_app.run(letters())]
    assert any("not for us" in r for r in reasons)


def test_warm_shutdown_hands_back_what_has_not_started(celeriac_app):
    started = threading.Event()

    @celeriac_app.task
    def slow(n):
        started.set()
        time.sleep(0.5)
        return n

    with start_worker(celeriac_app, concurrency=1, prefetch_multiplier=4):
        results = [slow.delay(n) for n in range(4)]
        assert started.wait(10)
    assert results[0].get(timeout=1) == 0

    async def waiting():
        return await celeriac_app.broker().size("celery")

    assert celeriac_app.run(waiting()) == 3


def test_changing_the_broker_url_moves_later_calls(celeriac_app):
    @celeriac_app.task
    def t():
        return 1

    t.delay()

    async def size():
        return await celeriac_app.broker().size("celery")

    assert celeriac_app.run(size()) == 1
    celeriac_app.conf.update(broker_url=celeriac_app.broker_url + "-moved")
    t.delay()
    t.delay()
    assert celeriac_app.run(size()) == 2


def test_result_fields_and_forget(celeriac_app):
    @celeriac_app.task
    def fails():
        raise RuntimeError("broken on purpose")

    @celeriac_app.task
    def works():
        return {"ok": [1, 2]}

    with start_worker(celeriac_app):
        bad, good = fails.delay(), works.delay()
        assert good.get(timeout=10) == {"ok": [1, 2]}
        assert bad.get(timeout=10, propagate=False).args == ("broken on purpose",)
    assert bad.failed() and not bad.successful() and bad.ready()
    assert "RuntimeError: broken on purpose" in bad.traceback
    assert good.date_done is not None and good.status == states.SUCCESS
    good.forget()
    assert good.state == states.PENDING
    with pytest.raises(RuntimeError, match="broken on purpose"):
        bad.get(timeout=1)


def test_task_subclass_hooks_run_in_the_worker(celeriac_app):
    from celeriac import Task

    calls = []

    class Audited(Task):
        def before_start(self, task_id, args, kwargs):
            calls.append(("before_start", args))

        def on_success(self, retval, task_id, args, kwargs):
            calls.append(("on_success", retval))

        def on_failure(self, exc, task_id, args, kwargs, einfo):
            calls.append(("on_failure", type(exc).__name__, "ZeroDivisionError" in einfo))

        def on_retry(self, exc, task_id, args, kwargs, einfo):
            calls.append(("on_retry", str(exc)))

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            calls.append(("after_return", status))

    @celeriac_app.task(base=Audited, bind=True, max_retries=1)
    def divide(self, a, b):
        if self.request.retries == 0 and b == 2:
            raise self.retry(exc=ValueError("once more"), countdown=0)
        return a / b

    with start_worker(celeriac_app, concurrency=1):
        assert divide.delay(4, 2).get(timeout=10) == 2
        with pytest.raises(ZeroDivisionError):
            divide.delay(1, 0).get(timeout=10)
    assert calls == [
        ("before_start", [4, 2]),
        ("on_retry", "once more"),
        ("after_return", states.RETRY),
        ("before_start", [4, 2]),
        ("on_success", 2),
        ("after_return", states.SUCCESS),
        ("before_start", [1, 0]),
        ("on_failure", "ZeroDivisionError", True),
        ("after_return", states.FAILURE),
    ]


def test_shadow_name_and_custom_headers_reach_the_task(celeriac_app):
    @celeriac_app.task(bind=True)
    def show(self):
        return self.request.headers.get("x-tenant")

    with start_worker(celeriac_app):
        assert (
            show.apply_async(headers={"x-tenant": "acme"}, shadow="show-for-acme").get(timeout=10) == "acme"
        )

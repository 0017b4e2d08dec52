"""The ``Signal`` class: Celery's ways to connect, filter by sender, disconnect, and a send that survives
a receiver that raises."""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

from celeriac import signals
from celeriac.signals import Signal


def test_connect_as_a_decorator_bare_or_with_options_and_send_returns_the_answers() -> None:
    sig = Signal("demo", ("value",))
    seen: list[tuple[Any, Any, int]] = []

    @sig.connect
    def first(signal: Signal, sender: Any, value: int, **kwargs: Any) -> str:
        seen.append((signal, sender, value))
        return "first"

    @sig.connect(sender="tasks.add")
    def only_add(sender: Any, **kwargs: Any) -> str:
        return "add"

    assert first.__name__ == "first"  # the decorator gives the function back
    assert sig.send(sender="tasks.mul", value=1) == [(first, "first")]
    assert sig.send(sender="tasks.add", value=2) == [(first, "first"), (only_add, "add")]
    assert seen == [(sig, "tasks.mul", 1), (sig, "tasks.add", 2)]


def test_a_sender_filter_matches_the_same_object_only() -> None:
    sig = Signal("demo")

    class Task:
        pass

    one, other = Task(), Task()
    calls: list[Any] = []
    sig.connect(lambda sender, **kw: calls.append(sender), sender=one, weak=False)
    sig.send(sender=other)
    sig.send(sender=one)
    assert calls == [one]


def test_a_receiver_is_connected_once_per_sender_and_once_per_dispatch_uid() -> None:
    sig = Signal("demo")

    def receiver(**kwargs: Any) -> None:
        pass

    def another(**kwargs: Any) -> None:
        pass

    sig.connect(receiver)
    sig.connect(receiver)
    sig.connect(receiver, dispatch_uid="one")
    sig.connect(another, dispatch_uid="one")
    assert [r for r, _ in sig.send(sender=None)] == [receiver, receiver]
    assert sig.disconnect(dispatch_uid="one")
    assert sig.disconnect(receiver)
    assert not sig.disconnect(receiver)
    assert sig.send(sender=None) == []
    assert not sig.has_receivers()


def test_weak_receivers_go_away_with_their_last_reference_and_strong_ones_stay() -> None:
    sig = Signal("demo")

    def make() -> Any:
        def receiver(**kwargs: Any) -> str:
            return "weak"

        return receiver

    class Holder:
        def method(self, **kwargs: Any) -> str:
            return "method"

    holder = Holder()
    sig.connect(make())  # nothing else holds it
    sig.connect(make(), weak=False, dispatch_uid="strong")
    sig.connect(holder.method)  # a bound method is held weakly by its object
    gc.collect()
    assert sorted(answer for _, answer in sig.send(sender=None)) == ["method", "weak"]
    del holder
    gc.collect()
    assert [answer for _, answer in sig.send(sender=None)] == ["weak"]


def test_a_receiver_that_raises_is_logged_with_its_traceback_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = Signal("demo")

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    def fine(**kwargs: Any) -> str:
        return "ok"

    sig.connect(broken)
    sig.connect(fine)
    with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
        answers = sig.send(sender=None)
    assert answers[1] == (fine, "ok")
    assert answers[0][0] is broken and isinstance(answers[0][1], RuntimeError)
    assert "receiver bug" in caplog.text and "Traceback" in caplog.text
    assert sig.send_robust(sender=None)[1] == (fine, "ok")


def test_celerys_signal_names_are_there() -> None:
    names = {
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_failure",
        "task_retry",
        "task_revoked",
        "task_rejected",
        "task_unknown",
        "worker_init",
        "worker_ready",
        "worker_shutdown",
        "worker_process_init",
        "worker_process_shutdown",
        "heartbeat_sent",
        "setup_logging",
        "after_setup_logger",
        "celeryd_init",
        "celeryd_after_setup",
    }
    assert {n for n in names if isinstance(getattr(signals, n, None), Signal)} == names
    assert all(getattr(signals, n).name == n for n in names)

"""Secrets in task arguments: ``sensitive`` hides them from the message's reprs, events, logs, inspect,
extended results, error messages and dead-letter listings; ``argsrepr``/``kwargsrepr`` are honoured."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, Task
from celeriac._sending import SendOptions, build_call
from celeriac.cli.dead_letters import _as_json, _describe
from celeriac.exceptions import ConfigurationError, MaxRetriesExceededError
from celeriac.protocol import encode_task
from celeriac.protocol.message import TaskCall
from celeriac.testing import start_worker
from tests.unit.worker.test_events import Listener, eventually
from tests.unit.worker.test_worker import dead_letters

SECRET = "hunter2-s3cr3t"
TOKEN = "tok-0ff1ce"
RELEASE = threading.Event()


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = f"memory://sensitive-{request.node.name}"
    app = Celeriac("sensitive", broker=url, backend=url, result_extended=True)
    seen: list[tuple[str, str]] = []

    @app.task(name="login", bind=True, sensitive=["password", "token"], max_retries=1, default_retry_delay=0)
    def login(self: Task[..., str], user: str, password: str, token: str = "") -> str:
        seen.append((password, token))
        if password != "right":
            raise self.retry()
        return f"{user} in"

    @app.task(name="hold", sensitive=True)
    def hold(password: str) -> str:
        RELEASE.wait(10)
        return "held"

    @app.task(name="plain")
    def plain(x: Any) -> Any:
        return x

    app.seen = seen  # type: ignore[attr-defined]
    RELEASE.clear()
    yield app
    RELEASE.set()
    app.close()


def reprs(
    app: Celeriac, name: str, args: list[Any], kwargs: dict[str, Any], **options: Any
) -> tuple[str, str]:
    _, call, _, _ = build_call(app, name, args, kwargs, SendOptions(**options), app.tasks[name])
    assert call.argsrepr is not None and call.kwargsrepr is not None
    return call.argsrepr, call.kwargsrepr


def test_the_client_writes_hidden_reprs_by_position_and_by_name(app: Celeriac) -> None:
    assert reprs(app, "login", ["ann", SECRET], {"token": TOKEN}) == ("('ann', '***')", "{'token': '***'}")
    assert reprs(app, "login", ["ann"], {"password": SECRET}) == ("('ann',)", "{'password': '***'}")
    assert reprs(app, "hold", [SECRET], {}) == ("('***',)", "{}")
    # a sensitive task's reprs win over the caller's; others take Celery's argsrepr/kwargsrepr options
    assert reprs(app, "hold", [SECRET], {}, argsrepr=f"({SECRET!r},)") == ("('***',)", "{}")
    assert reprs(app, "plain", [SECRET], {}, argsrepr="(card)", kwargsrepr="{}") == ("(card)", "{}")
    sent = app.tasks["plain"].apply_async([SECRET], argsrepr="(card)")
    assert sent.id  # apply_async takes the option (Celery's), not an error


def test_bad_sensitive_options_are_named(app: Celeriac) -> None:
    with pytest.raises(ConfigurationError, match="sensitive must be True or a list of argument names"):
        app.task(name="bad1", sensitive="password")(lambda password: None)
    with pytest.raises(ConfigurationError, match=r"sensitive names \['pasword'\], which are not its param"):
        app.task(name="bad2", sensitive=["pasword"])(lambda user, password: None)


def test_a_sensitive_task_gets_its_arguments_and_shows_them_nowhere(
    app: Celeriac, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Listener(app) as seen, start_worker(app, hostname="w@sensitive", task_events=True) as worker:
        ok = app.tasks["login"].delay("ann", "right", token=TOKEN)
        assert ok.get(timeout=10) == "ann in"
        failing = app.tasks["login"].delay("bob", SECRET, token=TOKEN)
        with pytest.raises(MaxRetriesExceededError) as raised:
            failing.get(timeout=10)
        held = app.tasks["hold"].delay(SECRET)
        eventually(lambda: bool(worker.active_items()))
        active = app.control.inspect(["w@sensitive"]).active()["w@sensitive"]
        safe = app.control.inspect(["w@sensitive"]).active(safe=True)["w@sensitive"]
        RELEASE.set()
        assert held.get(timeout=10) == "held"
        seen.wait_for("task-succeeded", uuid=held.id)
    # the task itself received the real values, each time
    assert app.seen == [("right", TOKEN), (SECRET, TOKEN), (SECRET, TOKEN)]  # type: ignore[attr-defined]
    assert [(a["args"], a["kwargs"]) for a in active] == [(["***"], {})]
    assert [(a["args"], a["kwargs"]) for a in safe] == [("('***',)", "{}")]
    received = {e["uuid"]: (e["args"], e["kwargs"]) for e in seen.of("task-received")}
    assert received[failing.id] == ("('bob', '***')", "{'token': '***'}")
    assert str(raised.value) == (
        f"Can't retry login[{failing.id}] args:['bob', '***'] kwargs:{{'token': '***'}}"
    )
    extended = app.AsyncResult(failing.id).meta().extended
    assert (extended["args"], extended["kwargs"]) == (["bob", "***"], {"token": "***"})
    everything = json.dumps([seen.events, active, safe], default=str) + caplog.text + str(raised.value)
    assert SECRET not in everything and TOKEN not in everything
    assert "right" not in json.dumps(seen.events)  # the successful call's password too


def test_dead_letter_listings_hide_a_sensitive_tasks_arguments(app: Celeriac) -> None:
    # A Celery client knows nothing of `sensitive`: it writes the real values in argsrepr. An unknown
    # keyword makes the worker dead-letter the message.
    foreign = TaskCall(id="celery-1", name="login", args=["ann", SECRET], kwargs={"tokn": TOKEN})
    foreign.argsrepr = f"('ann', {SECRET!r})"

    async def publish() -> None:
        await app.broker().publish("celery", encode_task(foreign))

    app.run(publish())
    app.send_task("plain", [1, 2])  # a wrong number of arguments: dead-lettered, shown as it is
    with start_worker(app):
        eventually(lambda: len(dead_letters(app)) == 2)
    by_task = {d.task_name: d for d in dead_letters(app)}
    hidden = _as_json(app, by_task["login"])
    assert (hidden["args"], hidden["kwargs"]) == (["ann", "***"], {"tokn": TOKEN})
    assert hidden["headers"]["argsrepr"] == hidden["headers"]["kwargsrepr"] == "***"
    assert SECRET not in json.dumps(hidden, default=str) + _describe(app, by_task["login"])
    assert _as_json(app, by_task["plain"])["args"] == [1, 2]

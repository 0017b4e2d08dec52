"""Broadcasts on PostgreSQL are heard through LISTEN/NOTIFY: a subscriber sees another process's broadcast
at once, even with a poll interval far longer than the test; remote control works across processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from celeriac.protocol.message import Message
from celeriac.sql.broker import SQLBroker
from tests.contract.conftest import SERVERS, _require

PG = SERVERS["postgresql"][3]


def _other(url: str, name: str) -> str:
    # Another spelling of the same database: a broker of its own process-wide wake-up, as another
    # process's would be, so only the database's notification can wake the subscriber.
    return f"{url}?application_name={name}"


def test_a_subscriber_hears_a_broadcast_at_once_with_a_poll_interval_of_an_hour() -> None:
    _require("postgresql")

    async def main() -> tuple[list[Message], bool]:
        listening = SQLBroker(_other(PG, "listener"), options={"broadcast_poll_interval": 3600})
        sending = SQLBroker(_other(PG, "sender"))
        got: list[Message] = []
        try:
            async with listening.subscribe("celeriac.notify.test", "hello.*") as incoming:
                assert listening._listener is not None and listening._listener.listening
                await asyncio.sleep(0.2)  # the subscriber is idle now: only a notification wakes it
                for n in range(3):
                    await sending.broadcast(
                        "celeriac.notify.test", Message(body=b"%d" % n, headers={}), routing_key="hello.x"
                    )
                await sending.broadcast(
                    "celeriac.notify.test", Message(body=b"no", headers={}), routing_key="other"
                )
                async with asyncio.timeout(20):  # far below the hour the poll would take
                    while len(got) < 3:
                        got.append(await anext(incoming))
            return got, listening._listener.listening
        finally:
            await listening.close()
            await sending.close()

    got, still = asyncio.run(main())
    assert [m.body for m in got] == [b"0", b"1", b"2"]
    assert still


def test_a_worker_in_another_process_answers_inspect_through_notifications(tmp_path: Path) -> None:
    _require("postgresql")
    (tmp_path / "notifyapp.py").write_text(
        f"from celeriac import Celeriac\napp = Celeriac('notifyapp', broker={PG!r}, backend={'db+' + PG!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "notifyapp", "worker", "-P", "threads", "-c", "1",
         "-n", "notify@test"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sys.path.insert(0, str(tmp_path))
    try:
        from notifyapp import app  # type: ignore[import-not-found]

        inspect = app.control.inspect(destination=["notify@test"], timeout=5.0)
        deadline = time.monotonic() + 60
        while not inspect.ping():
            assert time.monotonic() < deadline, "the worker never answered"
        assert inspect.ping() == {"notify@test": {"ok": "pong"}}
        app.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("notifyapp", None)
        worker.terminate()
        worker.wait(30)

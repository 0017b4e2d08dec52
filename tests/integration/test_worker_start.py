"""A worker's start: ready (and ``worker_ready``) only once the broker answered; two apps in one folder
each on their own embedded SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import WorkerProcess, wait_until
from tests.servers import RedisServer, free_port, require_redis_server


def test_ready_only_after_the_broker_answered(tmp_path: Path) -> None:
    require_redis_server()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    signal_log = tmp_path / "signals.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")},
        "CELERIAC_BROKER_URL": url,
        "CELERIAC_RESULT_BACKEND": url,
        "SIGNAL_LOG": str(signal_log),
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess(
        env, ["-P", "threads", "-c", "1"], tmp_path / "w.log", app="tests.integration.signalapp"
    )
    server = RedisServer(tmp_path / "redis", port=port)
    try:
        worker.start(wait_for=f"waiting for the broker {url} ...")
        worker.wait_for("cannot reach the broker", timeout=30)
        time.sleep(1.5)
        log = worker.log.read_text()
        assert " ready:" not in log, log  # no broker has answered yet
        noted = signal_log.read_text() if signal_log.exists() else ""
        assert "worker_ready" not in noted
        server.start()
        worker.wait_for(" ready:", timeout=30)
        log = worker.log.read_text()
        assert (
            log.index("waiting for the broker") < log.index("cannot reach the broker") < log.index(" ready:")
        )
        assert wait_until(lambda: "worker_ready" in signal_log.read_text(), 10)
        ready = [json.loads(line) for line in signal_log.read_text().splitlines()]
        assert [e["signal"] for e in ready].count("worker_ready") == 1
    finally:
        worker.stop()
        server.close()


APP = """
from celeriac import Celery
app = Celery({name!r})
@app.task
def whoami():
    return {name!r}
"""


def test_two_apps_in_one_folder_keep_to_their_own_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("billing", "mail"):
        (tmp_path / f"{name}.py").write_text(APP.format(name=name))
    workers = []
    try:
        for name in ("billing", "mail"):
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "celeriac", "-A", name, "worker", "-P", "threads", "-c", "1"],
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            workers.append(proc)
            assert wait_until(lambda log=log: " ready:" in log.read_text(), 30), log.read_text()
            text = log.read_text()
            assert f"messages and results in the SQLite file {tmp_path / f'{name}.celeriac.sqlite3'}" in text
        for name in ("billing", "mail"):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "celeriac",
                    "-A",
                    name,
                    "call",
                    f"{name}.whoami",
                    "--wait",
                    "--timeout",
                    "30",
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.stdout.splitlines()[-1] == json.dumps(name), done.stderr
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(30)
    for name in ("billing", "mail"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "dead_lettered=0" in log and "NotRegistered" not in log, log
    assert not (tmp_path / "celeriac.sqlite3").exists()

"""``celeriac inspect`` and ``celeriac control`` against a real worker process on the embedded SQLite
broker: readable blocks by default, JSON with ``--json``, and ``status`` listing the workers."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.integration.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow

APP = "tests.integration.appmod"


def celeriac(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", APP, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_inspect_and_control_from_the_shell(app: Any, start_worker: Any, worker_env: dict[str, str]) -> None:
    worker = start_worker("-P", "threads", "-c", "1", name="cli1")
    assert wait_until(lambda: app.control.inspect(["cli1@test"], timeout=0.5).ping(), 20)
    pinged = celeriac(worker_env, "inspect", "ping", "-d", "cli1@test")
    assert pinged.returncode == 0, pinged.stderr
    assert pinged.stdout.splitlines()[:2] == ["-> cli1@test:", "    OK: pong"]
    registered = celeriac(worker_env, "inspect", "registered", "-d", "cli1@test", "--json")
    assert "tests.integration.appmod.add" in json.loads(registered.stdout)["cli1@test"]
    answered = celeriac(worker_env, "inspect", "answer", "-d", "cli1@test", "--json")  # the app's own
    assert json.loads(answered.stdout) == {"cli1@test": {"ok": "42 to "}}
    extra = celeriac(worker_env, "inspect", "answer", "life", "-d", "cli1@test")
    assert extra.returncode == 2 and "at most 0 argument(s)" in extra.stderr
    limited = celeriac(
        worker_env, "control", "rate_limit", "tests.integration.appmod.add", "10/m", "-d", "cli1@test"
    )
    assert "OK: new rate limit set successfully" in limited.stdout
    revoked = celeriac(worker_env, "control", "revoke", "id-1", "id-2", "-d", "cli1@test", "--json")
    [reply] = json.loads(revoked.stdout)
    assert reply["cli1@test"]["ok"].endswith("flagged as revoked")
    assert celeriac(worker_env, "control", "nope").returncode == 2
    status = celeriac(worker_env, "status")
    assert status.returncode == 0 and "workers: cli1@test" in status.stdout
    assert celeriac(worker_env, "control", "shutdown", "-d", "cli1@test").stdout == "shutdown sent\n"
    assert worker.proc.wait(20) == 0
    nobody = celeriac(worker_env, "inspect", "ping", "-t", "0.3")
    assert nobody.returncode == 1 and "no worker replied" in nobody.stderr

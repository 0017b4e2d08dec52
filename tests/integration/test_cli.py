"""The ``celeriac`` command: clear errors, overrides, purge."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import ROOT


def celeriac(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_missing_module_is_a_clear_error(tmp_path):
    done = celeriac("-A", "no_such_module_anywhere", "worker", cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot find the app module 'no_such_module_anywhere'" in done.stderr
    assert "Traceback" not in done.stderr


def test_module_without_an_app_is_a_clear_error(tmp_path):
    (tmp_path / "plain.py").write_text("x = 1\n")
    done = celeriac("-A", "plain", "status", cwd=tmp_path)
    assert done.returncode == 2
    assert "module 'plain' has no celeriac app" in done.stderr
    done = celeriac("-A", "plain:x", "status", cwd=tmp_path)
    assert "is not a celeriac app" in done.stderr


def test_app_found_in_a_package_celery_module(tmp_path):
    pkg = tmp_path / "proj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "celery.py").write_text("from celeriac import Celery\napp = Celery('proj')\n")
    db = tmp_path / "b.sqlite3"
    done = celeriac("-A", "proj", "-b", f"sqlite:///{db}", "status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"broker: sqlite:///{db}" in done.stdout


def test_broker_option_wins_over_the_environment_and_purge(tmp_path):
    (tmp_path / "mod.py").write_text(
        "from celeriac import Celery\napp = Celery('mod')\n@app.task\ndef t():\n    return 1\n"
    )
    db = tmp_path / "cli.sqlite3"
    env = {"CELERIAC_BROKER_URL": "memory://ignored", "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{db}"}
    for _ in range(3):
        assert (
            celeriac("-A", "mod", "-b", f"sqlite:///{db}", "call", "mod.t", cwd=tmp_path, env=env).returncode
            == 0
        )
    done = celeriac("-A", "mod", "-b", f"sqlite:///{db}", "status", cwd=tmp_path, env=env)
    assert ["celery", "3"] in [line.split() for line in done.stdout.splitlines()], done.stdout + done.stderr
    refused = celeriac("-A", "mod", "-b", f"sqlite:///{db}", "purge", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "pass -f" in refused.stderr
    done = celeriac("-A", "mod", "-b", f"sqlite:///{db}", "purge", "-f", cwd=tmp_path, env=env)
    assert "purged 3 message(s)" in done.stdout


def test_bad_call_arguments_are_refused_before_sending(tmp_path):
    (tmp_path / "mod2.py").write_text(
        "from celeriac import Celery\napp = Celery('mod2')\n@app.task\ndef add(x, y):\n    return x + y\n"
    )
    db = tmp_path / "c.sqlite3"
    done = celeriac("-A", "mod2", "-b", f"sqlite:///{db}", "call", "mod2.add", "-a", "[1]", cwd=tmp_path)
    assert done.returncode == 2
    assert "not sent: mod2.add() missing a required argument: 'y'" in done.stderr
    assert "Traceback" not in done.stderr

"""The celery-suite harness's own parts that need no download: the import rewrite, the JUnit counts and
the exclusions list (the suite itself runs with ``./dev celery-suite``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.celery_suite.report import load_exclusions, load_known_celery_failures, read_junit, table
from tests.celery_suite.rewrite import REWRITES, rewrite_imports, write_celeriac_tasks

CELERY_LIKE = "\n".join(
    [
        "import os",
        *[line for line in REWRITES if "StampingVisitor" not in line and "backends.base" not in line],
        "try:",
        "    from celery.canvas import StampingVisitor",
        "except ImportError:",
        "    pass",
        "def task():",
        "    from celery.backends.base import states",
        "    return states",
        "",
    ]
)


def test_only_the_import_lines_change_and_keep_their_indentation() -> None:
    out = rewrite_imports(CELERY_LIKE)

    assert "    from celeriac.canvas import StampingVisitor\n" in out
    assert "    from celeriac import states\n" in out
    assert "from celery" not in out
    before, after = CELERY_LIKE.splitlines(), out.splitlines()
    unchanged = [line for line in before if not line.lstrip().startswith("from celery")]
    assert [line for line in after if line in unchanged] == unchanged


def test_a_changed_tasks_module_stops_the_rewrite() -> None:
    with pytest.raises(ValueError, match="gone"):
        rewrite_imports(CELERY_LIKE.replace("from celery.canvas import signature\n", ""))
    with pytest.raises(ValueError, match="does not know"):
        rewrite_imports(CELERY_LIKE + "from celery.result import AsyncResult\n")


def test_the_rewritten_module_keeps_celerys_module_name(tmp_path: Path) -> None:
    sdist = tmp_path / "celery"
    (sdist / "t" / "integration").mkdir(parents=True)
    (sdist / "t" / "integration" / "tasks.py").write_text(CELERY_LIKE)

    root = write_celeriac_tasks(sdist, tmp_path / "out")

    assert (root / "t" / "integration" / "tasks.py").read_text() == rewrite_imports(CELERY_LIKE)
    assert (root / "t" / "__init__.py").is_file()
    assert "def control_command" in (root / "_suite_compat.py").read_text() or (
        "control_command = " in (root / "_suite_compat.py").read_text()
    )


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="t.integration.test_canvas.test_chain" name="test_ok" time="0.1"/>
<testcase classname="t.integration.test_canvas.test_chain" name="test_bad" time="0.1">
  <failure message="AssertionError: 3 != 4">trace</failure></testcase>
<testcase classname="t.integration.test_canvas.test_chain" name="test_teardown" time="0.1"/>
<testcase classname="t.integration.test_canvas.test_chain" name="test_teardown" time="0.1">
  <error message="failed on teardown">trace</error></testcase>
<testcase classname="t.integration.test_tasks" name="test_module_level" time="0.1">
  <skipped type="pytest.skip" message="Randomly fails"/></testcase>
</testsuite></testsuites>"""


def test_counts_per_file_take_each_tests_worst_report(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)

    outcomes = read_junit(path)

    assert outcomes.by_test == {
        "t/integration/test_canvas.py::test_chain::test_ok": "passed",
        "t/integration/test_canvas.py::test_chain::test_bad": "failed",
        "t/integration/test_canvas.py::test_chain::test_teardown": "error",
        "t/integration/test_tasks.py::test_module_level": "skipped",
    }
    assert outcomes.messages["t/integration/test_canvas.py::test_chain::test_bad"] == "AssertionError: 3 != 4"
    excluded = {"t/integration/test_tasks.py::test_x::test_gone": "reads the worker's state"}
    rows = table(outcomes, excluded).splitlines()
    assert rows[1].split() == ["test_canvas.py", "1", "1", "1", "0", "0"]
    assert rows[2].split() == ["test_tasks.py", "0", "0", "0", "1", "1"]


def test_every_exclusion_names_a_test_of_the_two_files_and_says_why() -> None:
    for test, reason in {**load_exclusions(), **load_known_celery_failures()}.items():
        assert test.startswith(("t/integration/test_canvas.py::", "t/integration/test_tasks.py::")), test
        assert len(reason.split()) >= 5, f"{test}: give the reason in a sentence"

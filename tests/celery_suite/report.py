"""Counts per test file from pytest's JUnit XML, and the exclusions list.

A test's outcome is its worst report: a test that passed but whose teardown errored counts as an
error. Skipped includes Celery's own ``skip``/``xfail`` marks (pytest writes both as skipped).
"""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FILES", "Outcomes", "load_exclusions", "load_known_celery_failures", "read_junit", "table"]

FILES = ["t/integration/test_canvas.py", "t/integration/test_tasks.py"]
EXCLUSIONS = Path(__file__).with_name("exclusions.toml")

_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


@dataclass
class Outcomes:
    """Each test's outcome by node id, and the first line of each failure's message."""

    by_test: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def add(self, nodeid: str, outcome: str, message: str) -> None:
        """Record one report of ``nodeid``, keeping the worst outcome seen."""
        if _RANK[outcome] >= _RANK.get(self.by_test.get(nodeid, "passed"), 0):
            self.by_test[nodeid] = outcome
            if message:
                self.messages[nodeid] = message

    def failing(self) -> list[str]:
        """The tests that failed or errored, in node id order."""
        return sorted(t for t, o in self.by_test.items() if o in ("failed", "error"))


def load_exclusions(path: Path = EXCLUSIONS) -> dict[str, str]:
    """The tests no external worker can pass, by node id, each with its reason."""
    with path.open("rb") as file:
        return dict(tomllib.load(file).get("exclusions", {}))


def load_known_celery_failures(path: Path = EXCLUSIONS) -> dict[str, str]:
    """The tests that also fail against a real Celery worker in the harness (not excluded), with what
    was seen."""
    with path.open("rb") as file:
        return dict(tomllib.load(file).get("fails_with_celery", {}))


def _nodeid(classname: str, name: str) -> str:
    for file in FILES:
        module = file.removesuffix(".py").replace("/", ".")
        if classname == module or classname.startswith(module + "."):
            rest = classname[len(module) :].lstrip(".")
            return "::".join(part for part in (file, *rest.split("."), name) if part)
    return f"{classname}::{name}"


def read_junit(path: Path) -> Outcomes:
    """The outcomes pytest wrote to the JUnit XML file ``path``."""
    outcomes = Outcomes()
    for case in ET.parse(path).getroot().iter("testcase"):
        nodeid = _nodeid(case.get("classname", ""), case.get("name", ""))
        outcome, message = "passed", ""
        for child in case:
            kind = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(child.tag)
            if kind and _RANK[kind] >= _RANK[outcome]:
                outcome = kind
                message = (child.get("message") or child.text or "").strip().splitlines()[0:1]
                message = message[0][:300] if message else ""
        outcomes.add(nodeid, outcome, message)
    return outcomes


def table(outcomes: Outcomes, excluded: dict[str, str]) -> str:
    """A text table: per file, how many tests passed, failed, errored, were skipped or excluded."""
    rows = [f"{'file':<32} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8} {'excluded':>9}"]
    for file in FILES:
        counts = Counter(o for t, o in outcomes.by_test.items() if t.startswith(file + "::"))
        gone = sum(1 for t in excluded if t.startswith(file + "::") and t not in outcomes.by_test)
        rows.append(
            f"{file.rsplit('/', 1)[-1]:<32} {counts['passed']:>7} {counts['failed']:>7} "
            f"{counts['error']:>7} {counts['skipped']:>8} {gone:>9}"
        )
    return "\n".join(rows)

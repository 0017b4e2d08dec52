"""docs/canvas.md, run for real: its code blocks, in order, in one namespace, against a worker.

The first block defines the module the page calls ``canvas_tour``; the worker starts after it, and every later
block runs as a user would type it, with its own asserts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.testing import start_worker

PAGE = Path(__file__).resolve().parents[2] / "docs" / "canvas.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_every_example_on_the_canvas_page_runs(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/tour.db" if store == "sqlite" else f"memory://tour-{tmp_path.name}"
    monkeypatch.setenv("CELERIAC_BROKER_URL", url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", url)
    first, *rest = blocks()
    assert len(rest) >= 9, "the page lost its examples"
    namespace: dict[str, Any] = {"__name__": "canvas_tour"}
    exec(compile(first, f"{PAGE}:module", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, Celeriac)
    try:
        with start_worker(app, concurrency=4):
            for number, block in enumerate(rest, 1):
                exec(compile(block, f"{PAGE}:block{number}", "exec"), namespace)
            # The errbacks the page sets up ran: one for the failing task, one for the failed chord.
            assert _wait_for_reports(capsys, 2) >= 2
    finally:
        app.close()


def _wait_for_reports(capsys: pytest.CaptureFixture[str], count: int, timeout: float = 10.0) -> int:
    import time

    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += capsys.readouterr().out
        if seen.count("failed") >= count:
            break
        time.sleep(0.05)
    return seen.count("failed")

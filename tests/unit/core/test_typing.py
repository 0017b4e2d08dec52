"""Tasks are typed: mypy sees a task's parameters and return type through delay() and get()."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency")

SNIPPET = """
from celeriac import AsyncResult, Celeriac

app = Celeriac("typed", broker="memory://typed")

@app.task
def add(x: int, y: int) -> int:
    return x + y

@app.task
async def fetch(url: str) -> bytes:
    return b""

ok: AsyncResult[int] = add.delay(1, 2)
value: int = ok.get()
reveal_type(fetch.delay("u").get())
add.delay("x", 2)
add.delay(1)
fetch.delay(3)
wrong: str = add.delay(1, 2).get()
"""


def test_mypy_checks_task_calls(tmp_path: Path) -> None:
    source = tmp_path / "typed_tasks.py"
    source.write_text(textwrap.dedent(SNIPPET))
    out, _, _ = mypy_api.run(
        [str(source), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "c")]
    )
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if ": " in line and "typed_tasks.py" in line]
    text = "\n".join(lines)
    assert 'Revealed type is "bytes"' in text
    assert 'Argument 1 to "delay" of "Task" has incompatible type "str"; expected "int"' in text
    assert 'Missing positional argument "y" in call to "delay" of "Task"' in text
    assert 'Argument 1 to "delay" of "Task" has incompatible type "int"; expected "str"' in text
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in text
    assert sum(line.startswith("error") for line in lines) == 4, text

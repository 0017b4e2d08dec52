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


CANVAS_SNIPPET = """
from celeriac import Celeriac, chain, chord, group

app = Celeriac("typed", broker="memory://typed")

@app.task
def add(x: int, y: int) -> int:
    return x + y

async def main() -> None:
    reveal_type(await add.s(1, 2).adelay())
    reveal_type(await group(add.s(1, 2)).aapply_async())

reveal_type(add.s(1, 2).delay())
reveal_type(add.s(1, 2).apply_async(countdown=1))
reveal_type(add.map([(1, 2)]).delay())
reveal_type(group(add.s(1, 2), add.s(3, 4)).delay())
reveal_type(group(add.s(1, 2))())
reveal_type(add.chunks([(1, 2)], 1).apply_async())
reveal_type(chain(add.s(1, 2), add.s(3)).delay())
reveal_type((add.s(1, 2) | add.s(3)).apply_async())
reveal_type((group(add.s(1, 2)) | add.s(3)).delay())
reveal_type(chord([add.s(1, 2)], add.s(3))())
"""


def test_mypy_sees_what_sending_a_workflow_gives(tmp_path: Path) -> None:
    source = tmp_path / "typed_canvas.py"
    source.write_text(textwrap.dedent(CANVAS_SNIPPET))
    out, _, _ = mypy_api.run(
        [str(source), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "c")]
    )
    lines = [line.split(": ", 2)[2] for line in out.splitlines() if "typed_canvas.py" in line]
    task = 'Revealed type is "celeriac.result.AsyncResult[Any]"'
    group = 'Revealed type is "celeriac.result.GroupResult[Any]"'
    either = 'Revealed type is "celeriac.result.AsyncResult[Any] | celeriac.result.GroupResult[Any]"'
    assert lines == [
        task,  # await sig.adelay()
        group,  # await group.aapply_async()
        task,  # sig.delay()
        task,  # sig.apply_async()
        task,  # task.map(...).delay()
        group,  # group.delay()
        group,  # group()
        group,  # task.chunks(...).apply_async()
        either,  # chain: the last step's result, a group's when the chain ends with one
        either,  # sig | sig is a chain
        either,  # group | sig is a chord: its body's result
        either,  # chord(...)(): its body's result, a group's when the body is one
    ], out

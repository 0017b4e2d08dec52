"""Celery's integration task module with only its imports pointed at celeriac.

The celeriac worker must run Celery's own task code, so nothing but ``import`` lines changes, and each
change is an exact line of Celery 5.7's ``t/integration/tasks.py``: when a release changes one of them,
the rewrite stops with the line it could not find instead of running an altered module. Where celeriac
lacks a name Celery's module imports, the rewrite points at the smallest stand-in and ``GAPS`` says so.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["GAPS", "REWRITES", "write_celeriac_tasks"]

# Celery's line -> ours. Lines inside functions keep their indentation (matched after stripping).
REWRITES: dict[str, str] = {
    "from celery import Signature, Task, chain, chord, group, shared_task": (
        "from celeriac import Signature, Task, chain, chord, group\nfrom _suite_compat import shared_task"
    ),
    "from celery.canvas import signature": "from celeriac.canvas import signature",
    "from celery.exceptions import Reject, SoftTimeLimitExceeded": (
        "from celeriac.exceptions import Reject, SoftTimeLimitExceeded"
    ),
    "from celery.utils.log import get_task_logger": "from celeriac.utils.log import get_task_logger",
    "from celery.worker.control import add_consumer, cancel_consumer, control_command, inspect_command": (
        "from _suite_compat import add_consumer, cancel_consumer, control_command, inspect_command"
    ),
    # Inside a try: Celery's module falls back to its "legacy" tasks when the name is missing.
    "from celery.canvas import StampingVisitor": "from celeriac.canvas import StampingVisitor",
    # Inside a task's body.
    "from celery.backends.base import states": "from celeriac import states",
}

# What celeriac lacks of the names the module imports, and what stands in for it.
GAPS: dict[str, str] = {
    "shared_task options celeriac does not know (Celery's tasks.py uses pydantic=True)": (
        "celeriac refuses task options it does not know; _suite_compat's shared_task drops those that "
        "celeriac.task.TASK_OPTIONS lacks and names each on the worker's log, so the module loads and only "
        "the tasks needing them misbehave (nothing is dropped once celeriac knows them all)"
    ),
    "celery.worker.control.control_command / inspect_command": (
        "celeriac's command registries belong to an app (app.control.commands) and take no visible=; "
        "_suite_compat gives decorators that register nothing (only test_worker.py sends these commands)"
    ),
    "celery.worker.control.add_consumer / cancel_consumer": (
        "Celery's handlers take Celery's worker state; _suite_compat's raise NotImplementedError if called"
    ),
}

_COMPAT = '''"""Stand-ins for names Celery's tasks.py imports that celeriac lacks (see rewrite.GAPS)."""

import sys

import celeriac
from celeriac.task import TASK_OPTIONS


def shared_task(*args, **options):
    """celeriac's shared_task without the options celeriac does not know (each named once on stderr)."""
    unknown = sorted(set(options) - set(TASK_OPTIONS) - {"bind", "base", "typing", "name"})
    if unknown:
        print(f"celery-suite: celeriac lacks task option(s) {unknown}; dropped", file=sys.stderr)
        options = {key: value for key, value in options.items() if key not in unknown}
    return celeriac.shared_task(*args, **options)


def _decorator(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


control_command = inspect_command = _decorator


def add_consumer(state, queue, **kwargs):
    raise NotImplementedError("Celery's add_consumer handler has no celeriac counterpart")


def cancel_consumer(state, queue, **kwargs):
    raise NotImplementedError("Celery's cancel_consumer handler has no celeriac counterpart")
'''


def rewrite_imports(source: str) -> str:
    """``source`` with every line of ``REWRITES`` replaced, keeping each line's indentation.

    Raises:
        ValueError: a line of ``REWRITES`` is not in ``source``, or a ``celery`` import is left over.
    """
    lines = source.splitlines(keepends=True)
    found: set[str] = set()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped in REWRITES:
            indent = line[: len(line) - len(line.lstrip())]
            lines[number] = f"{indent}{REWRITES[stripped]}\n"
            found.add(stripped)
    missing = sorted(set(REWRITES) - found)
    if missing:
        raise ValueError(f"Celery's tasks.py changed; these import lines are gone: {missing}")
    result = "".join(lines)
    leftover = [
        line.strip()
        for line in result.splitlines()
        if line.lstrip().startswith(("from celery", "import celery"))
        and not line.lstrip().startswith(("from celeriac", "import celeriac"))
    ]
    if leftover:
        raise ValueError(f"Celery's tasks.py has imports the rewrite does not know: {leftover}")
    return result


def write_celeriac_tasks(sdist: Path, into: Path) -> Path:
    """Write ``t/integration/tasks.py`` of the extracted ``sdist`` under ``into`` with its imports
    rewritten, as the same module name (``t.integration.tasks``) so that task names match Celery's.

    Returns:
        The folder to put on the celeriac worker's ``PYTHONPATH``.
    """
    source = (sdist / "t" / "integration" / "tasks.py").read_text()
    package = into / "t" / "integration"
    package.mkdir(parents=True, exist_ok=True)
    (into / "t" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(rewrite_imports(source))
    (into / "_suite_compat.py").write_text(_COMPAT)
    return into

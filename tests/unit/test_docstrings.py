"""Public docstrings: at least 90 % of what ``help()`` shows in celeriac's public modules says what it does.

Counted: every module whose dotted path has no part with a leading underscore, and in it every public
class, function, method and property it defines. A method that overrides a documented one counts as
documented, as ``help()`` and ``inspect.getdoc`` show the base's text (a broker's ``publish`` is
documented once, on the Broker contract).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import celeriac

THRESHOLD = 0.90


def _public_modules() -> Iterator[ModuleType]:
    yield celeriac
    for info in pkgutil.walk_packages(celeriac.__path__, "celeriac."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            yield importlib.import_module(info.name)


def _documented(obj: Any) -> bool:
    text = obj.__doc__ if isinstance(obj, property) else inspect.getdoc(obj)
    return bool(text and text.strip())


def public_items(module: ModuleType) -> Iterator[tuple[str, Any]]:
    """The module and each public class, function, method and property it defines, by qualified name."""
    yield module.__name__, module
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
        elif inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, property):
                    yield f"{module.__name__}.{name}.{attr}", member
                elif inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
                    yield f"{module.__name__}.{name}.{attr}", getattr(obj, attr)


def test_public_docstrings_cover_at_least_ninety_percent() -> None:
    items = [item for module in _public_modules() for item in public_items(module)]
    missing = sorted(name for name, obj in items if not _documented(obj))
    share = 1 - len(missing) / len(items)
    assert share >= THRESHOLD, f"{share:.1%} of {len(items)} public items documented; missing: {missing}"


def test_the_count_sees_a_missing_docstring() -> None:
    module = ModuleType("sample", "A module.")

    class Documented:
        """A class."""

        def method(self) -> None:
            """A method."""

        @property
        def bare(self) -> int:
            return 1

    Documented.__module__ = "sample"
    module.Documented = Documented  # type: ignore[attr-defined]
    found = {name: _documented(obj) for name, obj in public_items(module)}
    assert found == {
        "sample": True,
        "sample.Documented": True,
        "sample.Documented.method": True,
        "sample.Documented.bare": False,
    }

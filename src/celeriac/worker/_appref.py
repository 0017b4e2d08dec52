"""Finding the app from ``-A``: ``module``, ``module:attr``, ``module.attr``, or a package with a ``celery``
or ``celeriac`` module, as Celery's ``-A`` does."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from celeriac.app import Celeriac
from celeriac.exceptions import ConfigurationError


def _is_app(value: Any) -> bool:
    return isinstance(value, Celeriac)


def _app_in(module: ModuleType) -> Celeriac | None:
    for attr in ("app", "celery", "celeriac"):
        value = getattr(module, attr, None)
        if _is_app(value):
            return value
    apps = [v for v in vars(module).values() if _is_app(v)]
    return apps[0] if len(apps) == 1 else None


def _import(name: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `celeriac -A tasks` finds tasks.py in the current directory
    return importlib.import_module(name)


def find_app(ref: str) -> Celeriac:
    """Import and return the app named by ``ref``; raise ConfigurationError saying what is missing."""
    module_name, _, attr = ref.partition(":")
    try:
        module = _import(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and "." in module_name and not attr:
            parent, _, last = module_name.rpartition(".")
            try:
                return find_app(f"{parent}:{last}")
            except ConfigurationError:
                pass
        if exc.name and not module_name.startswith(exc.name):
            raise ConfigurationError(f"importing {module_name!r} failed: {exc}") from exc
        raise ConfigurationError(
            f"cannot find the app module {module_name!r} (-A {ref}): no such module on the path "
            f"(current directory: {os.getcwd()})"
        ) from None
    if attr:
        value: Any = module
        for part in attr.split("."):
            value = getattr(value, part, None)
        if callable(value) and not _is_app(value):
            value = value()
        if not _is_app(value):
            raise ConfigurationError(f"{ref!r}: {attr!r} in module {module_name!r} is not a celeriac app")
        return value  # type: ignore[no-any-return]
    found = _app_in(module)
    if found is not None:
        return found
    for sub in ("celery", "celeriac"):
        if hasattr(module, "__path__"):
            try:
                child = _import(f"{module_name}.{sub}")
            except ModuleNotFoundError:
                continue
            found = _app_in(child)
            if found is not None:
                return found
    raise ConfigurationError(
        f"module {module_name!r} has no celeriac app: name it 'app' (or 'celery'), or say "
        f"-A {module_name}:NAME"
    )

"""``task_routes``: which queue a task goes to (dicts, glob patterns, lists of them, and functions)."""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from celeriac.exceptions import ConfigurationError

RouteFn = Callable[..., Any]


class Router:
    """Resolves a task's route from ``task_routes``; the first route that answers wins.

    A route is a dict ``{name_or_glob: route}`` (a glob may be ``re.compile(...)``) where ``route`` is a
    queue name or a dict of options, or a callable ``(name, args, kwargs, options, task=None)`` returning
    such a route or None, or a dotted path to that callable. ``task_routes`` is one route or a list.
    """

    def __init__(self, routes: Any) -> None:
        if routes is None:
            routes = []
        elif isinstance(routes, (dict, str)) or callable(routes):
            routes = [routes]
        self._routes: list[RouteFn] = [self._compile(route) for route in routes]

    @staticmethod
    def _compile(route: Any) -> RouteFn:
        if isinstance(route, str):
            module, _, attr = route.rpartition(".")
            try:
                found = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ConfigurationError(f"task_routes: cannot import router {route!r}: {exc}") from None
            return Router._compile(found)
        if callable(route):
            fn: RouteFn = route
            return fn
        if isinstance(route, dict):
            exact: dict[str, Any] = {}
            patterns: list[tuple[re.Pattern[str], Any]] = []
            for key, value in route.items():
                if isinstance(key, re.Pattern):
                    patterns.append((key, value))
                elif any(ch in key for ch in "*?["):
                    patterns.append((re.compile(fnmatch.translate(key)), value))
                else:
                    exact[key] = value

            def by_name(name: str, *_: Any, **__: Any) -> Any:
                if name in exact:
                    return exact[name]
                for pattern, value in patterns:
                    if pattern.match(name):
                        return value
                return None

            return by_name
        raise ConfigurationError(
            f"task_routes: a route must be a dict, a function or a dotted path, not {type(route).__name__}"
        )

    def route(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        task: Any = None,
    ) -> dict[str, Any]:
        """The route options for one call: ``{"queue": ..., ...}``, or {} when no route matches."""
        for fn in self._routes:
            try:
                found = fn(name, args, kwargs, options, task=task)
            except TypeError:
                found = fn(name, args, kwargs, options)
            if found is None:
                continue
            if isinstance(found, str):
                return {"queue": found}
            if isinstance(found, dict):
                route = dict(found)
                queue = route.get("queue")
                if queue is not None and not isinstance(queue, str):
                    route["queue"] = getattr(queue, "name", str(queue))
                return route
            raise ConfigurationError(
                f"task_routes: route for {name!r} must be a queue name or a dict, got {found!r}"
            )
        return {}

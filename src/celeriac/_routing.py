"""``task_routes``: where a task goes (dicts, glob patterns, lists of them, and functions).

A route names a queue, or an exchange and routing key, or both, as Celery's routes do (plus
``exchange_type`` and ``priority``). A route's values are defaults for the ``apply_async`` options of
the same names: what the caller gives wins.

A route with an exchange and no queue still needs a queue: brokers without exchanges (Redis, SQL)
store a message in a queue, and the RabbitMQ broker declares the queue it sends to. It is the queue
the exchange would deliver to through the bindings ``task_queues`` declares (the first match, in
order); for a direct exchange that none of them is bound to, the queue the routing key names (kombu on
Redis delivers a direct exchange's message to the queues bound with its key, and Celery binds a queue
made from a name with that name). Otherwise the task's queue, or the default queue.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.brokers._amqp_topology import QueueSpec

__all__ = ["Router", "exchange_name", "topic_matches"]

RouteFn = Callable[..., Any]


class Router:
    """Resolves a task's route from ``task_routes``; the first route that answers wins.

    A route is a dict ``{name_or_glob: route}`` (a glob may be ``re.compile(...)``) where ``route`` is a
    queue name or a dict of options, or a callable ``(name, args, kwargs, options, task=None)`` returning
    such a route or None, or a dotted path to that callable. ``task_routes`` is one route or a list.
    """

    def __init__(self, routes: Any, queues: Any = None) -> None:
        if routes is None:
            routes = []
        elif isinstance(routes, (dict, str)) or callable(routes):
            routes = [routes]
        self._routes: list[RouteFn] = [self._compile(route) for route in routes]
        self._queues = queues
        self._specs: dict[str, QueueSpec] | None = None

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
        """The route options for one call (``queue``, ``exchange``, ``exchange_type``, ``routing_key``,
        ``priority``, ...), or {} when no route matches; an exchange is given by name."""
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
                exchange = route.get("exchange")
                if exchange is not None and not isinstance(exchange, str):  # a kombu Exchange
                    route.setdefault("exchange_type", getattr(exchange, "type", None))
                    route["exchange"] = exchange_name(exchange)
                return route
            raise ConfigurationError(
                f"task_routes: route for {name!r} must be a queue name or a dict, got {found!r}"
            )
        return {}

    def bound_queue(self, exchange: str, routing_key: str, exchange_type: str | None = None) -> str | None:
        """The queue a message sent to ``exchange`` with ``routing_key`` reaches: the first
        ``task_queues`` entry bound to it that takes the key, else for a direct exchange the queue the
        key names; None when neither tells (a topic or fanout exchange no entry is bound to).

        ``exchange_type`` is the route's; without one, the type ``task_queues`` gives the exchange,
        else direct (as Celery assumes).
        """
        if self._specs is None:
            # AMQP's topology code (it needs no AMQP client) loads only for an app that routes to exchanges.
            from celeriac.brokers._amqp_topology import queue_specs

            self._specs = queue_specs(self._queues)
        bound = [spec for spec in self._specs.values() if spec.exchange == exchange]
        kind = exchange_type or (bound[0].exchange_type if bound else "direct")
        for spec in bound:
            if (
                kind == "fanout"
                or (kind == "direct" and spec.key == routing_key)
                or (kind == "topic" and topic_matches(spec.key, routing_key))
            ):
                return spec.name
        return routing_key if kind == "direct" and routing_key else None


def exchange_name(value: Any) -> str | None:
    """An exchange as a route or ``apply_async`` gives it: a name, or a kombu ``Exchange`` (its name)."""
    if value is None or isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    if not isinstance(name, str):
        raise ConfigurationError(f"an exchange is a name or a kombu Exchange, not {value!r}")
    return name


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding ``pattern`` takes ``routing_key``, as RabbitMQ matches them: words are
    separated by dots, ``*`` stands for exactly one word and ``#`` for zero or more."""
    return _words_match(pattern.split(".") if pattern else [], routing_key.split(".") if routing_key else [])


def _words_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _words_match(rest, words[1:])

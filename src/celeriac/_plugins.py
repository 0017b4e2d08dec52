"""Finding the class behind a URL scheme: built-in schemes first, then installed plug-ins.

Brokers and backends each keep one ``Registry``. Built-in classes are imported only when used, so
``import celeriac`` pulls in no driver; other packages add schemes through an entry point group (name:
the scheme, value: ``"package.module:Class"``).
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Generic, TypeVar

from celeriac.exceptions import ConfigurationError

T = TypeVar("T")


class Registry(Generic[T]):
    """Schemes of one kind of plug-in (``what``: "broker", "result backend") and the classes serving them.

    ``prefix`` is the URL prefix the Celery world puts before a database URL (kombu's ``sqla+``, Celery's
    ``db+``); it and SQLAlchemy's ``+driver`` suffix are looked through when the exact scheme is unknown.
    """

    def __init__(self, what: str, group: str, base: type[T], builtin: dict[str, str], prefix: str) -> None:
        self.what = what
        self.group = group
        self.base = base
        self.builtin = builtin
        self.prefix = prefix

    def known_schemes(self) -> list[str]:
        """Every scheme a URL may use: the built-in ones and those of installed plug-ins."""
        return sorted({*self.builtin, *(ep.name for ep in metadata.entry_points(group=self.group))})

    def find(self, url: str) -> type[T]:
        """The class serving ``url``.

        Raises:
            ConfigurationError: nothing serves the URL's scheme (the message lists what does), or a
                plug-in's entry point does not name a subclass of ``base``.
        """
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        for name in self._candidates(scheme):
            if name in self.builtin:
                return self._load(self.builtin[name])
            for entry_point in metadata.entry_points(group=self.group, name=name):
                return self._load(entry_point.value)
        raise ConfigurationError(
            f"no {self.what} for URL {url!r}; known schemes: {', '.join(self.known_schemes())}"
        )

    def _candidates(self, scheme: str) -> list[str]:
        # The exact scheme first, so a plug-in may claim "redis+socket"; then without the prefix and
        # the "+driver" suffix.
        base = scheme.removeprefix(self.prefix)
        return list(dict.fromkeys([scheme, base, base.partition("+")[0]])) if scheme else []

    def _load(self, target: str) -> type[T]:
        module, _, name = target.partition(":")
        cls = getattr(import_module(module), name, None)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigurationError(f"{target!r} is not a {self.base.__name__} class")
        return cls

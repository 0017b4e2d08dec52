"""Named in-process stores: every memory broker or backend with the same URL shares one store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Stores(Generic[T]):
    """Stores by URL (``memory://`` and ``memory://name`` differ; a trailing slash does not), made
    on first use and shared by every thread and event loop of the process."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._stores: dict[str, T] = {}

    def get(self, url: str) -> T:
        key = url.rstrip("/")
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                store = self._stores[key] = self._make()
            return store

    def reset(self, url: str | None = None) -> None:
        """Forget the store at ``url`` (every store when None); users still holding it keep it."""
        with self._lock:
            if url is None:
                self._stores.clear()
            else:
                self._stores.pop(url.rstrip("/"), None)

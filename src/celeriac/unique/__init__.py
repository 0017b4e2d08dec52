"""Unique tasks and idempotency keys (``docs/unique-tasks.md``): the key a send holds, the store that
holds it (``KeyStore``, one per technology), and the worker's middleware (``celeriac.middleware.unique``)
that lets keys go and skips a redelivered message whose run already succeeded."""

from celeriac.unique.keys import HEADER, UNTIL, Uniqueness, uniqueness_of
from celeriac.unique.store import KeyStore, create_key_store, key_store_for

__all__ = ["HEADER", "UNTIL", "KeyStore", "Uniqueness", "create_key_store", "key_store_for", "uniqueness_of"]

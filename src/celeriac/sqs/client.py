"""SQS clients: aiobotocore's, one per set of credentials, opened and closed by the broker.

aiobotocore is botocore (the AWS SDK's request model: credential chain, endpoints, retries, the JSON
protocol) on aiohttp, so every call is a coroutine on the worker's loop; boto3 would block the loop
or need a thread per call, and a long poll holds a call for up to 20 s.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from typing import Any

from celeriac.exceptions import MissingDependency
from celeriac.sqs._settings import Credentials, Settings

__all__ = ["Clients"]

#: Clients with open connections, closed at exit if their loop still runs (the synchronous API's loop
#: lives in a daemon thread: left open, aiohttp would print "Unclosed client session" at exit).
_open: weakref.WeakSet[Clients] = weakref.WeakSet()


class Clients:
    """The open SQS clients of one broker, by credentials; ``aclose`` closes them all."""

    def __init__(self, settings: Settings) -> None:
        """Clients for ``settings``; raises MissingDependency at once when the ``sqs`` extra is missing."""
        _session()
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[Credentials, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, credentials: Credentials | None = None) -> Any:
        """The client for ``credentials`` (the URL's by default), opened on first use."""
        credentials = credentials or self.settings.credentials
        client = self._clients.get(credentials)
        if client is None:
            client = await self._stack.enter_async_context(self._create(credentials))
            self._clients[credentials] = client
            self._loop = asyncio.get_running_loop()
            _open.add(self)
        return client

    def _create(self, credentials: Credentials) -> Any:
        from aiobotocore.config import AioConfig

        settings = self.settings
        kwargs: dict[str, Any] = {"region_name": credentials.region or settings.region}
        if credentials.key is not None:
            kwargs["aws_access_key_id"] = credentials.key
            kwargs["aws_secret_access_key"] = credentials.secret
        if settings.endpoint_url is not None:
            kwargs["endpoint_url"] = settings.endpoint_url
        if settings.use_ssl is not None:
            kwargs["use_ssl"] = settings.use_ssl
        # A long poll waits up to 20 s for its answer: the read timeout must outlast it.
        config = {"read_timeout": 30, "connect_timeout": 10, **settings.client_config}
        kwargs["config"] = AioConfig(**config)
        return _session().create_client("sqs", **kwargs)

    async def aclose(self) -> None:
        """Close every client."""
        _open.discard(self)
        self._clients.clear()
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()


_local = threading.local()


def _session() -> Any:
    """This thread's aiobotocore session: made once, as loading botocore's models costs ~0.1 s a client
    (botocore sessions are not meant to be shared between threads)."""
    session = getattr(_local, "session", None)
    if session is None:
        try:
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise MissingDependency("the SQS broker", "sqs") from exc
        session = _local.session = get_session()
    return session


@atexit.register
def _close_at_exit() -> None:
    for clients in list(_open):
        loop = clients._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            continue
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(clients.aclose(), loop).result(timeout=5)

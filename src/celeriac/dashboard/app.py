"""The dashboard as an ASGI app (Starlette): ``/metrics`` for Prometheus, ``/healthz``, and an index page.

It listens to the fleet's events from its first request (or its start, when served on its own), so it
works the same mounted inside another ASGI app, whose server may not pass it lifespan events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from celeriac import __version__
from celeriac._outages import safe_url
from celeriac._prometheus import CONTENT_TYPE
from celeriac.dashboard.aggregate import BrokerReadings, FleetMetrics, exposition
from celeriac.events.receiver import receive
from celeriac.routing import queue_specs
from celeriac.worker._backoff import Backoff, describe

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["Dashboard", "create_app"]

log = logging.getLogger("celeriac.dashboard")

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>celeriac dashboard</title></head>
<body>
<h1>celeriac dashboard</h1>
<p>The pages (workers, queues, tasks, dead letters) are not built yet: they come in a later release.</p>
<p>What works now: <a href="metrics">/metrics</a> for Prometheus (tasks by name and state, runtimes,
workers up, queue lengths, dead letters) and <a href="healthz">/healthz</a>.</p>
</body></html>
"""


class Dashboard:
    """The dashboard's state: the metrics of ``app``'s fleet, the events it listens to, the broker it reads.

    ``queues``: the queues whose lengths and dead letters it shows (default: the app's default queue,
    the queues its tasks and ``task_queues`` name). ``auth_token`` (default: ``dashboard_auth_token``):
    when set, every request but ``/healthz`` must bear it (``Authorization: Bearer TOKEN``).
    """

    def __init__(
        self,
        app: Celeriac,
        *,
        queues: Sequence[str] | None = None,
        auth_token: str | None = None,
        cache_seconds: float = 2.0,
    ) -> None:
        self.app = app
        conf = app.conf
        self.auth_token = auth_token if auth_token is not None else conf.dashboard_auth_token
        if queues is None:
            named = {conf.task_default_queue, *[t.queue for t in app.tasks.values() if t.queue]}
            queues = sorted(named | set(queue_specs(conf.task_queues)))
        self.metrics = FleetMetrics(app.tasks)
        self.readings = BrokerReadings(queues, cache_seconds=cache_seconds)
        #: Whether the event subscription is live now (``/healthz`` says so).
        self.listening = False
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening to events on the running loop, unless it listens already."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="celeriac-dashboard-events")

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _listen(self) -> None:
        backoff = Backoff()
        while True:
            try:
                async with receive(self.app.broker()) as events:
                    self.listening = True
                    backoff.reset()
                    async for event in events:
                        self.metrics.apply(event)
                reason = "the subscription ended"
            except NotImplementedError:
                log.error(
                    "the broker %s cannot broadcast: no events, so no task metrics",
                    safe_url(self.app.broker_url),
                )
                return
            except Exception as exc:
                reason = describe(exc)
            finally:
                self.listening = False
            delay = backoff.next()
            log.warning("lost the events subscription (%s); subscribing again in %.1fs", reason, delay)
            await asyncio.sleep(delay)

    def authorized(self, request: Request) -> bool:
        """Whether the request bears the token (always, when none is set)."""
        if not self.auth_token:
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip(), self.auth_token)

    async def metrics_text(self) -> str:
        """The ``/metrics`` text, reading the broker first when its last reading is stale."""
        try:
            await self.readings.refresh(self.app.broker())
        except Exception as exc:
            log.warning("could not read queue lengths and dead letters from the broker: %s", describe(exc))
        return exposition(self.metrics, self.readings)


def create_app(
    app: Celeriac,
    *,
    queues: Sequence[str] | None = None,
    auth_token: str | None = None,
    cache_seconds: float = 2.0,
) -> Starlette:
    """The dashboard of ``app``'s fleet as an ASGI app, to serve or to mount in another one.

    ``queues``, ``auth_token``: as ``Dashboard`` takes them. Mounted beyond loopback, give it a token.
    """
    dashboard = Dashboard(app, queues=queues, auth_token=auth_token, cache_seconds=cache_seconds)

    def guarded(
        endpoint: Callable[[Request], Awaitable[Response]], *, open: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            dashboard.start()
            if not open and not dashboard.authorized(request):
                return PlainTextResponse(
                    "a token is needed: Authorization: Bearer TOKEN\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="celeriac"'},
                )
            return await endpoint(request)

        return serve

    async def index(request: Request) -> Response:
        return HTMLResponse(_INDEX)

    async def metrics(request: Request) -> Response:
        return Response(await dashboard.metrics_text(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "events": dashboard.listening, "version": __version__})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        dashboard.start()
        try:
            yield
        finally:
            await dashboard.stop()

    asgi = Starlette(
        routes=[
            Route("/", guarded(index)),
            Route("/metrics", guarded(metrics)),
            Route("/healthz", guarded(healthz, open=True)),
        ],
        lifespan=lifespan,
    )
    asgi.state.dashboard = dashboard
    return asgi

"""The worker: one asyncio loop that fetches, decodes, hands tasks to a pool and acks (D4).

Everything else a worker does — expiry, revocation, ETA, rate limits, retries, results, workflows —
is middleware (``celeriac.middleware``), which says what becomes of a message through its ``Fate``.
This module is the loop and its shutdown; ``_intake`` makes deliveries into work, and the worker's
``Writer`` (``writer``) makes its writes to the broker and backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac._outages import safe_url
from celeriac._request import Context, request_fields
from celeriac.backends.base import Backend
from celeriac.brokers.base import Broker, Delivery
from celeriac.exceptions import ConfigurationError, ExceptionInfo, Reject, WorkerLostError
from celeriac.middleware import Fate, Middleware, Skip, WorkItem, default_middleware
from celeriac.worker._autoscale import Autoscaler
from celeriac.worker._backoff import Backoff, Persistent, describe, sleep_unless
from celeriac.worker._intake import Refused, accept, job_of
from celeriac.worker._mingle import mingle
from celeriac.worker._slots import Slots
from celeriac.worker.control import RemoteControl
from celeriac.worker.events import HEARTBEAT_INTERVAL, WorkerEvents
from celeriac.worker.pools import pool_class
from celeriac.worker.pools.base import Outcome, Pool, revoked
from celeriac.worker.writer import Writer

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.protocol.message import TaskCall


class Worker:
    """A worker serving ``queues`` with a pool of ``concurrency`` slots.

    ``run()`` blocks until SIGTERM/SIGINT (warm shutdown: running tasks finish, waiting ones go back to
    the broker) or a second signal (cold: running tasks are stopped and their messages requeued).
    ``app_path`` is how child processes import the app (``-A`` of the CLI).

    An outage of the broker or the backend does not end it: fetches back off (exponentially, with
    jitter) and resume when the broker answers; acks and result writes are retried until they go
    through or a cold shutdown gives up on them. A call that hangs ``wedge_timeout`` seconds (beyond a
    fetch's own wait) is cancelled, logged as wedged, and made again.

    ``broker`` and ``backend`` are the connections of the running worker: None until ``arun`` makes
    them (``backend`` stays None when results are disabled). ``stats`` counts messages by how they
    ended.

    ``task_events`` (default: ``worker_send_task_events``) sends Celery's task events, as ``-E`` does;
    worker events (online, a heartbeat every ``heartbeat_interval`` seconds, offline) go out whenever the
    broker can broadcast (0 or None: no heartbeats).

    ``autoscale`` (``(max, min)``, ``--autoscale MAX,MIN``) starts the pool at ``min`` slots and lets
    ``autoscaler`` resize it between the two (``celeriac.worker._autoscale``); ``resize`` changes the
    pool's size at run time (remote control's ``pool_grow`` and ``pool_shrink``).
    ``mingle`` (default on; ``--without-mingle`` turns it off) greets the other workers once ready, in
    the background, and takes in the revoked ids and the clock they answer (``_mingle``).

    ``metrics_port`` (default: ``worker_metrics_port``; None: off, 0: any free port) serves Prometheus
    metrics at ``http://metrics_host:metrics_port/metrics`` (``worker_metrics_host``, 127.0.0.1), from
    the worker's own loop (``celeriac.middleware.metrics``). ``broker_outages`` counts the times its
    fetches started failing, ``fetch_failures`` every failed fetch.
    """

    def __init__(
        self,
        app: Celeriac,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        hostname: str | None = None,
        app_path: str | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        prefetch_multiplier: int | None = None,
        shutdown_timeout: float | None = None,
        middleware: Sequence[Middleware] | None = None,
        fetch_timeout: float = 1.0,
        wedge_timeout: float | None = None,
        task_events: bool | None = None,
        heartbeat_interval: float | None = HEARTBEAT_INTERVAL,
        autoscale: tuple[int, int] | None = None,
        mingle: bool = True,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
    ) -> None:
        self.app = app
        self.mingle = mingle
        self._mingling: asyncio.Task[int] | None = None
        self.hostname = hostname or f"celeriac@{socket.gethostname()}"
        # Sent before any setting is read, so that a receiver can configure this worker by its name.
        options = {"queues": queues, "concurrency": concurrency, "pool": pool, "app_path": app_path}
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf, options=options)
        conf = app.conf
        self.queues = list(queues or [conf.task_default_queue])
        self.pool_name = pool or conf.worker_pool
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.pool_name == "solo":
            if autoscale is not None:
                raise ConfigurationError("the solo pool runs one task at a time: it cannot autoscale")
            self.concurrency = 1
        #: Resizes the pool between ``autoscale``'s bounds while the worker runs (None: fixed size).
        self.autoscaler: Autoscaler | None = None
        if autoscale is not None:
            maximum, minimum = autoscale
            try:
                self.autoscaler = Autoscaler(self, maximum, minimum, conf.worker_autoscaler_keepalive or 30.0)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            self.concurrency = minimum
        self.app_path = app_path
        self.metrics_port = metrics_port if metrics_port is not None else conf.worker_metrics_port
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError(
                f"metrics port {self.metrics_port} is not a TCP port: give 1-65535, or 0 for any free one"
            )
        self.metrics_host = metrics_host or conf.worker_metrics_host
        self.broker_outages = 0
        self.fetch_failures = 0
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or conf.worker_max_memory_per_child
        self.prefetch_multiplier = max(1, prefetch_multiplier or conf.worker_prefetch_multiplier)
        self.shutdown_timeout = (
            shutdown_timeout if shutdown_timeout is not None else conf.worker_shutdown_timeout
        )
        self.middleware = list(middleware) if middleware is not None else default_middleware()
        self._hooks: dict[str, list[Middleware]] = {}
        self.fetch_timeout = fetch_timeout
        self.wedge_timeout = wedge_timeout or conf.worker_wedge_timeout or 30.0
        self.pid = os.getpid()
        self.log = logging.getLogger("celeriac.worker")
        self.broker: Broker | None = None
        self.backend: Backend | None = None
        self.pool: Pool = pool_class(self.pool_name)(
            app,
            self.concurrency,
            app_path=self.app_path,
            max_tasks_per_child=self.max_tasks_per_child,
            max_memory_per_child=self.max_memory_per_child,
            hostname=self.hostname,
        )
        self.stats: dict[str, int] = {
            "received": 0,
            "succeeded": 0,
            "failed": 0,
            "retried": 0,
            "dead_lettered": 0,
            "requeued": 0,
            "lease_lost": 0,
        }
        self._stop_level = 0
        self._stopped = asyncio.Event()
        self._cold = asyncio.Event()
        self._fetching: asyncio.Timeout | None = None
        self._persistent = Persistent(self.log, self.wedge_timeout, self._cold)
        self._writer: Writer | None = None
        self._slots = Slots(self.concurrency)
        self._prefetch_slots = self.concurrency
        self._slot_freed = asyncio.Event()
        self._waiting: dict[asyncio.Task[None], WorkItem] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._active: dict[asyncio.Task[None], WorkItem] = {}
        #: Active tasks terminated before they reached the pool, with the signal asked for.
        self._doomed: dict[str, int] = {}
        #: Tasks started, by name (remote control's ``stats``).
        self.total: Counter[str] = Counter()
        #: The remote control, while the worker runs (None when ``worker_enable_remote_control`` is off).
        self.control: RemoteControl | None = None
        #: Jobs of ``_running`` whose task has ended and that only store results, report and ack.
        self._finishing: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self.ready = asyncio.Event()
        #: Events (``celeriac.worker.events``): ``events.enable()``/``disable()`` switch task events.
        self.prefetch_slots_changed()
        self.events = WorkerEvents(
            self.hostname,
            task_events=conf.worker_send_task_events if task_events is None else task_events,
            heartbeat_interval=heartbeat_interval,
            on_switch=self.rehook,
        )
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=conf)

    @property
    def writer(self) -> Writer:
        """The running worker's writes (acks, requeues, dead letters, results), which middleware share.

        Raises:
            RuntimeError: the worker is not running (``arun`` has not made its connections yet).
        """
        writer = self._writer
        if writer is None:
            raise RuntimeError(f"worker {self.hostname} is not running: it has nothing to write to")
        return writer

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; return the exit code (0 after a warm or cold shutdown)."""
        return asyncio.run(self.arun())

    async def arun(self, install_signals: bool = True) -> int:
        """Serve on the running loop until stopped, as ``run`` does; with ``install_signals``, SIGTERM and
        SIGINT ask for a shutdown (``request_stop``) meanwhile."""
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        signals.import_modules.send(sender=self.app)
        self.app.import_includes()
        signals.worker_init.send(sender=self)
        broker = self.broker = self.app.broker()
        self.prefetch_slots_changed()
        backend = self.backend = None if self.app.backend_url.startswith("disabled") else self.app.backend()
        self._writer = Writer(
            self.app,
            broker,
            backend,
            hostname=self.hostname,
            log=self.log,
            stats=self.stats,
            persistent=self._persistent,
            wedge_timeout=self.wedge_timeout,
        )
        if not self.app.conf.broker_url:
            # The embedded default is a file relative to the working directory: say which one, so a
            # caller started elsewhere (or another app) is not silently on another file.
            self.log.info(
                "messages and results in the SQLite file %s (the embedded default of app %r; set "
                "broker_url to change it)",
                os.path.abspath(self.app.default_sqlite),
                self.app.main or "",
            )
        self.log.info("%s waiting for the broker %s ...", self.hostname, self._where_broker)
        if not await self._declare_queues(broker):
            await self._close("the broker", self._where_broker, broker.close)
            self.log.info("%s stopped before it could reach %s", self.hostname, self._where_broker)
            return 0
        await self.pool.start()
        if self.autoscaler is not None:
            self.autoscaler.start()
        for mw in self.middleware:
            await mw.worker_start(self)
        if self.app.conf.worker_enable_remote_control:
            self.control = RemoteControl(self)
            await self.control.start()
        self.log.info(
            "%s ready: pool=%s concurrency=%d queues=%s broker=%s",
            self.hostname,
            self.pool_name,
            self.concurrency,
            ",".join(self.queues),
            self._where_broker,
        )
        self.ready.set()
        signals.worker_ready.send(sender=self)
        if self.mingle:
            self._mingling = asyncio.create_task(mingle(self), name="celeriac-mingle")
        try:
            await self._consume(broker)
        finally:
            await self._shutdown(broker)
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return 0

    async def _declare_queues(self, broker: Broker) -> bool:
        """Declare the queues served and make one round trip to the broker (the size of the first
        queue), waiting out a broker that cannot be reached yet (one started before its broker, say);
        False if a stop came first. Declaring alone proves nothing where it needs no server (Redis),
        so the worker is only called ready, and ``worker_ready`` only sent, once the broker answered.

        ``broker_connection_retry_on_startup`` (default: ``broker_connection_retry``, True) and
        ``broker_connection_max_retries`` (0 or None: no limit) say how long to wait, as in Celery;
        then the last failure is raised. Once running, an outage never ends the worker.
        """
        conf = self.app.conf
        retry = conf.broker_connection_retry_on_startup
        if retry is None:
            retry = conf.broker_connection_retry
        attempts = conf.broker_connection_max_retries or 0
        backoff = Backoff()
        while True:
            try:
                async with asyncio.timeout(self.wedge_timeout):  # a broker that accepts but never answers
                    for queue in self.queues:
                        await broker.declare(queue)
                    await broker.size(self.queues[0])
                return True
            except (TypeError, ValueError, ConfigurationError):
                raise  # a mistake, not an outage: waiting would not mend it
            except Exception as exc:  # OperationalError, TimeoutError, a driver's own connection errors
                if not retry or (attempts and backoff.failures >= attempts):
                    raise
                delay = backoff.next()
                self.log.warning(
                    "cannot reach the broker %s to start (%s); trying again in %.2fs (retry %d%s)",
                    self._where_broker,
                    describe(exc),
                    delay,
                    backoff.failures,
                    f" of {attempts}" if attempts else "",
                )
            if await sleep_unless(self._stopped, delay):
                return False

    def _on_signal(self, sig: signal.Signals) -> None:
        self.request_stop(sig=sig.name)

    def request_stop(self, cold: bool = False, sig: str | None = None) -> None:
        """Ask for a warm shutdown; asked again (or with ``cold``), a cold one. Safe from any thread.

        Sends ``worker_shutting_down`` (``sig``: the signal's name, e.g. ``"SIGTERM"``, or None when
        no signal asked; ``how``: ``"Warm"`` or ``"Cold"``; ``exitcode``: 0, what the worker exits with).
        """
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() != self._thread:
            with contextlib.suppress(RuntimeError):  # its loop has closed: it has stopped already
                loop.call_soon_threadsafe(self.request_stop, cold, sig)
            return
        self._stop_level = max(self._stop_level + 1, 2 if cold else 1)
        if self._stop_level <= 2:
            how = "Warm" if self._stop_level == 1 else "Cold"
            signals.worker_shutting_down.send(sender=self.hostname, sig=sig, how=how, exitcode=0)
        fetching = self._fetching
        if fetching is not None and fetching.when() is not None:
            # A healthy fetch returns within its own timeout: do not wait out the wedge margin too.
            soon = loop.time() + self.fetch_timeout + 1.0
            fetching.reschedule(min(soon, fetching.when() or soon))
        if self._stop_level == 1:
            self.log.info(
                "warm shutdown: finishing %d running task(s); signal again to stop now", len(self._running)
            )
        else:
            self.log.warning("cold shutdown: stopping running tasks; their messages go back to the queue")
            self._cold.set()  # writes still waiting out an outage give up
            self._spawn(self.pool.stop(cold=True))
        self._stopped.set()
        self._slot_freed.set()

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the active ``task_id`` (remote control's ``revoke(terminate=True)``): the pool stops it
        as it can (``Pool.terminate``), or, not handed to the pool yet, it never starts. Its run ends
        REVOKED. False when it is not active here, or its run has ended already."""
        for task, item in self._active.items():
            if item.call.id != task_id:
                continue
            if task in self._finishing:
                return False
            if not self.pool.terminate(task_id, signum):
                self._doomed[task_id] = signum
            return True
        return False

    def resize(self, concurrency: int) -> None:
        """Run at most ``concurrency`` tasks at once from now on; running ones are never stopped.

        Raises:
            NotImplementedError: the pool cannot be resized (solo).
            ValueError: ``concurrency`` is below 0.
        """
        if concurrency < 0:
            raise ValueError(f"a pool cannot have {concurrency} slots")
        self.pool.resize(concurrency)
        self.concurrency = concurrency
        self._slots.resize(concurrency)
        self.prefetch_slots_changed()

    def prefetch_slots_changed(self) -> None:
        """Fetch for the current pool size, or for the autoscaler's maximum (so that work waits and it
        grows); tell the broker too (a pushing broker applies it when it next subscribes)."""
        slots = self.concurrency
        if self.autoscaler is not None:
            slots = max(slots, self.autoscaler.maximum)
        self._prefetch_slots = slots
        if self.broker is not None:
            self.broker.capacity = slots * self.prefetch_multiplier
            self.broker.slots = max(slots, 1)
        self._slot_freed.set()  # the consumer looks at its room again

    @property
    def prefetch_count(self) -> int:
        """How many messages the worker holds at most (running and waiting): ``inspect stats``."""
        return self._prefetch_slots * self.prefetch_multiplier

    @property
    def demand(self) -> int:
        """Tasks running in the pool plus tasks fetched and waiting for a slot (the autoscaler's cue)."""
        return self._slots.held + self._slots.waiting

    def waiting_items(self) -> list[WorkItem]:
        """The fetched items not running yet (waiting for their ETA, a rate limit or a pool slot)."""
        return list(self._waiting.values())

    def active_items(self) -> list[WorkItem]:
        """The items whose task runs in the pool now (not those whose task ended and that are finishing:
        their result may be stored, and a caller who saw it must not see them still active)."""
        finishing = self._finishing
        return [item for task, item in self._active.items() if task not in finishing]

    def drop_waiting(self, item: WorkItem) -> None:
        """Stop waiting to run ``item``, whose fate a command settled (revoked): it is settled so."""
        for task, waiting in self._waiting.items():
            if waiting is item:
                task.cancel()

    @property
    def _where_broker(self) -> str:
        return safe_url(self.app.broker_url)

    @property
    def _where_backend(self) -> str:
        return safe_url(self.app.backend_url)

    async def _shutdown(self, broker: Broker) -> None:
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        if self._mingling is not None:
            self._mingling.cancel()
            await asyncio.wait((self._mingling,))
        for task in list(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)
        self._stop_level = max(self._stop_level, 1)  # the loop also ends when a caller stops it
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=self.shutdown_timeout)
            if pending:
                self.log.warning("shutdown timeout: %d task(s) still running; stopping them", len(pending))
                self._stop_level = 2
                self._cold.set()
                await self.pool.stop(cold=True)
                await asyncio.wait(pending, timeout=5)
        if self.control is not None:
            await self.control.stop()
        await self.pool.stop(cold=self._stop_level > 1)
        for mw in self.middleware:
            await mw.worker_stop(self)
        await self._close("the broker", self._where_broker, broker.close)
        if self.backend is not None:
            await self._close("the result backend", self._where_backend, self.backend.close)
        self.log.info("%s stopped: %s", self.hostname, ", ".join(f"{k}={v}" for k, v in self.stats.items()))
        signals.worker_shutdown.send(sender=self)

    async def _close(self, what: str, where: str, close: Callable[[], Awaitable[None]]) -> None:
        """Close a connection without letting an outage hold up or fail the shutdown."""
        try:
            async with asyncio.timeout(min(self.wedge_timeout, 10.0)):
                await close()
        except Exception as exc:
            self.log.warning(
                "could not close %s %s cleanly (%s); messages this worker still held return to their "
                "queue when its lease runs out",
                what,
                where,
                describe(exc),
            )

    # -- the loop -----------------------------------------------------------------------------------
    async def _consume(self, broker: Broker) -> None:
        """Fetch and start work until stopped; an unreachable or wedged broker is waited out."""
        backoff = Backoff()
        down_since = 0.0
        while not self._stop_level:
            room = self._room()
            if room <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                items = await self._take(broker, room)
            except Exception as exc:
                if self._stop_level:
                    break
                if not backoff.failures:
                    down_since = time.monotonic()
                    self.broker_outages += 1
                self.fetch_failures += 1
                delay = backoff.next()
                if isinstance(exc, _Wedged):
                    self.log.error(
                        "consumer wedged: a fetch from %s did not return within %gs; cancelled it, "
                        "fetching again in %.2fs",
                        self._where_broker,
                        exc.seconds,
                        delay,
                    )
                else:
                    self.log.warning(
                        "could not fetch from %s (%s); fetching again in %.2fs",
                        self._where_broker,
                        describe(exc),
                        delay,
                    )
                await sleep_unless(self._stopped, delay)
                continue
            if backoff.failures:
                self.log.info(
                    "broker %s answers again, after %.1fs and %d failed fetch(es)",
                    self._where_broker,
                    time.monotonic() - down_since,
                    backoff.failures,
                )
                backoff.reset()
            for item in items:
                if item.fate is not Fate.RUN:
                    await self._not_run(item)
                    continue
                task = asyncio.create_task(self._process(item))
                self._waiting[task] = item
                task.add_done_callback(self._done)

    async def _take(self, broker: Broker, room: int) -> list[WorkItem]:
        """Fetch up to ``room`` messages, decode them and run the ``after_fetch`` hooks.

        Raises ``_Wedged`` when the fetch hung past its own timeout plus ``wedge_timeout`` (or, once a
        stop was asked, past its own timeout plus a second) and was cancelled.
        """
        deadline = self._fetching = asyncio.timeout(self.fetch_timeout + self.wedge_timeout)
        try:
            async with deadline:
                deliveries = await broker.fetch(self.queues, room, self.fetch_timeout)
        except TimeoutError:
            if deadline.expired():
                raise _Wedged(self.fetch_timeout + self.wedge_timeout) from None
            raise
        finally:
            self._fetching = None
        if not deliveries:
            return []
        if self._stop_level:
            await self.writer.give_back(deliveries)
            return []
        conf = self.app.conf
        limit, content, max_bytes = (
            conf.broker_max_deliveries,
            conf.accept_content,
            conf.task_message_max_bytes,
        )
        items: list[WorkItem] = []
        for delivery in deliveries:
            self.stats["received"] += 1
            found = accept(
                self.app, delivery, hostname=self.hostname, limit=limit, content=content, max_bytes=max_bytes
            )
            if isinstance(found, Refused):
                for mw in self._hooked("on_refused"):
                    await mw.on_refused(self, delivery, found.reason, found.exc, found.call)
                await self._dead_letter(delivery, found.reason, found.exc, call=found.call)
            else:
                self.log.info("Task %s[%s] received", found.call.name, found.call.id)
                items.append(found)
        try:
            for mw in self._hooked("after_fetch"):
                await mw.after_fetch(self, [i for i in items if i.fate is Fate.RUN])
        except Exception:
            # e.g. the backend is down while revocations are looked up: start none of them for now.
            # Given back for sure (waiting out an outage): a live worker's lease never runs out, so a
            # message it failed to give back would wait, unseen, until the worker stops.
            await self.writer.release([d.delivery for d in items])
            raise
        return items

    def _room(self) -> int:
        """How many messages to fetch now. Jobs whose task ended and that are only writing (results,
        chord reports, acks: a round trip or two) take room only beyond one capacity's worth, so the
        next messages are fetched while those writes travel."""
        capacity = self._prefetch_slots * self.prefetch_multiplier
        busy = len(self._running) - min(len(self._finishing), capacity)
        return capacity - len(self._waiting) - busy

    def _done(self, task: asyncio.Task[None]) -> None:
        self._waiting.pop(task, None)
        self._running.discard(task)
        self._active.pop(task, None)
        self._finishing.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            self.log.error("internal error handling a task", exc_info=task.exception())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine beside the loop, keeping a reference until it ends (asyncio holds weak ones)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _process(self, item: WorkItem) -> None:
        """Run one item through its ``before_start`` hooks, a pool slot, the pool and its
        ``after_outcome`` hooks, then settle its message."""
        writer = self.writer
        try:
            for mw in self._hooked("before_start"):
                await mw.before_start(self, item)
            # Until a pool slot is free the item is only waiting: a warm shutdown hands it back.
            await self._slots.acquire()
        except Skip as skip:
            item.settle(skip.fate, skip.reason, abandon=skip.abandon)
            await self._not_run(item)
            return
        except asyncio.CancelledError:
            if item.fate is not Fate.RUN:  # settled while waiting (revoked by remote control)
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                await self._not_run(item)
                return
            await writer.give_back([item.delivery])
            raise
        except Exception as exc:
            await self._not_started(item, exc)
            return
        try:
            for mw in self._hooked("before_run"):
                await mw.before_run(self, item)
        except BaseException as exc:
            self._slots.release()
            if isinstance(exc, Skip):
                item.settle(exc.fate, exc.reason, abandon=exc.abandon)
                await self._not_run(item)
                return
            if not isinstance(exc, Exception):
                await writer.give_back([item.delivery])
                raise
            await self._not_started(item, exc)
            return
        current = asyncio.current_task()
        assert current is not None
        self._waiting.pop(current, None)
        self._running.add(current)
        self._active[current] = item
        self.total[item.task.name] += 1
        try:
            if not item.acks_late:
                await writer.ack(item.delivery)
                item.acked = True
            signum = self._doomed.pop(item.call.id, None)
            if signum is None:
                outcome = await self.pool.run(job_of(item, self.hostname), lambda: self._started(item))
            else:  # terminated before it reached the pool: it never starts
                outcome = revoked(signum)
        finally:
            self._slots.release()
            self._finishing.add(current)
            self._slot_freed.set()
        if not item.acked and not await writer.still_held(item, outcome.status):
            return  # another worker was given the message: its run stands, this one is dropped
        self._log_outcome(item, outcome)
        reject_lost = item.task.reject_on_worker_lost
        if reject_lost is None:
            reject_lost = self.app.conf.task_reject_on_worker_lost
        # A child killed at its hard time limit failed for good; only an unexplained death requeues.
        lost = outcome.worker_lost and isinstance(outcome.exc, WorkerLostError)
        if lost and reject_lost is not False and not item.acked:
            item.settle(Fate.REQUEUE, "worker lost")
        for mw in self._hooked("after_outcome"):
            try:
                await mw.after_outcome(self, item, outcome)
            except Exception as exc:
                self._finishing_failed(item, mw, exc)
                self._internal_error(item, exc)
        if item.fate is not Fate.RUN:
            await self._settle(item)
        elif outcome.status == states.REJECTED and isinstance(outcome.exc, Reject):
            await self._rejected(item, outcome.exc)
        elif not item.acked:
            await writer.ack(item.delivery)

    async def _not_started(self, item: WorkItem, exc: Exception) -> None:
        """A middleware failed before the task started, not by the task's doing (e.g. the ETA middleware
        could not reach the broker): its message goes back uncounted, to be tried again."""
        self.log.warning(
            "Task %s[%s] not started: %s; its message goes back to the queue",
            item.task.name,
            item.call.id,
            describe(exc),
        )
        await self.writer.release([item.delivery])

    def _finishing_failed(self, item: WorkItem, mw: Middleware, exc: Exception) -> None:
        """A middleware failed to finish a task that ran (its writes gave up in a cold shutdown, or a bug).

        The task's outcome is final once reached: its message is not run again for a failure after the
        run, except when a cold shutdown gave up on the writes that record it. Then the message goes back
        uncounted (at least once: nothing records the run).
        """
        name, task_id, stage = item.task.name, item.call.id, type(mw).__name__
        if self._stop_level > 1 and not item.acked:
            self.log.error(
                "Task %s[%s]: %s could not finish it before the cold shutdown (%s); its message goes back "
                "to the queue and the task runs again",
                name,
                task_id,
                stage,
                describe(exc),
            )
            item.settle(Fate.REQUEUE, f"cold shutdown while finishing: {describe(exc)}")
            return
        self.log.error(
            "Task %s[%s]: internal error in %s after the task ran; its outcome stands and it is not run "
            "again",
            name,
            task_id,
            stage,
            exc_info=exc,
        )

    def _internal_error(self, item: WorkItem, exc: Exception) -> None:
        """Send ``task_internal_error`` for a task whose handling failed here (not in the task)."""
        if signals.task_internal_error.has_receivers():
            call = item.call
            signals.task_internal_error.send(
                sender=item.task,
                task_id=call.id,
                args=call.args,
                kwargs=call.kwargs,
                request=Context(**request_fields(call, self.hostname), called_directly=False),
                exception=exc,
                traceback=exc.__traceback__,
                einfo=ExceptionInfo(exc, internal=True),
            )

    async def _not_run(self, item: WorkItem) -> None:
        """Settle the message of an item a middleware kept from running, telling what waits on its task
        when it will never run."""
        self.log.info("Task %s[%s] not run: %s", item.task.name, item.call.id, item.reason)
        if item.abandon is not None:
            await self.abandoned(item.call, *item.abandon)
        await self._settle(item)

    async def _settle(self, item: WorkItem) -> None:
        """Do with an item's message what its fate says (``ACK`` for ``RUN``, which has no outcome here)."""
        fate = item.fate
        if fate is Fate.REQUEUE:
            self.stats["requeued"] += 1
        if item.acked:
            return
        writer = self.writer
        if fate is Fate.REQUEUE:
            if self._stop_level:
                # Stopped by this worker's own shutdown, not killed by the task: this delivery must not
                # count towards broker_max_deliveries, or a long task dies of rolling restarts.
                await writer.give_back([item.delivery])
            else:
                await writer.requeue(item.delivery, item.reason)
        elif fate is Fate.RELEASE:
            await writer.release([item.delivery])
        elif fate is Fate.DEAD_LETTER:
            await self._dead_letter(item.delivery, item.reason)
        else:
            await writer.ack(item.delivery)

    async def _rejected(self, item: WorkItem, reject: Reject) -> None:
        """A task raised ``Reject``: requeue its message, or dead-letter it and fail its result."""
        if reject.requeue and not item.acked:
            self.stats["requeued"] += 1
            await self.writer.requeue(item.delivery, "requeued by the task")
            return
        reason = f"rejected by the task {item.task.name}: {reject.reason or 'no reason given'}"
        if not item.acked:
            await self._dead_letter(item.delivery, reason, reject, call=item.call)
        else:
            self.log.error(
                "Task %s[%s] %s (already acked: acks_late is off)", item.task.name, item.call.id, reason
            )
            await self.writer.store_state(item, states.FAILURE, reject, traceback=reason)

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None = None,
        *,
        call: TaskCall | None = None,
    ) -> None:
        """Set a message aside and fail its result (``Writer.dead_letter``); with the decoded ``call``,
        the workflows waiting on it (a chain's rest, a chord) are told as well."""
        await self.writer.dead_letter(delivery, reason, exc, call=call)
        if exc is not None and call is not None:
            await self.abandoned(call, states.FAILURE, exc)

    async def abandoned(self, call: TaskCall, status: str, exc: BaseException) -> None:
        """Tell the middleware that ``call`` will never run (so workflows waiting on it end)."""
        for mw in self._hooked("on_abandoned"):
            try:
                await mw.on_abandoned(self, call, status, exc)
            except Exception:
                self.log.exception("Task %s[%s]: settling what waits on it failed", call.name, call.id)

    def _started(self, item: WorkItem) -> None:
        item.time_start = time.time()
        for mw in self._hooked("on_start"):
            if mw.wants_start(self, item):
                self._spawn(mw.on_start(self, item))

    def rehook(self) -> None:
        """Ask each middleware again which of its hooks are live (``Middleware.live``) before their next
        call. Safe from any thread."""
        self._hooks = {}

    def _hooked(self, hook: str) -> list[Middleware]:
        """The middleware that overrides ``hook`` and says it is live, in order: a per-message hook costs
        a coroutine (and ``on_start`` a task) per middleware, so only the ones that do something are
        called."""
        hooks = self._hooks  # a rehook meanwhile (another thread) replaces it: this answer is not kept
        found = hooks.get(hook)
        if found is None:
            base = getattr(Middleware, hook)
            found = hooks[hook] = [
                mw for mw in self.middleware if getattr(type(mw), hook) is not base and mw.live(self, hook)
            ]
        return found

    def _log_outcome(self, item: WorkItem, outcome: Outcome) -> None:
        name, tid = item.task.name, item.call.id
        if outcome.status == states.SUCCESS:
            self.stats["succeeded"] += 1
            self.log.info("Task %s[%s] succeeded in %.4fs: %.200r", name, tid, outcome.runtime, outcome.value)
        elif outcome.status == states.RETRY:
            self.stats["retried"] += 1
        elif outcome.status == states.FAILURE:
            self.stats["failed"] += 1
            if outcome.expected:
                self.log.info("Task %s[%s] raised expected: %r", name, tid, outcome.exc)
            else:
                self.log.error(
                    "Task %s[%s] failed in %.4fs: %r\n%s",
                    name,
                    tid,
                    outcome.runtime,
                    outcome.exc,
                    outcome.traceback or "",
                )


class _Wedged(Exception):
    """A fetch hung past its deadline and was cancelled."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g}s")
        self.seconds = seconds

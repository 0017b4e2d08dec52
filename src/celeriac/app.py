"""The application: configuration, the task registry, and the way to the broker and the backend."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import os
import re
import uuid
import weakref
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from celeriac import signals
from celeriac._builtins import register_builtins
from celeriac._outages import is_outage, safe_url
from celeriac._portal import portal
from celeriac._request import current_request
from celeriac._sending import RetryPolicy, SendOptions, announce, build_call
from celeriac._zones import app_zone, now_in
from celeriac.backends import create_backend
from celeriac.brokers import create_broker
from celeriac.canvas import Signature
from celeriac.canvas._eager import run_eagerly
from celeriac.canvas._plan import asend_plan, send_plan
from celeriac.config import Settings, settings_from_object
from celeriac.exceptions import ConfigurationError, MissingDependency, NotRegistered, OperationalError
from celeriac.protocol import encode_task
from celeriac.result import AsyncResult, GroupResult
from celeriac.routing import Router
from celeriac.task import Task

if TYPE_CHECKING:
    from datetime import timedelta

    from celeriac.backends.base import Backend
    from celeriac.brokers.base import Broker, DeadLetter
    from celeriac.canvas._plan import Plan
    from celeriac.control import Control
    from celeriac.protocol.message import Message, TaskCall
    from celeriac.result import ResultNode
    from celeriac.schedules import BaseSchedule
    from celeriac.unique.store import KeyStore

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Where the embedded default keeps messages and results when nothing else is configured and the app
#: has no name; a named app ``Celeriac("proj")`` uses ``proj.celeriac.sqlite3`` (see ``default_sqlite``).
DEFAULT_SQLITE = "celeriac.sqlite3"

logger = logging.getLogger("celeriac")

_shared_tasks: list[Callable[[Celeriac], Any]] = []
_apps: weakref.WeakSet[Celeriac] = weakref.WeakSet()


class Celeriac:
    """A celeriac application: ``app = Celeriac("proj", broker="redis://...")``.

    ``broker`` and ``backend`` are URLs; with neither, messages and results live in the SQLite file
    ``<main>.celeriac.sqlite3`` in the working directory (``celeriac.sqlite3`` for an app without a
    name), so a first project needs no server. Any other keyword
    is a setting (``task_serializer="json"``); ``include`` lists modules the worker imports at start.
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        include: Sequence[str] | None = None,
        config_source: Any = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings()
        if config_source is not None:
            self.config_from_object(config_source)
        if settings:
            self.conf.update(settings)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None:
            self.conf.result_backend = backend
        if include:
            self.conf.include = list(include)
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: This client's id: the ``reply_to`` of what it sends (Celery's ``app.thread_oid``).
        self.oid = str(uuid.uuid4())
        self._brokers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Broker] = (
            weakref.WeakKeyDictionary()
        )
        self._backends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Backend] = (
            weakref.WeakKeyDictionary()
        )
        self._key_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KeyStore] = (
            weakref.WeakKeyDictionary()
        )
        self._router: Router | None = None
        self._timezone: tzinfo | None = None
        #: Celery's per-app signals (sender: the app): sent once, by ``finalize``, when a beat or a
        #: worker starts; the place to call ``add_periodic_task``.
        self.on_after_configure = signals.Signal("on_after_configure", ("source",))
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self.finalized = False
        self.conf.on_change(self._forget_derived)
        _apps.add(self)
        register_builtins(self)
        for register in _shared_tasks:
            register(self)

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'}>"

    def _forget_derived(self, names: set[str]) -> None:
        if names & {"task_routes", "task_queues"}:
            self._router = None
        if names & {"timezone", "enable_utc"}:
            self._timezone = None
        # Connections made with the old settings are left to their loops; new calls use new ones.
        broker_settings = {"broker_url", "broker_transport_options", "broker_lease_seconds", "broker_use_ssl"}
        if names & (broker_settings | set(_BROKER_SETTINGS.values())):
            self._brokers.clear()
        if names & {
            "result_backend",
            "result_serializer",
            "result_accept_content",
            "accept_content",
            "result_expires",
            "result_backend_transport_options",
            "redis_backend_use_ssl",
            "broker_url",
        }:
            self._backends.clear()
        stores = {"broker_url", "result_backend", "broker_transport_options"}
        if names & (stores | {"result_backend_transport_options"}):
            self._key_stores.clear()

    # -- configuration ------------------------------------------------------------------------------
    def config_from_object(self, obj: Any, *, namespace: str | None = None, force: bool = True) -> None:
        """Load settings from a module, an object, a mapping, or a dotted path to one of them."""
        self.conf.update(settings_from_object(obj, namespace))

    def setup_security(
        self,
        allowed_serializers: Collection[str] | None = None,
        key: str | None = None,
        key_password: str | bytes | None = None,
        cert: str | None = None,
        store: str | None = None,
        digest: str | None = None,
        serializer: str = "json",
    ) -> None:
        """Sign every task message this process sends and verify every one it reads, as Celery's
        ``app.setup_security()`` does and on the same wire format (docs/security.md).

        Needs ``task_serializer = "auth"``, ``accept_content = ["auth"]`` and the ``security_*``
        settings (or the arguments standing for them: file paths, as in Celery); ``serializer`` writes
        what is signed, ``allowed_serializers`` (default ``["json"]``) what a signed body may hold.
        Like Celery's, it applies to the whole process.

        Raises:
            ImproperlyConfigured: a setting is missing or inconsistent, or a file cannot be loaded.
            MissingDependency: the ``security`` extra (cryptography) is not installed.
        """
        try:
            from celeriac.protocol import signing
        except ImportError as exc:
            if exc.name != "cryptography" and not (exc.name or "").startswith("cryptography."):
                raise
            raise MissingDependency("message signing", "security") from None
        signing.setup(self.conf, allowed_serializers, key, key_password, cert, store, digest, serializer)

    def autodiscover_tasks(
        self,
        packages: Sequence[str] | Callable[[], Sequence[str]] | None = None,
        related_name: str = "tasks",
        force: bool = True,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package, registering the tasks found there.

        A package without such a module is skipped; an error raised while importing one is not hidden.
        """
        names = packages() if callable(packages) else (packages or [])
        for package in names:
            module = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name not in (module, package):
                    raise

    def import_includes(self) -> None:
        """Import the modules of the ``include`` and ``imports`` settings (the worker does this)."""
        for module in [*self.conf.imports, *self.conf.include]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import module {module!r} from include/imports: {exc}"
                ) from exc

    @property
    def default_sqlite(self) -> str:
        """The file of the embedded default, relative to the working directory: named after the app
        (``Celeriac("proj")``: ``proj.celeriac.sqlite3``), so that two apps in one folder do not share
        one file and one ``celery`` queue and dead-letter each other's tasks as unknown; an app without
        a name (or named ``__main__``, which differs between a script and the worker) uses
        ``celeriac.sqlite3``."""
        if not self.main or self.main == "__main__":
            return DEFAULT_SQLITE
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.main) + ".celeriac.sqlite3"

    @property
    def broker_url(self) -> str:
        """The broker's URL: ``broker_url``, else the embedded SQLite file (``default_sqlite``)."""
        return self.conf.broker_url or f"sqlite:///{self.default_sqlite}"

    @property
    def backend_url(self) -> str:
        """The result backend's URL: ``result_backend``, else the embedded SQLite file when the
        broker is the default too, else none (``disabled://``).
        """
        if self.conf.result_backend:
            return str(self.conf.result_backend)
        return f"db+sqlite:///{self.default_sqlite}" if not self.conf.broker_url else "disabled://"

    @property
    def timezone(self) -> tzinfo:
        """The app's zone, as Celery's ``app.timezone``: the ``timezone`` setting; without one, UTC, or the
        machine's zone when ``enable_utc`` is False."""
        if self._timezone is None:
            self._timezone = app_zone(self.conf.timezone, self.conf.enable_utc)
        return self._timezone

    def now(self) -> datetime:
        """The current time, aware, in the app's zone (Celery's ``app.now()``)."""
        return now_in(self.timezone)

    def uses_utc_timezone(self) -> bool:
        """Whether the app's zone is UTC."""
        return self.timezone is UTC or getattr(self.timezone, "key", None) in ("UTC", "Etc/UTC", "Etc/UCT")

    @property
    def router(self) -> Router:
        """The router that picks each task's queue from ``task_routes`` and ``task_queues``."""
        if self._router is None:
            self._router = Router(self.conf.task_routes, self.conf.task_queues)
        return self._router

    def finalize(self) -> None:
        """Send ``on_after_configure`` then ``on_after_finalize``, once (a beat or worker does this as it
        starts, after the app module and its configuration are loaded)."""
        if self.finalized:
            return
        self.finalized = True
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def add_periodic_task(
        self,
        schedule: float | timedelta | BaseSchedule,
        sig: Signature,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Run ``sig`` on ``schedule`` (seconds, a timedelta, or a ``celeriac.schedules`` schedule): an
        entry added to ``beat_schedule``, checked now; returns its name (``name``, else the
        signature's repr). ``catch_up`` and ``skip_if_running`` are the entry's options
        (docs/periodic-tasks.md); the others are sending options (``queue``, ``expires``, ...)."""
        from celeriac.beat.entries import add_periodic_task  # the beat's modules load for beat users only

        return add_periodic_task(self, schedule, sig, args, kwargs, name, **options)

    # -- tasks --------------------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        bind: Literal[True],
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        typing: bool | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Task[..., Any]]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        bind: Literal[False] = False,
        typing: bool | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...
    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Register a function as a task; use bare (``@app.task``) or with options."""

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(func, **options)

        return register(fn) if fn is not None else register

    def _register(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        bind: bool = False,
        typing: bool | None = None,
        **options: Any,
    ) -> Task[Any, Any]:
        task_name = name or self.gen_task_name(fn)
        existing = self.tasks.get(task_name)
        if existing is not None and existing.fn is fn:
            return existing
        cls = base or Task
        task = cls(self, fn, name=task_name, bind=bind, typing=typing, **options)
        self.tasks[task_name] = task
        return task

    def register_task(self, task: type[Task[Any, Any]] | Task[Any, Any]) -> Task[Any, Any]:
        """Register a class-based task (Celery's ``app.register_task``): a ``Task`` subclass that defines
        ``run`` (and may set ``name`` and any task option as class attributes), or an instance of one.

        Returns the registered task. Raises TypeError for a class without its own ``run``.
        """
        if isinstance(task, Task):
            self.tasks[task.name] = task
            return task
        if not (isinstance(task, type) and issubclass(task, Task)) or task.run is Task.run:
            raise TypeError(f"register_task() takes a Task subclass that defines run(), got {task!r}")
        # Its options are its class attributes, which Task reads; run() takes the task first, as bound.
        name = getattr(task, "name", None) or f"{task.__module__}.{task.__name__}"
        instance = task(self, task.run, name=str(name), bind=True)
        self.tasks[instance.name] = instance
        return instance

    def gen_task_name(self, fn: Callable[..., Any]) -> str:
        """The name a task gets when none is given: its module and function name."""
        module = fn.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fn.__name__}"

    def get_task(self, name: str) -> Task[Any, Any]:
        """The registered task of that name; raises ``NotRegistered`` when there is none."""
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"task {name!r} is not registered with {self!r}") from None

    def signature(
        self, name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A signature of the task called ``name`` (it need not be registered here)."""
        return Signature(name, tuple(args), dict(kwargs or {}), options=options, app=self)

    # -- connections --------------------------------------------------------------------------------
    def broker(self) -> Broker:
        """This event loop's broker connection (made on first use)."""
        loop = asyncio.get_running_loop()
        broker = self._brokers.get(loop)
        if broker is None:
            options = dict(self.conf.broker_transport_options)
            options.setdefault("lease_seconds", self.conf.broker_lease_seconds)
            for option, setting in _BROKER_SETTINGS.items():
                options.setdefault(option, getattr(self.conf, setting))
            if self.conf.broker_use_ssl:
                options.setdefault("ssl", _tls_options(self.conf.broker_use_ssl))
            broker = self._brokers[loop] = create_broker(self.broker_url, options)
        return broker

    def key_store(self) -> KeyStore:
        """This event loop's store of unique tasks' keys (made on first use; ``docs/unique-tasks.md``).

        Raises ConfigurationError when neither the broker nor the result backend can hold one."""
        loop = asyncio.get_running_loop()
        store = self._key_stores.get(loop)
        if store is None:
            from celeriac.unique.store import key_store_for

            store = self._key_stores[loop] = key_store_for(self)
        return store

    def backend(self) -> Backend:
        """This event loop's result backend (made on first use)."""
        loop = asyncio.get_running_loop()
        backend = self._backends.get(loop)
        if backend is None:
            conf = self.conf
            options = dict(conf.result_backend_transport_options)
            if conf.redis_backend_use_ssl:
                options.setdefault("ssl", _tls_options(conf.redis_backend_use_ssl))
            if self.backend_url.partition("://")[0].lower() == "rpc":
                # rpc:// answers on the broker's connection, to this client's reply queue (as Celery).
                options.setdefault("broker_url", self.broker_url)
                options.setdefault("reply_to", self.oid)
                options.setdefault("persistent", bool(conf.result_persistent))
                if conf.broker_use_ssl:
                    options.setdefault("ssl", _tls_options(conf.broker_use_ssl))
            backend = self._backends[loop] = create_backend(
                self.backend_url,
                serializer=conf.result_serializer,
                accept=conf.result_accept_content or conf.accept_content,
                expires=conf.result_expires,
                options=options,
            )
        return backend

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of this app's workers: ``app.control.inspect().ping()``, ``revoke``, ..."""
        from celeriac.control import Control

        return Control(self)

    # -- dead letters (docs/dead-letters.md) -------------------------------------------------------
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters on the broker (of ``queue``, or all), newest first."""
        return self.run(self.adead_letters(queue, limit))

    async def adead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """``dead_letters`` for async code."""
        return await self.broker().dead_letters(queue, limit)

    def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        """Put dead letters (of ``queue``; of the task ``ids``; at most ``limit``) back on their queues,
        oldest first, with a fresh delivery count; returns how many (``Broker.requeue_dead_letters``)."""
        return self.run(self.arequeue_dead_letters(queue, limit, ids=ids))

    async def arequeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        """``requeue_dead_letters`` for async code."""
        return await self.broker().requeue_dead_letters(queue, limit, ids=ids)

    def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        """Delete dead letters (of ``queue``): all, or those older than ``older_than`` seconds or beyond
        the newest ``keep``; returns how many (``Broker.purge_dead_letters``)."""
        return self.run(self.apurge_dead_letters(queue, older_than=older_than, keep=keep))

    async def apurge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        """``purge_dead_letters`` for async code."""
        return await self.broker().purge_dead_letters(queue, older_than=older_than, keep=keep)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine of the async core from synchronous code (on the process's portal loop)."""
        return portal.call(coro, timeout)

    async def aclose(self) -> None:
        """Close this loop's broker and backend connections."""
        loop = asyncio.get_running_loop()
        broker = self._brokers.pop(loop, None)
        backend = self._backends.pop(loop, None)
        key_store = self._key_stores.pop(loop, None)
        if key_store is not None:
            await key_store.close()
        if broker is not None:
            await broker.close()
        if backend is not None:
            await backend.close()

    def close(self) -> None:
        """Close the connections the synchronous API opened."""
        if portal._loop is not None:
            self.run(self.aclose())

    # -- sending ------------------------------------------------------------------------------------
    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task: Task[Any, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name (it need not be registered here); return its result handle."""
        if self.conf.task_always_eager and task is not None:
            return task.apply(args, kwargs, **options)
        # The call is built here, not on the portal loop, because only this thread sees the running
        # task's context (its id becomes the parent id, and the new id one of its children).
        opts = SendOptions.parse(options)
        if _unique(opts, task):
            # The running task learns of its child only if the message goes out (``_adopted``).
            built = build_call(self, name, args, kwargs, replace(opts, add_to_parent=False), task)
            return _adopted(opts, self.run(self._send_unique(built, task)))
        queue, call, not_before, opts = build_call(self, name, args, kwargs, opts, task)
        self.run(self._publish(queue, call, not_before, opts, task))
        return self.AsyncResult(call.id, task_name=name)

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task: Task[Any, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """``send_task`` for code running in an event loop."""
        if self.conf.task_always_eager and task is not None:
            return await asyncio.to_thread(task.apply, args, kwargs, **options)
        opts = SendOptions.parse(options)
        if _unique(opts, task):
            built = build_call(self, name, args, kwargs, replace(opts, add_to_parent=False), task)
            return _adopted(opts, await self._send_unique(built, task))
        queue, call, not_before, opts = build_call(self, name, args, kwargs, opts, task)
        await self._publish(queue, call, not_before, opts, task)
        return self.AsyncResult(call.id, task_name=name)

    async def _send_unique(
        self, built: tuple[str, TaskCall, float | None, SendOptions], task: Task[Any, Any] | None
    ) -> tuple[AsyncResult[Any], bool]:
        """Publish a unique send's message if its key is free; the result of the task holding the key,
        and whether this send published it.

        The key is taken before the message goes out, and given back if it could not go out."""
        from celeriac.unique.keys import HEADER, uniqueness_of

        queue, call, not_before, opts = built
        uniqueness = uniqueness_of(self, call, opts, task)
        call.headers[HEADER] = uniqueness.header()
        store = self.key_store()
        holder = await store.hold(uniqueness.key, call.id, uniqueness.window)
        if holder != call.id:
            return self.AsyncResult(holder, task_name=call.name), False
        try:
            await self._publish(queue, call, not_before, opts, task)
        except BaseException:
            await store.release(uniqueness.key, call.id)
            raise
        return self.AsyncResult(call.id, task_name=call.name), True

    def _send_plan(self, plan: Plan, result: ResultNode) -> None:
        """Send a workflow's messages (``Signature.apply_async``); under ``task_always_eager`` run its
        tasks here, and put their records into ``result``."""
        if self.conf.task_always_eager:
            run_eagerly(self, plan, result)
        else:
            send_plan(self, plan)

    async def _asend_plan(self, plan: Plan, result: ResultNode) -> None:
        """``_send_plan`` for code running in an event loop."""
        if self.conf.task_always_eager:
            await asyncio.to_thread(run_eagerly, self, plan, result)
        else:
            await asend_plan(self, plan)

    async def _publish(
        self,
        queue: str,
        call: TaskCall,
        not_before: float | None,
        opts: SendOptions,
        task: Task[Any, Any] | None,
    ) -> None:
        item = self._prepare(queue, call, not_before, opts, task)
        await self.publish_many([item], retry=opts.retry, retry_policy=opts.retry_policy)

    def _prepare(
        self,
        queue: str,
        call: TaskCall,
        not_before: float | None,
        opts: SendOptions,
        task: Task[Any, Any] | None,
    ) -> tuple[str, Message, float | None]:
        """A call as the broker takes it: (queue, encoded message, not_before)."""
        conf = self.conf
        message = encode_task(
            call,
            serializer=opts.serializer or (task.serializer if task else None) or conf.task_serializer,
            compression=opts.compression or (task.compression if task else None) or conf.task_compression,
            max_bytes=conf.task_message_max_bytes,
        )
        if opts.exchange is not None or opts.routing_key is not None:
            # An explicit route (apply_async(exchange=, routing_key=), or a route's); brokers with
            # exchanges send through it, the others store the message in ``queue``.
            route = {"exchange": opts.exchange or "", "routing_key": opts.routing_key or queue}
            message.properties["delivery_info"] = route
        for name in (
            "MessageGroupId",
            "MessageDeduplicationId",
        ):  # SQS FIFO options, kept as kombu keeps them
            value = getattr(opts, name)
            if value is not None:
                message.properties[name] = str(value)
        if not_before is not None and self.broker().eta_on_queue:
            not_before = None  # the eta header goes with it; a worker parks it on receipt
        return queue, message, not_before

    async def publish(
        self,
        queue: str,
        message: Message,
        not_before: float | None = None,
        *,
        retry: bool | None = None,
        retry_policy: dict[str, Any] | None = None,
    ) -> None:
        """Publish an encoded message, retrying connection errors as ``task_publish_retry_policy`` says."""
        await self.publish_many([(queue, message, not_before)], retry=retry, retry_policy=retry_policy)

    async def publish_many(
        self,
        items: Sequence[tuple[str, Message, float | None]],
        *,
        retry: bool | None = None,
        retry_policy: dict[str, Any] | None = None,
    ) -> None:
        """Publish encoded messages in one batch where the broker allows, retrying connection errors.

        A retried batch may publish some messages twice (at-least-once); a workflow's tasks have fixed ids,
        and the chord counter counts each header task once.
        """
        broker = self.broker()
        backend = self.backend()
        if backend.answers_caller and any(m.properties.get("reply_to") == self.oid for _, m, _ in items):
            # Results come back to this client (rpc://): its reply queue must exist before a worker
            # answers (Celery's on_task_call).
            await backend.expect_reply(self.oid)
        retry = self.conf.task_publish_retry if retry is None else retry
        policy = RetryPolicy(**{**self.conf.task_publish_retry_policy, **(retry_policy or {})})
        delays = policy.delays() if retry else []
        if signals.before_task_publish.has_receivers():
            announce(signals.before_task_publish, items, declare=[], retry_policy=asdict(policy))
        # A broker that takes connections but never answers (a paused or wedged server) must not hold a
        # caller for minutes: each attempt has broker_publish_timeout (plus 1 ms a message, for large
        # groups), and all of them together that plus the retry policy's waits.
        timeout = self.conf.broker_publish_timeout
        per_attempt = float(timeout) + 0.001 * len(items) if timeout else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + per_attempt + sum(delays) if per_attempt is not None else None
        earlier = ""  # why the attempt before failed, when the last one only ran out of time
        for attempt in range(len(delays) + 1):
            bound = None if deadline is None else max(0.0, min(per_attempt or 0.0, deadline - loop.time()))
            limit = asyncio.timeout(bound)
            try:
                async with limit:
                    await broker.publish_many(items)
                if signals.after_task_publish.has_receivers():
                    announce(signals.after_task_publish, items)
                if self.conf.task_send_sent_event:
                    from celeriac.events.sent import send_task_sent  # loaded for the clients that send them

                    await send_task_sent(broker, items)
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
                out_of_time = deadline is not None and loop.time() >= deadline
                if attempt == len(delays) or out_of_time:
                    why = f"{type(exc).__name__}: {exc}"
                    if limit.expired():
                        why = f"no answer within {bound:g}s{earlier}"
                    raise OperationalError(
                        f"could not publish {len(items)} message(s) to {safe_url(self.broker_url)} after "
                        f"{attempt + 1} attempt(s) ({why}); is the broker up and answering? "
                        "(broker_publish_timeout, task_publish_retry_policy)"
                    ) from exc
                if not limit.expired():
                    earlier = f"; the attempt before: {type(exc).__name__}: {exc}"
                queues = ", ".join(sorted({repr(queue) for queue, _, _ in items}))
                logger.warning(
                    "publish to %s failed (%s); retry %d of %d", queues, exc, attempt + 1, len(delays)
                )
                await asyncio.sleep(delays[attempt])

    # -- results ------------------------------------------------------------------------------------
    def AsyncResult(self, task_id: str, *, task_name: str | None = None) -> AsyncResult[Any]:
        """The result handle of the task with id ``task_id``."""
        return AsyncResult(task_id, app=self, task_name=task_name)

    def GroupResult(self, group_id: str, results: Sequence[Any] = ()) -> GroupResult[Any]:
        """A group's result handle from its id and its members' results (``GroupResult.restore`` reads a
        saved one)."""
        return GroupResult(group_id, results, app=self)


def _unique(opts: SendOptions, task: Task[Any, Any] | None) -> bool:
    """Whether a send asks for uniqueness: three attribute reads, so that other sends pay nothing."""
    return (
        opts.idempotency_key is not None
        or opts.unique_for is not None
        or (task is not None and task.unique_for is not None)
    )


def _adopted(opts: SendOptions, sent: tuple[AsyncResult[Any], bool]) -> AsyncResult[Any]:
    """The result of a unique send, made a child of the running task if this send published it."""
    result, published = sent
    parent = current_request()
    if published and opts.add_to_parent and parent is not None and parent.id:
        parent.children.append(result.id)
    return result


#: Broker options taken from settings (a transport ignores those it has no use for).
_BROKER_SETTINGS = {
    "queue_type": "task_default_queue_type",
    "max_priority": "task_queue_max_priority",
    "queues": "task_queues",
    "heartbeat": "broker_heartbeat",
    "connect_timeout": "broker_connection_timeout",
}

#: Celery's name for the application class.
Celery = Celeriac


def _renew_oids() -> None:
    # A forked child is another client: replies (rpc://) to its parent's queue would reach the parent.
    for app in list(_apps):
        app.oid = str(uuid.uuid4())


os.register_at_fork(after_in_child=_renew_oids)


def _tls_options(setting: dict[str, Any] | bool) -> dict[str, Any]:
    """``broker_use_ssl`` / ``redis_backend_use_ssl`` as client options: True means the defaults."""
    return dict(setting) if isinstance(setting, dict) else {}


def shared_task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a task for every app, present and future (for reusable libraries, as in Celery).

    Returns the task of the most recently made app, registering the function with each app.
    """

    def declare(func: Callable[..., Any]) -> Any:
        _shared_tasks.append(lambda app: app._register(func, **options))
        made = [app._register(func, **options) for app in list(_apps)]
        if not made:
            raise ConfigurationError(
                f"@shared_task {func.__qualname__}: create an app before "
                "declaring shared tasks in this process"
            )
        return made[-1]

    if fn is not None and inspect.isroutine(fn):
        return declare(fn)
    return declare

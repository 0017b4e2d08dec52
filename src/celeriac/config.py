"""Settings under Celery's names: defaults, validation, and loading from objects, modules and the environment.

An unknown setting is an error that names the closest known one, so a typo never silently does nothing.
A setting of Celery's that celeriac does not implement yet (``beat_scheduler``, ``worker_state_db``, ...)
loads with a ``ConfigurationWarning`` naming it, and is kept, so that a Celery or Django configuration
loads as it is; Celery's old upper-case names (``BROKER_URL``, ``CELERYD_CONCURRENCY``) are read as the
new ones, with a warning to rename them.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from celeriac._celery_settings import CELERY_NAMES, OLD_NAMES
from celeriac._zones import zone
from celeriac.exceptions import ConfigurationError, ConfigurationWarning

ENV_PREFIX = "CELERIAC_"


@dataclass(frozen=True, slots=True)
class Setting:
    default: Any
    kinds: tuple[type, ...]
    doc: str
    validate: Callable[[Any], object] | None = None
    """Raises ValueError saying what is wrong with a value of the right type."""


def _s(default: Any, *kinds: type, doc: str = "", validate: Callable[[Any], object] | None = None) -> Setting:
    return Setting(default, kinds, doc, validate)


_NUM = (int, float)
_ANY = (object,)

#: Every setting celeriac knows, with its default and the types it accepts (None is always accepted).
SETTINGS: dict[str, Setting] = {
    # brokers and backends
    "broker_url": _s(None, str, doc="Where messages travel; default: the embedded SQLite file."),
    "broker_transport_options": _s({}, dict),
    "broker_use_ssl": _s(
        None, dict, bool, doc="TLS options for rediss:// brokers (ssl_cert_reqs, ssl_ca_certs, ...)."
    ),
    "broker_heartbeat": _s(None, *_NUM, doc="AMQP heartbeat in seconds (default: the server's, 60)."),
    "broker_connection_timeout": _s(4.0, *_NUM, doc="Seconds to wait for a broker connection."),
    "broker_publish_timeout": _s(
        10.0,
        *_NUM,
        doc="The most one publish attempt may take (a broker that takes connections but never answers); "
        "all retries together get this plus task_publish_retry_policy's waits. None: no bound.",
    ),
    "broker_connection_retry": _s(True, bool, doc="Default of broker_connection_retry_on_startup."),
    "broker_connection_retry_on_startup": _s(
        None, bool, doc="A worker that cannot reach its broker at start waits for it (default: True)."
    ),
    "broker_connection_max_retries": _s(
        100, int, doc="Retries of a starting worker that cannot reach its broker; 0 or None: no limit."
    ),
    "broker_max_deliveries": _s(
        3, int, doc="Times a message may kill its worker before it is dead-lettered."
    ),
    "broker_lease_seconds": _s(
        30.0, *_NUM, doc="How long a fetched message stays leased without a heartbeat."
    ),
    # dead letters: what each worker keeps, trimmed once a minute (None or 0: no limit)
    "broker_dead_letter_max": _s(
        10_000, int, doc="Dead letters kept per broker; the oldest beyond it are deleted."
    ),
    "broker_dead_letter_expires": _s(
        7 * 86400.0, *_NUM, doc="Seconds a dead letter is kept before it is deleted."
    ),
    "result_backend": _s(None, str, doc="Where results are kept; default: the embedded SQLite file."),
    "result_backend_transport_options": _s({}, dict),
    "redis_backend_use_ssl": _s(None, dict, bool, doc="TLS options for a rediss:// result backend."),
    "result_serializer": _s("json", str),
    "result_accept_content": _s(None, list, tuple),
    "result_expires": _s(86400.0, *_NUM),
    "result_extended": _s(False, bool),
    "result_compression": _s(None, str),
    "result_persistent": _s(None, bool, doc="rpc:// results survive a RabbitMQ restart (delivery mode 2)."),
    # serialization
    "task_serializer": _s("json", str),
    "accept_content": _s(["json"], list, tuple),
    "task_compression": _s(None, str),
    "task_message_max_bytes": _s(
        16 * 1024 * 1024, int, doc="Largest message a worker accepts or a client sends."
    ),
    "task_protocol": _s(2, int),
    # message signing (app.setup_security): PEM file paths, as Celery reads them
    "security_key": _s(None, str, doc="PEM private key file that signs messages (setup_security)."),
    "security_key_password": _s(None, str, bytes, doc="Password of the security_key file, if any."),
    "security_certificate": _s(None, str, doc="PEM certificate file of security_key."),
    "security_cert_store": _s(
        None, str, doc="Directory or glob of the PEM certificates whose signatures are trusted."
    ),
    "security_digest": _s("sha256", str, doc="Hash signed with RSA-PSS: sha256, sha384, sha512, ..."),
    # tasks and calling
    "task_default_queue": _s("celery", str),
    "task_default_exchange": _s("celery", str),
    "task_default_routing_key": _s("celery", str),
    "task_default_priority": _s(None, int),
    "task_queues": _s(None, list, tuple, dict),
    "task_default_queue_type": _s("classic", str, doc="RabbitMQ queue type: 'classic' or 'quorum'."),
    "task_queue_max_priority": _s(None, int, doc="x-max-priority of RabbitMQ classic queues."),
    "task_routes": _s(None, dict, list, tuple, *_ANY),
    "task_create_missing_queues": _s(True, bool),
    "task_acks_late": _s(
        True, bool, doc="Ack after the task finished (celeriac's default; Celery's is False)."
    ),
    "task_acks_on_failure_or_timeout": _s(True, bool),
    "task_reject_on_worker_lost": _s(None, bool),
    "task_track_started": _s(False, bool),
    "task_ignore_result": _s(False, bool),
    "task_store_errors_even_if_ignored": _s(False, bool),
    "task_time_limit": _s(None, *_NUM),
    "task_soft_time_limit": _s(None, *_NUM),
    "task_default_rate_limit": _s(None, str, *_NUM),
    "task_always_eager": _s(False, bool),
    "task_eager_propagates": _s(False, bool),
    "task_store_eager_result": _s(False, bool),
    "task_publish_retry": _s(True, bool),
    "task_publish_retry_policy": _s(
        {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}, dict
    ),
    "task_annotations": _s(None, dict, list, tuple),
    "task_typing": _s(True, bool, doc="Check a call's arguments against the task's signature when sent."),
    "task_send_sent_event": _s(False, bool),
    # worker
    "worker_concurrency": _s(None, int),
    "worker_pool": _s("processes", str),
    "worker_prefetch_multiplier": _s(1, int),
    "worker_max_tasks_per_child": _s(None, int),
    "worker_max_memory_per_child": _s(
        None, int, doc="KiB of resident memory after which a child is recycled."
    ),
    "worker_eta_horizon": _s(1.0, *_NUM, doc="ETA tasks due within this many seconds wait in memory."),
    "worker_shutdown_timeout": _s(None, *_NUM, doc="Seconds a warm shutdown waits before it turns cold."),
    "worker_autoscaler_keepalive": _s(
        30.0, *_NUM, doc="Seconds of quiet (no task received) before --autoscale shrinks the pool."
    ),
    "worker_wedge_timeout": _s(
        30.0,
        *_NUM,
        doc="Seconds a broker or backend call may hang (beyond a fetch's own wait) before the worker "
        "calls it wedged, cancels it and tries again.",
    ),
    "worker_hijack_root_logger": _s(True, bool),
    "worker_enable_remote_control": _s(
        True, bool, doc="Answer remote-control commands (inspect, revoke, ...)."
    ),
    "worker_log_format": _s("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s", str),
    "worker_task_log_format": _s(
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s", str
    ),
    "worker_send_task_events": _s(False, bool),
    "worker_metrics_port": _s(
        None, int, doc="Serve Prometheus metrics at /metrics on this port (0: any free one; None: off)."
    ),
    "worker_metrics_host": _s("127.0.0.1", str, doc="The address the worker's /metrics listens on."),
    # the dashboard (celeriac dashboard, celeriac.dashboard.create_app)
    "dashboard_host": _s("127.0.0.1", str, doc="The address `celeriac dashboard` listens on."),
    "dashboard_port": _s(5566, int, doc="The port `celeriac dashboard` listens on."),
    "dashboard_auth_token": _s(
        None,
        str,
        doc="A token every dashboard request but /healthz must bear (Authorization: Bearer TOKEN); "
        "required to listen beyond loopback.",
    ),
    "worker_disable_rate_limits": _s(False, bool),
    # beat (docs/periodic-tasks.md)
    "beat_schedule": _s(
        {}, dict, doc="Periodic tasks: entry name -> {task, schedule, args, kwargs, options}."
    ),
    "beat_max_loop_interval": _s(
        300.0, *_NUM, doc="The longest a beat sleeps between looks at its schedule (seconds)."
    ),
    "beat_lease_seconds": _s(
        5.0,
        *_NUM,
        doc="The beat leader's lease: a dead leader's place is taken within this plus a third of it.",
    ),
    # general
    "imports": _s((), list, tuple),
    "include": _s((), list, tuple),
    "timezone": _s(
        None,
        str,
        tzinfo,
        doc="The app's zone (an IANA name): app.now(), countdowns, date_done, crontab fields. "
        "None: UTC, or the machine's zone when enable_utc is False.",
        validate=zone,
    ),
    "enable_utc": _s(
        True, bool, doc="With no timezone: True reads time in UTC, False in the machine's zone."
    ),
}


def closest(name: str) -> str | None:
    """The known setting closest to ``name`` (a likely misspelling), or None."""
    match = difflib.get_close_matches(name, [*SETTINGS, *(CELERY_NAMES - SETTINGS.keys())], n=1, cutoff=0.6)
    return match[0] if match else None


def closest_of(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``name``, or an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def not_implemented(name: str) -> bool:
    """Whether ``name`` is a setting of Celery's that celeriac does not implement (yet)."""
    return name not in SETTINGS and name in CELERY_NAMES


def _warn_not_implemented(name: str) -> None:
    warnings.warn(
        f"setting {name!r} is Celery's, but celeriac does not implement it yet: it is kept in app.conf "
        "and changes nothing",
        ConfigurationWarning,
        stacklevel=4,
    )


def check(name: str, value: Any, *, warn: bool = True) -> Any:
    """Validate one setting; return the value. Raises ConfigurationError naming what to fix.

    A Celery setting celeriac does not implement yet is not checked: it warns once (a
    ``ConfigurationWarning`` naming it, unless ``warn`` is off because the caller passes the value on
    to be checked again) and its value is returned as it is.
    """
    setting = SETTINGS.get(name)
    if setting is None and name in CELERY_NAMES:
        if warn:
            _warn_not_implemented(name)
        return value
    if setting is None:
        hint = closest(name)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigurationError(f"unknown setting {name!r}{suggestion}")
    if value is None or object in setting.kinds:
        return value
    if isinstance(value, set | frozenset) and list in setting.kinds:
        return sorted(value, key=str)  # Celery's docs write accept_content = {"json"}: a set is a list here
    if isinstance(value, bool) and bool not in setting.kinds:
        raise ConfigurationError(f"setting {name!r} must be {_kinds(setting)}, not a bool ({value!r})")
    if not isinstance(value, setting.kinds):
        raise ConfigurationError(
            f"setting {name!r} must be {_kinds(setting)}, got {type(value).__name__} {value!r}"
        )
    if setting.validate is not None:
        try:
            setting.validate(value)
        except ValueError as exc:
            raise ConfigurationError(f"setting {name!r}: {exc}") from None
    return value


def _kinds(setting: Setting) -> str:
    return " or ".join(k.__name__ for k in setting.kinds)


def _from_env_text(name: str, text: str) -> Any:
    """Turn an environment variable's text into the setting's type."""
    kinds = SETTINGS[name].kinds
    if bool in kinds:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{ENV_PREFIX}{name.upper()}={text!r}: expected true or false")
    if int in kinds and str not in kinds:
        try:
            return int(text) if float not in kinds else float(text)
        except ValueError:
            raise ConfigurationError(f"{ENV_PREFIX}{name.upper()}={text!r}: expected a number") from None
    if (list in kinds or dict in kinds) and str not in kinds:
        if text.strip().startswith(("[", "{")):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


class Settings(MutableMapping[str, Any]):
    """The app's configuration: a mapping of validated settings with attribute access.

    Values come, lowest first, from the defaults, then ``update``/``config_from_object``, and
    ``CELERIAC_*`` environment variables win over both (read once, when the settings are made).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, Any] = {}
        self._env: dict[str, Any] = {}
        self._listeners: list[Callable[[set[str]], None]] = []
        self._read_environment(environ)

    def _read_environment(self, environ: Mapping[str, str] | None) -> None:
        for key, text in (os.environ if environ is None else environ).items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name in SETTINGS:
                self._env[name] = check(name, _from_env_text(name, text))
            elif not_implemented(name):
                self._env[name] = check(name, text)
            elif name not in ("app", "loglevel"):  # read by the CLI, not settings
                hint = closest(name)
                raise ConfigurationError(
                    f"unknown setting in environment variable {key}"
                    + (f"; did you mean {ENV_PREFIX}{hint.upper()}?" if hint else "")
                )

    def __getitem__(self, name: str) -> Any:
        if name in self._env:
            return self._env[name]
        if name in self._values:
            return self._values[name]
        setting = SETTINGS.get(name)
        if setting is None:
            if name in CELERY_NAMES:
                return None  # not implemented: read as unset, as it changes nothing
            check(name, None)  # raises, naming the closest known setting
        assert setting is not None
        default = setting.default
        return default.copy() if isinstance(default, (dict, list)) else default

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except ConfigurationError as exc:
            raise AttributeError(str(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        self._values[name] = check(name, value)
        self._changed({name})

    def __delitem__(self, name: str) -> None:
        del self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set many settings at once; every name is checked before any is applied."""
        items = dict(other, **kwargs)
        checked = {name: check(name, value) for name, value in items.items()}
        self._values.update(checked)
        self._changed(set(checked))

    def reload_environment(self) -> None:
        """Read ``CELERIAC_*`` variables again (the CLI sets some after the app was made)."""
        before = dict(self._env)
        self._env = {}
        self._read_environment(None)
        self._changed({k for k in before.keys() | self._env.keys() if before.get(k) != self._env.get(k)})

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(names)`` after settings change."""
        self._listeners.append(listener)

    def _changed(self, names: set[str]) -> None:
        for listener in self._listeners:
            listener(names)

    def changes(self) -> dict[str, Any]:
        """Settings that differ from their defaults (environment included)."""
        return {**self._values, **self._env}


def settings_from_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """Read settings from a module, an object, a dotted path to either, or a mapping.

    Only lower-case public names count, as in Celery, and Celery's old upper-case names
    (``BROKER_URL``, ``CELERYD_CONCURRENCY``); with ``namespace="CELERY"`` the upper-case names
    ``CELERY_<SETTING>`` count instead (the Django convention), old ones (``CELERY_ALWAYS_EAGER``)
    included. An old name warns (``ConfigurationWarning``) and a new name given as well wins over it.
    Unknown names are errors.
    """
    if isinstance(obj, str):
        obj = _import_object(obj)
    items: Mapping[str, Any] = (
        obj
        if isinstance(obj, Mapping)
        else {name: getattr(obj, name) for name in dir(obj) if not name.startswith("_")}
    )
    found: dict[str, Any] = {}
    old: dict[str, tuple[str, Any]] = {}
    prefix = f"{namespace}_" if namespace else None
    for key, value in items.items():
        if prefix is not None:
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].lower()
            if name not in SETTINGS and name not in CELERY_NAMES and key in OLD_NAMES:
                old[OLD_NAMES[key]] = (key, value)
                continue
        elif key.islower():
            if callable(value) and not isinstance(value, type) and key not in SETTINGS:
                continue  # helper functions in a celeryconfig module are not settings
            if isinstance(value, type(os)):
                continue  # modules imported by a celeryconfig module
            name = key
        elif key in OLD_NAMES:
            old[OLD_NAMES[key]] = (key, value)
            continue
        else:
            continue  # other upper-case names: constants of the module, not settings
        found[name] = check(name, value, warn=False)  # the settings it goes into warn
    for name, (key, value) in old.items():
        warnings.warn(
            f"setting {key!r} is Celery's old name of {name!r}: read as {name!r}; rename it"
            + (f" ({name!r} is given as well and wins)" if name in found else ""),
            ConfigurationWarning,
            stacklevel=3,
        )
        if name not in found:
            found[name] = check(name, value, warn=False)
    return found


def _import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if "." in path and not attr:
            # "package.module.Object": try the last part as an attribute.
            module_name, _, attr = path.rpartition(".")
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                raise ConfigurationError(f"cannot import configuration {path!r}: {exc}") from exc
        else:
            raise ConfigurationError(f"cannot import configuration {path!r}: {exc}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None

"""What an ``sqs://`` URL and its transport options say: credentials, endpoint, region, queue names.

The names follow kombu's SQS transport, so a Celery app's ``broker_transport_options`` mean the same
here: ``region``, ``queue_name_prefix``, ``predefined_queues``, ``visibility_timeout`` (only given to
CreateQueue), ``wait_time_seconds``, ``is_secure``, ``sqs-creation-attributes``, ``queue_tags``,
``client-config``, ``sqs_base64_encoding``. kombu has no ``endpoint_url`` option and builds the endpoint
from the URL's host; both work here, the option first.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from celeriac.exceptions import ConfigurationError

__all__ = ["Credentials", "Settings", "queue_name"]

#: kombu's mangling: "." becomes "-", other punctuation but "-" and "_" becomes "_".
_MANGLE = str.maketrans({c: ("-" if c == "." else "_") for c in string.punctuation if c not in "-_"})
_FIFO = ".fifo"
#: SQS's own bounds.
MAX_NAME = 80
MAX_DELAY = 900
MAX_VISIBILITY = 43200


def queue_name(name: str, prefix: str = "") -> str:
    """The SQS name of queue ``name`` as kombu makes it: prefix first, punctuation mangled, ``.fifo`` kept.

    Raises:
        ConfigurationError: the name is longer than SQS allows (80 characters).
    """
    full = prefix + name
    if full.endswith(_FIFO):
        mangled = full[: -len(_FIFO)].translate(_MANGLE) + _FIFO
    else:
        mangled = full.translate(_MANGLE)
    if len(mangled) > MAX_NAME:
        raise ConfigurationError(
            f"SQS queue name {mangled!r} (queue {name!r}) is {len(mangled)} characters; SQS allows "
            f"{MAX_NAME}: shorten the queue name or queue_name_prefix"
        )
    return mangled


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key and secret, or neither (boto's default chain: environment, profile, role)."""

    key: str | None = None
    secret: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The broker's settings, read once from the URL and transport options."""

    credentials: Credentials
    region: str
    endpoint_url: str | None
    use_ssl: bool | None
    prefix: str
    predefined: dict[str, dict[str, Any]]
    create_visibility: int
    wait_time_seconds: int
    lease_seconds: float
    dead_letter_queue: str
    max_message_bytes: int
    base64: bool
    creation_attributes: dict[str, str]
    tags: dict[str, str]
    broadcast_url: str | None = None
    client_config: dict[str, Any] = field(default_factory=dict)

    @property
    def lease_visibility(self) -> int:
        """The visibility timeout a receive and a heartbeat ask for: the lease, in whole seconds."""
        return min(max(math.ceil(self.lease_seconds), 1), MAX_VISIBILITY)

    @classmethod
    def read(cls, url: str, options: dict[str, Any]) -> Settings:
        """Read ``url`` (``sqs://[KEY:SECRET@][host[:port]]``) and the transport ``options``.

        Options of other transports (an app's shared ``broker_transport_options``) are ignored.

        Raises:
            ConfigurationError: an option is of the wrong kind or not supported.
        """
        if options.get("sts_role_arn"):
            raise ConfigurationError("sts_role_arn is not supported by celeriac's SQS broker yet")
        parts = urlsplit(url)
        if parts.scheme != "sqs":
            raise ConfigurationError(f"an SQS broker URL starts with sqs://, not {url!r}")
        key = unquote(parts.username) if parts.username else None
        secret = unquote(parts.password) if parts.password else None
        if (key is None) != (secret is None):
            raise ConfigurationError("an sqs:// URL names both an access key and its secret, or neither")
        use_ssl = options.get("is_secure")
        endpoint = options.get("endpoint_url")
        if endpoint is None and parts.hostname:
            # kombu's rule: the URL's host is the endpoint, https only when is_secure says so.
            scheme = "https" if use_ssl else "http"
            endpoint = f"{scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        predefined = options.get("predefined_queues") or {}
        if not isinstance(predefined, dict):
            raise ConfigurationError("predefined_queues must be a dict of queue name to {'url': ...}")
        for name, spec in predefined.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
                raise ConfigurationError(f"predefined_queues[{name!r}] needs a 'url'")
            if name.endswith(_FIFO) != spec["url"].endswith(_FIFO):
                raise ConfigurationError(
                    f"predefined_queues[{name!r}]: a FIFO queue's name and URL both end in .fifo"
                )
        return cls(
            credentials=Credentials(key, secret),
            region=str(options.get("region") or _default_region()),
            endpoint_url=str(endpoint) if endpoint else None,
            use_ssl=None if use_ssl is None else bool(use_ssl),
            prefix=str(options.get("queue_name_prefix") or ""),
            predefined=predefined,
            create_visibility=int(_number(options, "visibility_timeout", 1800)),
            wait_time_seconds=int(min(max(_number(options, "wait_time_seconds", 10), 0), 20)),
            lease_seconds=_number(options, "lease_seconds", 30.0),
            dead_letter_queue=str(options.get("dead_letter_queue") or "celeriac-dead-letters"),
            max_message_bytes=int(_number(options, "max_message_bytes", 262_144)),
            base64=bool(options.get("sqs_base64_encoding", True)),
            creation_attributes={
                str(k): str(v) for k, v in (options.get("sqs-creation-attributes") or {}).items()
            },
            tags={str(k): str(v) for k, v in (options.get("queue_tags") or {}).items()},
            client_config=dict(options.get("client-config") or {}),
            broadcast_url=str(options["broadcast_url"]) if options.get("broadcast_url") else None,
        )


def _number(options: dict[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"SQS transport option {name} must be a number of 0 or more, not {value!r}")
    return float(value)


def _default_region() -> str:
    # kombu's order: the option, then boto's own configuration (AWS_DEFAULT_REGION, profile), then us-east-1.
    try:
        from botocore.session import get_session
    except ImportError:
        return "us-east-1"
    return str(get_session().get_config_variable("region") or "us-east-1")

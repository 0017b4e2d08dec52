"""Remote control on the wire: Celery's pidbox commands and replies, read and written.

A command is broadcast to the fanout exchange ``celery.pidbox``; its JSON body names the ``method``, its
``arguments``, the nodes it is for (``destination``, or ``pattern`` with a ``matcher``) and, when the
sender wants answers, a ``ticket`` and a ``reply_to`` (``{"exchange": "reply.celery.pidbox",
"routing_key": <key>}``). Its headers carry the sender's Lamport ``clock`` and ``expires`` (unix time,
0 for never). Each node that runs it answers ``{<node name>: <value>}`` on ``reply.celery.pidbox`` with
the sender's routing key and the headers ``ticket`` and ``clock``: the layout of Celery's workers and
clients, so either end may be Celery.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import DecodeError, MessageTooLarge
from celeriac.protocol.message import Message
from celeriac.protocol.serializers import dumps, loads

__all__ = [
    "COMMANDS",
    "REPLIES",
    "Command",
    "command_message",
    "read_command",
    "read_reply",
    "reply_message",
]

#: The fanout exchange commands are broadcast on (Celery's ``control_exchange`` "celery" + ".pidbox").
COMMANDS = "celery.pidbox"
#: The direct exchange replies travel on, routed by the sender's key.
REPLIES = "reply.celery.pidbox"


@dataclass(frozen=True, slots=True)
class Command:
    """One remote-control command as a node receives it."""

    method: str
    arguments: dict[str, Any]
    destination: list[str] | None = None
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_exchange: str = REPLIES
    reply_key: str | None = None
    clock: int = 0
    expires: float = 0.0

    @property
    def wants_reply(self) -> bool:
        """Whether the sender waits for answers (a call), rather than only telling (a cast)."""
        return self.reply_key is not None

    def is_for(self, node: str) -> bool:
        """Whether ``node`` is to run it: named in ``destination``, matched by ``pattern``, or any
        node when neither is given (Celery's rule)."""
        if self.destination:
            return node in self.destination
        if self.pattern and self.matcher:
            if self.matcher == "pcre":
                return re.match(self.pattern, node) is not None
            return fnmatch.fnmatchcase(node, self.pattern)
        return True

    def expired(self, now: float) -> bool:
        """Whether the sender has stopped waiting: ``expires`` is set and past."""
        return bool(self.expires) and now > self.expires


def command_message(
    method: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: Collection[str] | None = None,
    pattern: str | None = None,
    matcher: str | None = None,
    ticket: str | None = None,
    reply_key: str | None = None,
    clock: int = 0,
    expires: float = 0.0,
) -> Message:
    """The message that broadcasts ``method``; with ``ticket`` and ``reply_key``, a call awaiting
    replies on ``REPLIES`` with that routing key."""
    body: dict[str, Any] = {
        "method": method,
        "arguments": dict(arguments or {}),
        "destination": list(destination) if destination else None,
        "pattern": pattern,
        "matcher": matcher,
    }
    if ticket is not None and reply_key is not None:
        body["ticket"] = ticket
        body["reply_to"] = {"exchange": REPLIES, "routing_key": reply_key}
    content_type, data = dumps(body, "json")
    return Message(
        body=data,
        headers={"clock": clock, "expires": expires},
        content_type=content_type,
        properties={"delivery_mode": 1},
    )


def read_command(message: Message, accept: Collection[str], max_bytes: int | None = None) -> Command:
    """The command a broadcast carries.

    Raises:
        DecodeError: the body is not a command (not a mapping, no method name, bad fields), its
            content type is not accepted, or it is over ``max_bytes`` (then it is not decoded).
    """
    _check_size(message, "command", max_bytes)
    try:
        body = loads(message.body, message.content_type, accept)
    except DecodeError:
        raise
    except Exception as exc:  # ContentDisallowed, ConfigurationError
        raise DecodeError(str(exc)) from exc
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise DecodeError(f"not a remote-control command: {str(body)[:200]!r}")
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise DecodeError(f"command {body['method']!r}: arguments are not a mapping")
    destination = body.get("destination")
    if isinstance(destination, str):
        destination = [destination]
    if destination is not None and not (
        isinstance(destination, list) and all(isinstance(d, str) for d in destination)
    ):
        raise DecodeError(f"command {body['method']!r}: destination is not a list of node names")
    reply_to = body.get("reply_to")
    ticket = body.get("ticket")
    reply_exchange, reply_key = REPLIES, None
    if isinstance(reply_to, dict) and isinstance(reply_to.get("routing_key"), str) and ticket:
        reply_exchange = str(reply_to.get("exchange") or REPLIES)
        reply_key = reply_to["routing_key"]
    headers = message.headers or {}
    return Command(
        method=body["method"],
        arguments=arguments,
        destination=destination or None,
        pattern=_text(body.get("pattern")),
        matcher=_text(body.get("matcher")),
        ticket=str(ticket) if reply_key is not None else None,
        reply_exchange=reply_exchange,
        reply_key=reply_key,
        clock=_number(headers.get("clock"), int),
        expires=_number(headers.get("expires"), float),
    )


def reply_message(node: str, value: Any, *, ticket: str, clock: int) -> Message:
    """A node's answer to the call ``ticket``: ``{node: value}``.

    Raises:
        TypeError: ``value`` cannot be written as JSON.
    """
    content_type, data = dumps({node: value}, "json")
    return Message(
        body=data,
        headers={"ticket": ticket, "clock": clock},
        content_type=content_type,
        properties={"delivery_mode": 1},
    )


def read_reply(
    message: Message, accept: Collection[str], max_bytes: int | None = None
) -> tuple[str | None, dict[str, Any]]:
    """The ticket a reply answers and its ``{node: value}`` body.

    Raises:
        DecodeError: the body is not a mapping, cannot be read, or is over ``max_bytes``.
    """
    _check_size(message, "reply", max_bytes)
    try:
        body = loads(message.body, message.content_type, accept)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(str(exc)) from exc
    if not isinstance(body, dict):
        raise DecodeError(f"not a remote-control reply: {str(body)[:200]!r}")
    ticket = (message.headers or {}).get("ticket")
    return (str(ticket) if ticket is not None else None), body


def _check_size(message: Message, what: str, max_bytes: int | None) -> None:
    size = len(message.body)
    if max_bytes is not None and size > max_bytes:
        raise MessageTooLarge(
            f"remote-control {what} body is {size} bytes, over the task_message_max_bytes limit of "
            f"{max_bytes} bytes"
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value or 0)
    except (TypeError, ValueError):
        return kind(0)

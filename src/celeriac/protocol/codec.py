"""Task messages: a ``TaskCall`` encoded as Celery's protocol v2, and v2 or v1 messages decoded back.

Encoding writes exactly the headers, properties and body a Celery 5.7 client sends. Decoding checks
every part it uses and raises ``DecodeError`` with a reason a user can act on, so a worker can reject a
bad message instead of failing on it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import Any

from celeriac.exceptions import DecodeError, MessageTooLarge
from celeriac.protocol import _checks as check
from celeriac.protocol import compression as compressors
from celeriac.protocol import serializers
from celeriac.protocol.message import Message, TaskCall

__all__ = ["body_of", "decode_task", "encode_task", "safe_repr"]

#: The longest ``argsrepr``/``kwargsrepr`` written, as Celery's ``argsrepr_maxsize``.
REPR_MAX = 1024

# Added by transports and compressors, not by the sender: a re-sent call must not inherit them.
_TRANSPORT_HEADERS = frozenset({"compression", "redelivered"})


def encode_task(
    call: TaskCall,
    *,
    serializer: str = "json",
    compression: str | None = None,
    max_bytes: int | None = None,
) -> Message:
    """Encode ``call`` as a protocol v2 message, the way a Celery 5.7 client sends it.

    Custom keys in ``call.headers`` are kept; where they name a header this function writes, the
    ``call``'s own field wins. As in Celery, ``root_id`` defaults to the task's own id, ``origin`` to
    ``gen<pid>@<host>``, and ``argsrepr``/``kwargsrepr`` to a truncated, never-failing repr.

    Raises:
        MessageTooLarge: the encoded (and compressed) body is over ``max_bytes``.
        TypeError: the arguments cannot be written by ``serializer``.
        ConfigurationError: the serializer or compression is unknown.
    """
    embed = {"callbacks": call.callbacks, "errbacks": call.errbacks, "chain": call.chain, "chord": call.chord}
    content_type, body = serializers.dumps([call.args, call.kwargs, embed], serializer)
    extra = call.headers
    headers: dict[str, Any] = {
        "lang": "py",
        "task": call.name,
        "id": call.id,
        "shadow": call.shadow,
        "eta": _iso(call.eta),
        "expires": _iso(call.expires),
        "group": call.group_id,
        "group_index": call.group_index,
        "retries": call.retries,
        "timelimit": [call.time_limit, call.soft_time_limit],
        "root_id": call.root_id if call.root_id is not None else call.id,
        "parent_id": call.parent_id,
        "argsrepr": call.argsrepr if call.argsrepr is not None else safe_repr(tuple(call.args)),
        "kwargsrepr": call.kwargsrepr if call.kwargsrepr is not None else safe_repr(call.kwargs),
        "origin": call.origin if call.origin is not None else _anonymous_origin(),
        "ignore_result": call.ignore_result,
        "replaced_task_nesting": extra.get("replaced_task_nesting", 0),
        "stamped_headers": extra.get("stamped_headers"),
        "stamps": extra.get("stamps", {}),
    }
    for key, value in extra.items():
        if key not in headers and key not in _TRANSPORT_HEADERS:
            headers[key] = value
    if compression is not None:
        headers["compression"], body = compressors.compress(body, compression)
    if max_bytes is not None and len(body) > max_bytes:
        raise MessageTooLarge(
            f"task {call.name} message body is {len(body)} bytes, over the task_message_max_bytes "
            f"limit of {max_bytes} bytes"
        )
    properties: dict[str, Any] = {"correlation_id": call.id, "delivery_mode": 2}
    if call.reply_to is not None:
        properties["reply_to"] = call.reply_to
    if call.priority is not None:
        properties["priority"] = call.priority
    # Unlike Celery, no ``expiration`` (an AMQP TTL) for ``expires``: RabbitMQ would drop a message that
    # expires in its queue without a word, and its result would stay PENDING forever. A worker that reads
    # it records REVOKED ("expired") instead, so ``get()`` ends.
    return Message(
        body=body,
        headers=headers,
        content_type=content_type,
        content_encoding=serializers.content_encoding_of(serializer),
        properties=properties,
    )


def decode_task(
    message: Message,
    *,
    accept: Collection[str] = ("json",),
    max_bytes: int | None = None,
) -> TaskCall:
    """Decode and validate a task message of protocol v2 (a ``task`` header) or v1 (all in the body).

    ``eta`` and ``expires`` come back as aware UTC datetimes. Every header of the message, custom ones
    included, is kept in ``TaskCall.headers``.

    Raises:
        ContentDisallowed: the body's content type is not in ``accept``.
        MessageTooLarge: the body is over ``max_bytes``, before or after decompression.
        DecodeError: anything else about the message is malformed; ``reason`` says what.
    """
    headers = message.headers
    if not isinstance(headers, dict):
        raise DecodeError(f"message headers must be a mapping, got {check.kind(headers)}")
    properties = message.properties
    if not isinstance(properties, dict):
        raise DecodeError(f"message properties must be a mapping, got {check.kind(properties)}")
    payload = _payload(message, headers, accept, max_bytes)
    call = _from_v2(headers, payload) if "task" in headers else _from_v1(payload)
    call.reply_to = check.text(properties.get("reply_to"), "reply_to property")
    call.priority = check.priority(properties.get("priority"))
    call.headers = dict(headers)
    return call


def body_of(message: Message) -> Any:
    """The body of a message this process encoded, decoded again (decompressed, deserialized with its
    own content type): ``[args, kwargs, embed]`` for protocol v2."""
    body = bytes(message.body)
    compression = message.headers.get("compression")
    if isinstance(compression, str):
        body = compressors.decompress(body, compression, None)
    return serializers.loads(body, message.content_type, (message.content_type,))


def _payload(
    message: Message, headers: dict[str, Any], accept: Collection[str], max_bytes: int | None
) -> Any:
    body = message.body
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise DecodeError(f"message body must be bytes, got {check.kind(body)}")
    if not body:
        raise DecodeError("message body is empty")
    if max_bytes is not None and len(body) > max_bytes:
        raise MessageTooLarge(
            f"message body is {len(body)} bytes, over the task_message_max_bytes limit of {max_bytes} bytes"
        )
    compression = headers.get("compression")
    if compression is not None:
        if not isinstance(compression, str):
            raise DecodeError(
                f"header 'compression' must be a MIME type string, got {check.kind(compression)}"
            )
        body = compressors.decompress(bytes(body), compression, max_bytes)
    content_type = message.content_type
    if not isinstance(content_type, str) or not content_type.strip():
        raise DecodeError("message declares no content type, so its body cannot be decoded")
    return serializers.loads(bytes(body), content_type, accept)


def _from_v2(headers: dict[str, Any], payload: Any) -> TaskCall:
    if not isinstance(payload, (list, tuple)):
        raise DecodeError(f"protocol v2 body must be a list [args, kwargs, embed], got {check.kind(payload)}")
    if len(payload) == 2:
        raise DecodeError(
            "protocol v2 body is [args, kwargs] without the third item, embed; it must be "
            '[args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
        )
    if len(payload) != 3:
        raise DecodeError(f"protocol v2 body must have 3 items [args, kwargs, embed], got {len(payload)}")
    args, kwargs, embed = payload
    if not isinstance(embed, dict):
        raise DecodeError(f"embed (third body item) must be a mapping, got {check.kind(embed)}")
    check.text(headers.get("lang"), "header 'lang'")
    check.count(headers.get("replaced_task_nesting"), "header 'replaced_task_nesting'")
    check.stamps(headers.get("stamped_headers"), headers.get("stamps"))
    hard, soft = check.timelimit(headers.get("timelimit"), "header 'timelimit'")
    return TaskCall(
        id=check.identifier(headers.get("id"), "task id (header 'id')"),
        name=check.task_name(headers.get("task"), "task name (header 'task')"),
        args=check.args(args),
        kwargs=check.kwargs(kwargs),
        callbacks=check.signatures(embed.get("callbacks"), "embed 'callbacks'"),
        errbacks=check.signatures(embed.get("errbacks"), "embed 'errbacks'"),
        chain=check.signatures(embed.get("chain"), "embed 'chain'"),
        chord=check.signature(embed.get("chord"), "embed 'chord'"),
        eta=check.when(headers.get("eta"), "header 'eta'"),
        expires=check.when(headers.get("expires"), "header 'expires'"),
        retries=check.count(headers.get("retries"), "header 'retries'"),
        time_limit=hard,
        soft_time_limit=soft,
        root_id=check.optional_identifier(headers.get("root_id"), "header 'root_id'"),
        parent_id=check.optional_identifier(headers.get("parent_id"), "header 'parent_id'"),
        group_id=check.optional_identifier(headers.get("group"), "header 'group'"),
        group_index=check.optional_count(headers.get("group_index"), "header 'group_index'"),
        origin=check.text(headers.get("origin"), "header 'origin'"),
        shadow=check.text(headers.get("shadow"), "header 'shadow'"),
        ignore_result=check.optional_flag(headers.get("ignore_result"), "header 'ignore_result'"),
        argsrepr=check.text(headers.get("argsrepr"), "header 'argsrepr'", lines=True),
        kwargsrepr=check.text(headers.get("kwargsrepr"), "header 'kwargsrepr'", lines=True),
    )


def _from_v1(payload: Any) -> TaskCall:
    if isinstance(payload, (list, tuple)):
        raise DecodeError(
            "message has no 'task' header, but its body is a list: protocol v2 needs the headers "
            "'task' and 'id'; protocol v1 needs a body mapping with 'task' and 'id'"
        )
    if not isinstance(payload, dict):
        raise DecodeError(f"protocol v1 body must be a mapping, got {check.kind(payload)}")
    utc = payload.get("utc", True)
    if not isinstance(utc, bool):
        raise DecodeError(f"body 'utc' must be true or false, got {check.kind(utc)}")
    hard, soft = check.timelimit(payload.get("timelimit"), "body 'timelimit'")
    return TaskCall(
        id=check.identifier(payload.get("id"), "task id (body 'id')"),
        name=check.task_name(payload.get("task"), "task name (body 'task')"),
        args=check.args(payload.get("args", [])),
        kwargs=check.kwargs(payload.get("kwargs", {})),
        callbacks=check.signatures(payload.get("callbacks"), "body 'callbacks'"),
        errbacks=check.signatures(payload.get("errbacks"), "body 'errbacks'"),
        chord=check.signature(payload.get("chord"), "body 'chord'"),
        eta=check.when(payload.get("eta"), "body 'eta'", naive_is_local=not utc),
        expires=check.when(payload.get("expires"), "body 'expires'", naive_is_local=not utc),
        retries=check.count(payload.get("retries"), "body 'retries'"),
        time_limit=hard,
        soft_time_limit=soft,
        group_id=check.optional_identifier(payload.get("taskset"), "body 'taskset'"),
    )


def _anonymous_origin() -> str:
    # Celery's name for a sender that is not a worker; the pid is read each time to stay right after fork.
    return f"gen{os.getpid()}@{_HOSTNAME}"


_HOSTNAME = socket.gethostname()


def _iso(moment: datetime | None) -> str | None:
    # An aware moment keeps its offset (a sender in Europe/Paris writes +01:00, as Celery's does); a
    # naive one is UTC, as Celery's worker reads it.
    if moment is None:
        return None
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).isoformat()


def safe_repr(value: Any, maxlen: int = REPR_MAX) -> str:
    """``repr(value)`` cut to at most ``maxlen`` characters, ending in ``...`` when cut.

    Never raises, and stops walking large or deep containers as soon as ``maxlen`` is reached, so the
    cost is bounded by ``maxlen``, not by the size of ``value``.
    """
    pieces: list[str] = []
    size = 0
    for piece in _repr_pieces(value, maxlen, set(), 0):
        pieces.append(piece)
        size += len(piece)
        if size > maxlen:
            break
    text = "".join(pieces)
    return text if len(text) <= maxlen else text[: max(maxlen - 3, 0)] + "..."


_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    dict: ("{", "}"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
}


def _repr_pieces(value: Any, budget: int, seen: set[int], depth: int) -> Iterator[str]:
    brackets = _BRACKETS.get(type(value))
    if brackets is None or not value:
        if isinstance(value, (str, bytes)) and len(value) > budget:
            value = value[:budget]  # the repr is cut anyway; don't build a huge one first
        try:
            yield repr(value)
        except Exception:
            yield f"<unrepresentable {type(value).__name__}>"
        return
    opening, closing = brackets
    if id(value) in seen or depth > 50:
        yield f"{opening}...{closing}"
        return
    seen.add(id(value))
    yield opening
    for index, item in enumerate(value.items() if isinstance(value, dict) else value):
        if index:
            yield ", "
        if isinstance(value, dict):
            yield from _repr_pieces(item[0], budget, seen, depth + 1)
            yield ": "
            item = item[1]
        yield from _repr_pieces(item, budget, seen, depth + 1)
    if isinstance(value, tuple) and len(value) == 1:
        yield ","
    yield closing
    seen.discard(id(value))

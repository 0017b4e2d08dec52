"""kombu's JSON envelope: how Redis and other virtual transports store a whole message as one string.

The shape, as kombu writes it::

    {"body": "<base64>", "content-encoding": "utf-8", "content-type": "application/json",
     "headers": {...}, "properties": {"correlation_id": ..., "reply_to": ..., "delivery_mode": 2,
     "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
     "body_encoding": "base64", "delivery_tag": "<uuid4>"}}

The envelope itself is JSON with kombu's type markers, like kombu's own ``dumps``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from celeriac.exceptions import DecodeError
from celeriac.protocol._checks import kind
from celeriac.protocol.message import Message
from celeriac.protocol.serializers import json_dumps, json_loads

__all__ = ["from_envelope", "readable_ids", "to_envelope"]

#: How the JSON of an envelope begins, up to its body's text (an empty body's JSON then goes on ``",``).
_BODY_OPEN = b'{"body":"'


def to_envelope(message: Message, *, routing_key: str, exchange: str = "") -> bytes:
    """Wrap ``message`` in kombu's envelope, ready to store on a virtual transport.

    The body is base64-encoded; ``delivery_info`` names the exchange and routing key; ``priority``
    defaults to 0, ``delivery_mode`` to 2 (persistent); every call gets a fresh ``delivery_tag``.

    Raises:
        TypeError: a header or property is not JSON-serializable.
    """
    properties = dict(message.properties)
    properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    if properties.get("priority") is None:
        properties["priority"] = 0
    properties.setdefault("delivery_mode", 2)
    properties["body_encoding"] = "base64"
    # A tag identifies one delivery; reusing an old one (a retry of a delivered message) would make
    # two pending deliveries share a tag in the transport's unacked bookkeeping.
    properties["delivery_tag"] = str(uuid.uuid4())
    envelope = {
        "body": "",
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": properties,
    }
    try:
        text = json_dumps(envelope)
    except (ValueError, RecursionError) as exc:
        raise TypeError(f"cannot write message envelope: {exc}") from exc
    # The body goes in after: base64 holds nothing JSON escapes, so it need not pass through the
    # encoder, which would scan (and copy twice) what is most of a large message.
    return b"".join((_BODY_OPEN, base64.b64encode(message.body), memoryview(text)[len(_BODY_OPEN) :]))


def from_envelope(data: bytes) -> Message:
    """Read a message from kombu's envelope.

    The body may be base64 (``properties.body_encoding == "base64"``) or, as some hand-written
    producers send it, a plain string taken as UTF-8. ``body_encoding`` is dropped from the returned
    properties because the body is decoded by then.

    Raises:
        DecodeError: the envelope is not a JSON object, or a part of it is missing or of the wrong type.
    """
    try:
        envelope = json_loads(data)
    except DecodeError as exc:
        raise DecodeError(f"message envelope is not valid: {exc.reason}") from None
    if not isinstance(envelope, dict):
        raise DecodeError(f"message envelope must be a JSON object, got {kind(envelope)}")
    headers = _mapping(envelope, "headers")
    properties = _mapping(envelope, "properties")
    body = _body(envelope, properties.pop("body_encoding", None))
    return Message(
        body=body,
        headers=headers,
        content_type=_text(envelope, "content-type", "application/json"),
        content_encoding=_text(envelope, "content-encoding", "utf-8"),
        properties=properties,
    )


def readable_ids(data: bytes) -> tuple[str | None, str]:
    """The task id and the reply queue of an envelope ``from_envelope`` cannot read, as far as they
    can be read: ``headers.id``, else ``properties.correlation_id``; ``properties.reply_to``.

    So a message dead-lettered for a broken body (not base64, say) still fails its result, and a
    caller waiting on that id gets the reason instead of waiting forever. ``(None, "")`` when the
    envelope is not a JSON object or names no id.
    """
    try:
        envelope = json_loads(data)
    except DecodeError:
        return None, ""
    if not isinstance(envelope, dict):
        return None, ""
    headers, properties = envelope.get("headers"), envelope.get("properties")
    headers = headers if isinstance(headers, dict) else {}
    properties = properties if isinstance(properties, dict) else {}
    task_id = next((v for v in (headers.get("id"), properties.get("correlation_id")) if _is_id(v)), None)
    reply_to = properties.get("reply_to")
    return task_id, reply_to if isinstance(reply_to, str) else ""


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255


def _body(envelope: dict[str, Any], encoding: Any) -> bytes:
    if "body" not in envelope:
        raise DecodeError("message envelope has no body")
    body = envelope["body"]
    if not isinstance(body, str):
        raise DecodeError(f"message envelope body must be a string, got {kind(body)}")
    if encoding is None:
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("message envelope body holds text that cannot be UTF-8") from None
    if encoding != "base64":
        raise DecodeError(f"unsupported body_encoding {encoding!r} in message envelope (expected 'base64')")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("message envelope body is not valid base64") from None


def _mapping(envelope: dict[str, Any], key: str) -> dict[str, Any]:
    value = envelope.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"message envelope {key} must be a JSON object, got {kind(value)}")
    return value


def _text(envelope: dict[str, Any], key: str, default: str) -> str:
    value = envelope.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise DecodeError(f"message envelope {key} must be a string, got {kind(value)}")
    return value

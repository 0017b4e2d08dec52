"""A message as SQS carries it: kombu's envelope in the body, celeriac's bookkeeping in attributes.

The body is base64 of the envelope's JSON (kombu's ``sqs_base64_encoding``, on by default), or the
JSON itself. On receipt a body that is strict base64 (it re-encodes to the same text) is decoded;
any other body is taken as the text it is, as kombu does, so plain-JSON producers are read too.

Message attributes (never seen by kombu, which asks for none):

* ``celeriac.not-before``: the unix time a message delayed for more than SQS's 15 minutes is due;
  each receipt before then sends it on with a new delay (a hop) instead of handing it out.
* ``celeriac.deliveries``: deliveries before this copy was sent, for a message given back by
  ``release`` (sent again so SQS's own count starts afresh); added to ``ApproximateReceiveCount``.
* On the dead-letter queue: ``celeriac.queue``, ``celeriac.reason``, ``celeriac.time``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

__all__ = ["DELIVERIES", "NOT_BEFORE", "attribute", "decode_body", "encode_body", "number", "text_size"]

NOT_BEFORE = "celeriac.not-before"
DELIVERIES = "celeriac.deliveries"
QUEUE = "celeriac.queue"
REASON = "celeriac.reason"
TIME = "celeriac.time"

_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def encode_body(payload: bytes, *, base64_encoded: bool = True) -> str:
    """The SQS body for a stored envelope; without base64 the envelope must be UTF-8 (JSON is)."""
    if base64_encoded:
        return base64.b64encode(payload).decode("ascii")
    return payload.decode("utf-8")


def decode_body(body: str) -> bytes:
    """The stored bytes of an SQS body: base64-decoded when it is strict base64, else its UTF-8."""
    if body and len(body) % 4 == 0 and _BASE64.match(body):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            pass
    return body.encode("utf-8")


def attribute(value: str | float) -> dict[str, str]:
    """An SQS message attribute: a Number for numbers, else a String."""
    if isinstance(value, str):
        return {"DataType": "String", "StringValue": value}
    return {"DataType": "Number", "StringValue": repr(float(value))}


def number(attributes: dict[str, Any], name: str) -> float | None:
    """The numeric value of message attribute ``name``, None when absent or unreadable."""
    found = attributes.get(name)
    if not isinstance(found, dict):
        return None
    try:
        return float(found.get("StringValue", ""))
    except ValueError:
        return None


def text(attributes: dict[str, Any], name: str) -> str | None:
    """The string value of message attribute ``name``, None when absent."""
    found = attributes.get(name)
    value = found.get("StringValue") if isinstance(found, dict) else None
    return value if isinstance(value, str) else None


def text_size(body: str, attributes: dict[str, dict[str, str]]) -> int:
    """The size SQS counts against its message limit: the body's and every attribute's bytes."""
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
    return size

"""AMQP 0-9-1 field tables and basic properties, read and written fast, for our own connections: the
consuming link (``_amqp_link``) reads them, the publisher (``_amqp_publisher``) writes them.

Values come out as pamqp (what aiormq hands out) decodes them, so code written against aiormq's
deliveries reads ours unchanged: ``S`` a ``str`` (``bytes`` when it is not UTF-8), every integer kind an
``int``, ``t`` a ``bool``, ``f``/``d`` a ``float``, ``D`` a ``Decimal``, ``T`` an aware UTC ``datetime``
(a value past 2106 is read as milliseconds), ``x`` ``bytes``, ``A`` a ``list``, ``F`` a ``dict``, ``V``
``None``. Letters as RabbitMQ reads and writes them (its "AMQP 0-9-1 errata": ``I`` is a signed and
``i`` an unsigned 32-bit integer, ``s`` signed and ``u`` unsigned 16, ``l`` signed 64); pamqp's ``L``
(signed 64) and ``NUL`` (void) are read too.

Short strings (keys, property values) that are not UTF-8 are decoded with replacement characters:
one bad message must not end the connection it arrives on, again at every redelivery.

Every reader takes the whole ``bytes`` buffer and an offset, so a frame is never copied to be parsed.

Writing picks the letters RabbitMQ, pamqp and py-amqp (Celery's client) all read: ``str`` is ``S`` (UTF-8),
``bytes`` ``x``, ``bool`` ``t``, an ``int`` the smallest signed kind that holds it (``b``, ``s``, ``I``,
``l``: never the unsigned letters, which old clients misread), ``float`` ``d`` (pamqp's ``f`` would lose
precision), ``Decimal`` ``D``, ``datetime`` ``T`` (whole seconds; naive means UTC), ``dict`` ``F``,
``list``/``tuple`` ``A``, ``None`` ``V``. Anything else is a ``TypeError``, and an integer past 64 bits or a
string past its length a ``ValueError``, naming the key or property; nothing is written then.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["PROPERTY_NAMES", "Properties", "read_properties", "read_table", "write_properties", "write_table"]

#: The basic properties in wire order; the first is flag bit 15, the last (``cluster_id``) bit 2.
PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)

_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U16 = struct.Struct(">H").unpack_from
_I16 = struct.Struct(">h").unpack_from
_I8 = struct.Struct(">b").unpack_from
_I64 = struct.Struct(">q").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from
_DECIMAL = struct.Struct(">Bi").unpack_from
_TEN = Decimal(10)
_MAX_SECONDS = 0xFFFFFFFF


class Properties:
    """The 14 basic properties of a message, under pamqp's names (``message_type`` is the wire's
    ``type``); the ones a message does not carry are None."""

    __slots__ = PROPERTY_NAMES

    def __init__(
        self,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery_mode: int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        message_type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.message_type = message_type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Properties):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in PROPERTY_NAMES)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        present = (
            f"{name}={getattr(self, name)!r}" for name in PROPERTY_NAMES if getattr(self, name) is not None
        )
        return f"Properties({', '.join(present)})"


def read_table(data: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """The field table whose 32-bit length is at ``offset``, and the offset just past it.

    Raises:
        ValueError: the table is malformed (an unknown type letter, or entries that overrun its length
            or the buffer).
    """
    try:
        (size,) = _U32(data, offset)
        end = offset + 4 + size
        if end > len(data):
            raise ValueError(f"a field table of {size} bytes overruns its buffer")
        return _table(data, offset + 4, end), end
    except (IndexError, struct.error, OverflowError, OSError) as exc:
        raise ValueError(f"a malformed field table: {exc}") from exc


def read_properties(data: bytes, offset: int, flags: int) -> tuple[Properties, int]:
    """The properties ``flags`` (the first property-flags word) says are present, read from ``offset``
    (just past the flag words), and the offset just past them.

    Raises:
        ValueError: a property is malformed.
    """
    try:
        return _properties(data, offset, flags)
    except (IndexError, struct.error, OverflowError, OSError) as exc:
        raise ValueError(f"malformed message properties: {exc}") from exc


def _properties(data: bytes, p: int, flags: int) -> tuple[Properties, int]:
    # One branch per property in wire order, locals, then one constructor call: this runs for every
    # delivery, so no loop over names and no setattr.
    content_type = content_encoding = correlation_id = reply_to = expiration = None
    message_id = message_type = user_id = app_id = cluster_id = None
    headers: dict[str, Any] | None = None
    delivery_mode = priority = None
    timestamp = None
    if flags & 0x8000:
        k = data[p]
        p += k + 1
        content_type = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x4000:
        k = data[p]
        p += k + 1
        content_encoding = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x2000:
        (size,) = _U32(data, p)
        end = p + 4 + size
        if end > len(data):
            raise ValueError(f"a headers table of {size} bytes overruns its frame")
        headers = _table(data, p + 4, end)
        p = end
    if flags & 0x1000:
        delivery_mode = data[p]
        p += 1
    if flags & 0x0800:
        priority = data[p]
        p += 1
    if flags & 0x0400:
        k = data[p]
        p += k + 1
        correlation_id = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0200:
        k = data[p]
        p += k + 1
        reply_to = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0100:
        k = data[p]
        p += k + 1
        expiration = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0080:
        k = data[p]
        p += k + 1
        message_id = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0040:
        timestamp = _timestamp(_U64(data, p)[0])
        p += 8
    if flags & 0x0020:
        k = data[p]
        p += k + 1
        message_type = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0010:
        k = data[p]
        p += k + 1
        user_id = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0008:
        k = data[p]
        p += k + 1
        app_id = data[p - k : p].decode("utf-8", "replace")
    if flags & 0x0004:
        k = data[p]
        p += k + 1
        cluster_id = data[p - k : p].decode("utf-8", "replace")
    properties = Properties(
        content_type,
        content_encoding,
        headers,
        delivery_mode,
        priority,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        timestamp,
        message_type,
        user_id,
        app_id,
        cluster_id,
    )
    return properties, p


def _table(data: bytes, p: int, end: int) -> dict[str, Any]:
    """The entries of a table from ``p`` to ``end``; long strings and voids, most of what Celery sends,
    are read inline and the rest by ``_value``."""
    table: dict[str, Any] = {}
    while p < end:
        k = data[p]
        p += k + 1
        key = data[p - k : p].decode("utf-8", "replace")
        kind = data[p]
        if kind == 83:  # S
            (n,) = _U32(data, p + 1)
            p += n + 5
            raw = data[p - n : p]
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                table[key] = raw
        elif kind == 86:  # V
            table[key] = None
            p += 1
        else:
            table[key], p = _value(data, p + 1, kind)
    if p != end:
        raise ValueError("a field table's entries overrun its length")
    return table


def _array(data: bytes, p: int, end: int) -> list[Any]:
    items: list[Any] = []
    while p < end:
        value, p = _value(data, p + 1, data[p])
        items.append(value)
    if p != end:
        raise ValueError("a field array's values overrun its length")
    return items


def _value(data: bytes, p: int, kind: int) -> tuple[Any, int]:
    """The value of type letter ``kind`` at ``p``, and the offset just past it."""
    if kind == 83:  # S: long string
        (n,) = _U32(data, p)
        raw = data[p + 4 : p + 4 + n]
        try:
            return raw.decode(), p + 4 + n
        except UnicodeDecodeError:
            return raw, p + 4 + n
    if kind == 116:  # t: boolean
        return data[p] != 0, p + 1
    if kind == 98:  # b: signed 8
        return _I8(data, p)[0], p + 1
    if kind == 66:  # B: unsigned 8
        return data[p], p + 1
    if kind == 115:  # s: signed 16
        return _I16(data, p)[0], p + 2
    if kind == 117:  # u: unsigned 16
        return _U16(data, p)[0], p + 2
    if kind == 73:  # I: signed 32
        return _I32(data, p)[0], p + 4
    if kind == 105:  # i: unsigned 32
        return _U32(data, p)[0], p + 4
    if kind in (108, 76):  # l, L: signed 64
        return _I64(data, p)[0], p + 8
    if kind == 70:  # F: table
        (n,) = _U32(data, p)
        return _table(data, p + 4, p + 4 + n), p + 4 + n
    if kind == 65:  # A: array
        (n,) = _U32(data, p)
        return _array(data, p + 4, p + 4 + n), p + 4 + n
    if kind == 84:  # T: timestamp
        return _timestamp(_U64(data, p)[0]), p + 8
    if kind in (86, 0):  # V, NUL: void
        return None, p
    if kind == 100:  # d: double
        return _F64(data, p)[0], p + 8
    if kind == 102:  # f: float
        return _F32(data, p)[0], p + 4
    if kind == 68:  # D: decimal, a scale and a signed 32-bit unscaled value
        scale, unscaled = _DECIMAL(data, p)
        return Decimal(unscaled) * _TEN**-scale, p + 5
    if kind == 120:  # x: byte array
        (n,) = _U32(data, p)
        return bytes(data[p + 4 : p + 4 + n]), p + 4 + n
    raise ValueError(f"unknown field type {chr(kind)!r} in a field table")


def _timestamp(value: int) -> datetime:
    # pamqp's rule: seconds that would be past 2106 are taken for milliseconds.
    return datetime.fromtimestamp(value / 1000 if value > _MAX_SECONDS else value, tz=UTC)


# -- writing

_PUT_U32 = struct.Struct(">I").pack_into
_LETTER_U32 = struct.Struct(">BI").pack  # a type letter and a 32-bit length
_LETTER_I8 = struct.Struct(">Bb").pack
_LETTER_I16 = struct.Struct(">Bh").pack
_LETTER_I32 = struct.Struct(">Bi").pack
_LETTER_I64 = struct.Struct(">Bq").pack
_LETTER_F64 = struct.Struct(">Bd").pack
_LETTER_U64 = struct.Struct(">BQ").pack
_LETTER_DECIMAL = struct.Struct(">BBi").pack
_U64_BYTES = struct.Struct(">Q").pack
_TABLE_TYPES = "str, bytes, bool, int, float, Decimal, datetime, dict, list, tuple and None"
#: Each property's name and flag bit, in wire order (a loop here, unlike the reader: writing costs the
#: same few microseconds either way, next to a publish's tens).
_PROPERTY_FLAGS = tuple((name, 0x8000 >> n) for n, name in enumerate(PROPERTY_NAMES))
_SHORT_STRINGS = frozenset(PROPERTY_NAMES) - {"headers", "delivery_mode", "priority", "timestamp"}


class _Unwritable(Exception):
    """A value a field table cannot hold; ``path`` collects the keys and indexes that lead to it (the
    outermost first) as the error travels out of the nested tables."""

    def __init__(self, error: type[Exception], why: str) -> None:
        super().__init__(why)
        self.error, self.why = error, why
        self.path: list[str | int] = []

    def raised(self) -> Exception:
        where = ""
        for step in self.path:
            where += f"[{step}]" if isinstance(step, int) else f".{step}" if where else step
        return self.error(f"cannot write {where!r} into an AMQP field table: {self.why}")


def write_table(table: Mapping[str, Any]) -> bytes:
    """``table`` as an AMQP field table, its 32-bit length first (types: the module's docstring).

    Raises:
        TypeError: a key is not a ``str``, or a value of a type a table cannot hold (naming its key).
        ValueError: an integer past 64 bits, a key past 255 bytes, a ``datetime`` before 1970 or a
            ``Decimal`` AMQP cannot hold (naming its key).
    """
    out = bytearray()
    _put_table(table, out)
    return bytes(out)


def write_properties(properties: Properties) -> tuple[int, bytes]:
    """The property flags (the first flags word) and the property list of ``properties``.

    ``timestamp`` may be a ``datetime`` (naive means UTC) or unix seconds.

    Raises:
        TypeError: a property of the wrong type, or a header a field table cannot hold.
        ValueError: a short string past 255 bytes or an octet past 255 (naming the property), or a
            header value AMQP cannot hold (naming its key).
    """
    out = bytearray()
    flags = 0
    for name, flag in _PROPERTY_FLAGS:
        value = getattr(properties, name)
        if value is None:
            continue
        flags |= flag
        if name in _SHORT_STRINGS:
            out += write_short_string(value, f"{name} property")
        elif name == "headers":
            _put_table(value, out)
        elif name == "timestamp":
            out += _U64_BYTES(_timestamp_property(value))
        else:  # delivery_mode, priority
            out.append(_octet(value, name))
    return flags, bytes(out)


def write_short_string(value: str, name: str) -> bytes:
    """``value`` as an AMQP short string (a length octet, then UTF-8).

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: it is past 255 bytes, or not valid Unicode (``name`` says what it is: "routing key").
    """
    if not isinstance(value, str):
        raise TypeError(f"the {name} must be a str, not {type(value).__name__}")
    try:
        raw = value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"the {name} {value!r} is not valid Unicode ({exc.reason})") from None
    if len(raw) > 255:
        raise ValueError(f"the {name} is {len(raw)} bytes long in UTF-8; AMQP allows 255")
    return bytes((len(raw),)) + raw


def _put_table(table: Mapping[str, Any], out: bytearray) -> None:
    try:
        _table_into(table, out)
    except _Unwritable as exc:
        raise exc.raised() from None


def _table_into(table: Mapping[str, Any], out: bytearray) -> None:
    start = len(out)
    out += b"\0\0\0\0"
    for key, value in table.items():
        try:
            if not isinstance(key, str):
                raise _Unwritable(TypeError, f"a key of type {type(key).__name__}; keys are str")
            raw = key.encode()
            if len(raw) > 255:
                raise _Unwritable(ValueError, f"the key is {len(raw)} bytes long in UTF-8; AMQP allows 255")
            out.append(len(raw))
            out += raw
            if type(value) is str:  # most of what Celery sends
                raw = value.encode()
                out += _LETTER_U32(83, len(raw))
                out += raw
            elif value is None:
                out.append(86)
            else:
                _value_into(value, out)
        except _Unwritable as exc:
            exc.path.insert(0, str(key))
            raise
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc, str(key)) from None
    _PUT_U32(out, start, len(out) - start - 4)


def _array_into(items: list[Any] | tuple[Any, ...], out: bytearray) -> None:
    start = len(out)
    out += b"\0\0\0\0"
    for index, item in enumerate(items):
        try:
            _value_into(item, out)
        except _Unwritable as exc:
            exc.path.insert(0, index)
            raise
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc, index) from None
    _PUT_U32(out, start, len(out) - start - 4)


def _value_into(value: Any, out: bytearray) -> None:
    """Append ``value`` with its type letter."""
    if isinstance(value, str):
        raw = value.encode()
        out += _LETTER_U32(83, len(raw))
        out += raw
    elif value is None:
        out.append(86)
    elif isinstance(value, bool):
        out += b"t\x01" if value else b"t\x00"
    elif isinstance(value, int):
        # The smallest signed kind: RabbitMQ's errata letters, which pamqp and py-amqp read alike.
        if -0x80 <= value < 0x80:
            out += _LETTER_I8(98, value)
        elif -0x8000 <= value < 0x8000:
            out += _LETTER_I16(115, value)
        elif -0x8000_0000 <= value < 0x8000_0000:
            out += _LETTER_I32(73, value)
        elif -0x8000_0000_0000_0000 <= value < 0x8000_0000_0000_0000:
            out += _LETTER_I64(108, value)
        else:
            raise _Unwritable(ValueError, f"{value} is past a signed 64-bit integer, the most AMQP holds")
    elif isinstance(value, float):
        out += _LETTER_F64(100, value)
    elif isinstance(value, dict | Mapping):
        out.append(70)
        _table_into(value, out)
    elif isinstance(value, list | tuple):
        out.append(65)
        _array_into(value, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value) if isinstance(value, memoryview) else value
        out += _LETTER_U32(120, len(data))
        out += data
    elif isinstance(value, datetime):
        seconds = _seconds(value)
        if seconds < 0:
            raise _Unwritable(ValueError, f"{value} is before 1970, which an AMQP timestamp cannot hold")
        out += _LETTER_U64(84, seconds)
    elif isinstance(value, Decimal):
        out += _LETTER_DECIMAL(68, *_decimal(value))
    else:
        raise _Unwritable(TypeError, f"a value of type {type(value).__name__}; a table holds {_TABLE_TYPES}")


def _not_unicode(exc: UnicodeEncodeError, step: str | int) -> _Unwritable:
    error = _Unwritable(ValueError, f"a string that is not valid Unicode ({exc.reason})")
    error.path.append(step)
    return error


def _seconds(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)  # naive means UTC, as pamqp and py-amqp take it
    return int(when.timestamp())


def _decimal(value: Decimal) -> tuple[int, int]:
    """The scale and unscaled value of an AMQP decimal (``value`` = unscaled * 10**-scale)."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN, infinity
        raise _Unwritable(ValueError, f"{value} is not a number AMQP can hold")
    scale = max(-exponent, 0)
    unscaled = int(value.scaleb(scale)) if scale else int(value)
    if scale > 255 or not -0x8000_0000 <= unscaled < 0x8000_0000:
        raise _Unwritable(
            ValueError, f"{value} does not fit an AMQP decimal (a signed 32-bit value, up to 255 places)"
        )
    return scale, unscaled


def _octet(value: int, name: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"the {name} property must be an int, not {type(value).__name__}")
    if not 0 <= value <= 255:
        raise ValueError(f"the {name} property must be 0 to 255, not {value}")
    return value


def _timestamp_property(value: datetime | float) -> int:
    if isinstance(value, datetime):
        seconds = _seconds(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = int(value)
    else:
        raise TypeError(
            f"the timestamp property must be a datetime or unix seconds, not {type(value).__name__}"
        )
    if not 0 <= seconds < 2**64:
        raise ValueError(f"the timestamp property {value!r} is before 1970, which AMQP cannot hold")
    return seconds

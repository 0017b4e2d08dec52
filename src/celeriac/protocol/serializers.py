"""Serializers: turn values into bytes and back, under kombu's names and content types.

``json`` (the default) writes kombu's type markers, ``{"__type__": T, "__value__": V}``, for datetime,
date, time, Decimal, UUID and bytes, so values round-trip with Celery. ``msgpack`` and ``yaml`` need their
extras; ``pickle`` is only ever loaded when the caller accepts it. ``auth`` (signed messages) refuses
everything until ``app.setup_security()`` puts a signer behind it (``celeriac.protocol.signing``).
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from celeriac.exceptions import (
    ConfigurationError,
    ContentDisallowed,
    DecodeError,
    MissingDependency,
    SecurityError,
)

__all__ = ["content_encoding_of", "content_type_of", "dumps", "loads", "register"]


@dataclass(frozen=True, slots=True)
class _Serializer:
    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


_by_name: dict[str, _Serializer] = {}
_by_type: dict[str, _Serializer] = {}


def register(
    name: str,
    content_type: str,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    *,
    content_encoding: str = "utf-8",
) -> None:
    """Make a serializer available under ``name`` and ``content_type``, replacing any of the same name.

    ``loads`` may raise anything on bad input; callers of :func:`loads` see it as ``DecodeError``.
    ``content_encoding`` is ``"binary"`` for formats that are not text.
    """
    entry = _Serializer(name, content_type.lower(), content_encoding, dumps, loads)
    _by_name[name] = entry
    _by_type[entry.content_type] = entry


def _lookup(name: str) -> _Serializer:
    try:
        return _by_name[name]
    except KeyError:
        known = ", ".join(sorted(_by_name))
        raise ConfigurationError(f"unknown serializer {name!r}; known serializers: {known}") from None


def content_type_of(serializer: str) -> str:
    """The content type a serializer writes, e.g. ``application/json`` for ``json``."""
    return _lookup(serializer).content_type


def content_encoding_of(serializer: str) -> str:
    """The content encoding a serializer writes: ``utf-8`` for text formats, ``binary`` otherwise."""
    return _lookup(serializer).content_encoding


def dumps(value: Any, serializer: str) -> tuple[str, bytes]:
    """Serialize ``value``; returns (content type, bytes).

    Raises:
        ConfigurationError: the serializer is unknown.
        MissingDependency: the serializer's library is not installed.
        TypeError: the value (or something inside it) cannot be written by this serializer.
    """
    entry = _lookup(serializer)
    try:
        return entry.content_type, entry.dumps(value)
    except (MissingDependency, TypeError):
        raise
    except (ValueError, RecursionError, OverflowError) as exc:
        raise TypeError(f"cannot serialize value with {serializer}: {exc}") from exc


def loads(data: bytes, content_type: str, accept: Collection[str]) -> Any:
    """Deserialize ``data`` written as ``content_type``, if ``accept`` allows that content type.

    ``accept`` holds serializer names (``"json"``) or content types (``"application/json"``).

    Raises:
        ContentDisallowed: the content type is not accepted.
        DecodeError: the content type is unknown or the data is malformed.
        ConfigurationError: ``accept`` names an unknown serializer.
    """
    content_type = _normalize(content_type)
    if not _accepts(accept, content_type):
        raise ContentDisallowed(
            f"refusing to deserialize content of type {content_type!r}: it is not accepted; "
            f"add it to accept_content to allow it (accepted now: {', '.join(accept) or 'nothing'})"
        )
    entry = _by_type.get(content_type)
    if entry is None:
        raise DecodeError(f"no serializer for content type {content_type!r}")
    if isinstance(data, str):
        # Some clients hand over text they already decoded; the serializers all read bytes.
        data = data.encode("utf-8", "surrogatepass")
    data = bytes(data)
    try:
        value = entry.loads(data)
    except (DecodeError, MissingDependency):
        raise
    except RecursionError:
        raise DecodeError(f"{entry.name} data is nested too deeply to decode") from None
    except Exception as exc:
        # A serializer's loads may fail in library-specific ways; the caller only needs to know
        # the data is bad and why.
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DecodeError(f"malformed {entry.name} data ({detail})") from exc
    if entry.name in _DEPTH_CHECKED and _may_nest_deeply(data, entry.name) and _nested_deeper(value):
        raise DecodeError(f"{entry.name} data is nested too deeply (over {MAX_DEPTH} levels)")
    return value


#: The deepest nesting of lists and mappings a decoded JSON or YAML body may have. Deeper data would
#: reach Python's recursion limit later (in a repr, a re-encode, the task); where the decoder itself
#: stops depends on that limit and on the stack in use, so the cap is checked here, explicitly.
#: (msgpack stops at its own fixed stack of 1024 levels.)
MAX_DEPTH = 500
_DEPTH_CHECKED = frozenset({"json", "yaml"})


def _may_nest_deeply(data: bytes, name: str) -> bool:
    # JSON cannot nest deeper than it has opening brackets; counting them is a fast C pass, so the
    # walk below runs only for bodies that could be too deep.
    return name != "json" or data.count(b"[") + data.count(b"{") > MAX_DEPTH


def _nested_deeper(value: Any) -> bool:
    if not isinstance(value, (list, tuple, dict)):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (list, tuple, dict)))
    return False


def _normalize(content_type: str) -> str:
    if ";" in content_type:
        content_type = content_type.partition(";")[0]
    return content_type.strip().lower()


def _accepts(accept: Collection[str], content_type: str) -> bool:
    for entry in accept:
        if "/" in entry:
            if _normalize(entry) == content_type:
                return True
        elif _lookup(entry).content_type == content_type:
            return True
    return False


# -- json ----------------------------------------------------------------------------------------------


def _marker(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def _json_default(value: Any) -> Any:
    reduce = getattr(value, "__json__", None)
    if reduce is not None:
        return reduce()
    # datetime is a date, so it has to be tested first.
    if isinstance(value, datetime):
        return _marker("datetime", value.isoformat())
    if isinstance(value, date):
        return _marker("date", value.isoformat())
    if isinstance(value, time):
        return _marker("time", value.isoformat())
    if isinstance(value, Decimal):
        return _marker("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _marker("uuid", {"hex": value.hex})
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return _marker("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _marker("base64", base64.b64encode(raw).decode("ascii"))
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def _uuid_from_marker(value: Any) -> uuid.UUID:
    if not isinstance(value, dict) or not isinstance(value.get("hex"), str):
        raise DecodeError('uuid marker needs a value of the form {"hex": "<32 hex digits>"}')
    return uuid.UUID(hex=value["hex"])


_MARKER_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": _uuid_from_marker,
    "bytes": lambda value: value.encode("utf-8"),
    "base64": lambda value: base64.b64decode(value, validate=True),
}


def _json_object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) != 2 or "__type__" not in obj or "__value__" not in obj:
        return obj
    kind, value = obj["__type__"], obj["__value__"]
    decoder = _MARKER_DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise DecodeError(f"unknown JSON type marker {kind!r}")
    if kind != "uuid" and not isinstance(value, str):
        raise DecodeError(f"JSON type marker {kind!r} needs a string value, got {type(value).__name__}")
    try:
        return decoder(value)
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise DecodeError(f"invalid value for JSON type marker {kind!r}: {value!r:.80}") from exc


_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_json_ascii_encoder = json.JSONEncoder(separators=(",", ":"), default=_json_default)
_plain_decoder = json.JSONDecoder()
_marker_decoder = json.JSONDecoder(object_hook=_json_object_hook)


def json_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with kombu's type markers for values JSON has no type for."""
    try:
        return _json_encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8; escaped as \\udXXX they still round-trip.
        return _json_ascii_encoder.encode(value).encode("ascii")


def json_loads(data: bytes) -> Any:
    """Parse UTF-8 JSON, turning kombu's type markers back into values.

    Raises:
        DecodeError: the data is not UTF-8, not JSON, or holds a malformed type marker.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"JSON data is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    # A marker key is spelled "__type__" or hides behind \u escapes; when neither appears, no dict
    # can be a marker and the object hook (one Python call per dict) is skipped.
    decoder = _marker_decoder if ("__type__" in text or "\\u" in text) else _plain_decoder
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise DecodeError("JSON data is nested too deeply to decode") from None
    except ValueError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


# -- msgpack, yaml, pickle -----------------------------------------------------------------------------


def _msgpack_dumps(value: Any) -> bytes:
    try:
        import msgpack
    except ImportError:
        raise MissingDependency("msgpack serializer", "msgpack") from None
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _msgpack_loads(data: bytes) -> Any:
    try:
        import msgpack
    except ImportError:
        raise MissingDependency("msgpack serializer", "msgpack") from None
    try:
        return msgpack.unpackb(data, raw=False)
    except msgpack.StackError:
        raise DecodeError("msgpack data is nested too deeply to decode") from None


def _yaml_dumps(value: Any) -> bytes:
    try:
        import yaml
    except ImportError:
        raise MissingDependency("yaml serializer", "yaml") from None
    try:
        text: str = yaml.safe_dump(value, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise TypeError(f"cannot serialize value with yaml: {exc}") from exc
    return text.encode("utf-8")


def _yaml_loads(data: bytes) -> Any:
    try:
        import yaml
    except ImportError:
        raise MissingDependency("yaml serializer", "yaml") from None
    return yaml.safe_load(data)


def _pickle_dumps(value: Any) -> bytes:
    try:
        # Protocol 4 is what kombu writes by default, so older Pythons on the other end can read it.
        return pickle.dumps(value, protocol=4)
    except (pickle.PicklingError, AttributeError) as exc:
        raise TypeError(f"cannot serialize value with pickle: {exc}") from exc


register("json", "application/json", json_dumps, json_loads)
register("msgpack", "application/x-msgpack", _msgpack_dumps, _msgpack_loads, content_encoding="binary")
register("yaml", "application/x-yaml", _yaml_dumps, _yaml_loads)
register("pickle", "application/x-python-serialize", _pickle_dumps, pickle.loads, content_encoding="binary")


def _auth_not_set_up(_: Any) -> Any:
    # Replaced by app.setup_security(); until then a signed message is refused, never passed through.
    raise SecurityError("signed (auth) content, but signing is not set up here: call app.setup_security()")


def _auth_dumps_not_set_up(_: Any) -> bytes:
    raise ConfigurationError(
        "task_serializer is 'auth', but signing is not set up: call app.setup_security()"
    )


register("auth", "application/data", _auth_dumps_not_set_up, _auth_not_set_up)

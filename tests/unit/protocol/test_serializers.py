"""Serializers: kombu-compatible JSON markers, content acceptance, and errors on bad data."""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.exceptions import ConfigurationError, ContentDisallowed, DecodeError, MissingDependency
from celeriac.protocol import serializers

JSON = "application/json"

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.dates()
    | st.times()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.uuids()
    | st.binary()
)
extended_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def roundtrip(value: Any, serializer: str = "json") -> Any:
    content_type, data = serializers.dumps(value, serializer)
    return serializers.loads(data, content_type, [serializer])


def test_json_writes_kombu_markers_exactly_as_captured_from_celery() -> None:
    hex_ = "1234567890abcdef1234567890abcdef"
    _, data = serializers.dumps([datetime(2024, 1, 2, 3, 4, 5), uuid.UUID(hex_)], "json")
    assert data == (
        b'[{"__type__":"datetime","__value__":"2024-01-02T03:04:05"},'
        b'{"__type__":"uuid","__value__":{"hex":"' + hex_.encode() + b'"}}]'
    )


@pytest.mark.parametrize(
    ("value", "marker"),
    [
        (
            datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05.000006+00:00"},
        ),
        (date(2024, 1, 2), {"__type__": "date", "__value__": "2024-01-02"}),
        (time(3, 4, 5), {"__type__": "time", "__value__": "03:04:05"}),
        (Decimal("1.10"), {"__type__": "decimal", "__value__": "1.10"}),
        (b"caf\xc3\xa9", {"__type__": "bytes", "__value__": "café"}),
        (b"\xff\x00", {"__type__": "base64", "__value__": "/wA="}),
    ],
)
def test_json_markers_for_each_type_round_trip(value: Any, marker: dict[str, Any]) -> None:
    _, data = serializers.dumps(value, "json")
    assert json.loads(data) == marker
    decoded = serializers.loads(data, JSON, ["json"])
    assert decoded == value
    assert type(decoded) is type(value)


def test_json_keeps_timezone_offsets_of_aware_datetimes() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    decoded = roundtrip(moment)
    assert decoded == moment
    assert decoded.utcoffset() == timedelta(hours=5, minutes=30)


def test_json_reduces_objects_with_dunder_json() -> None:
    class Point:
        def __json__(self) -> dict[str, int]:
            return {"x": 1, "y": 2}

    assert roundtrip({"p": Point()}) == {"p": {"x": 1, "y": 2}}


def test_json_output_is_compact_utf8() -> None:
    _, data = serializers.dumps({"a": [1, 2], "b": "é"}, "json")
    assert data == '{"a":[1,2],"b":"é"}'.encode()


def test_json_lone_surrogates_round_trip_as_escapes() -> None:
    _, data = serializers.dumps(["\ud800"], "json")
    data.decode("utf-8")  # still valid UTF-8
    assert serializers.loads(data, JSON, ["json"]) == ["\ud800"]


def test_json_escaped_marker_keys_are_still_markers() -> None:
    data = b'{"\\u005f_type__": "decimal", "__value__": "2.5"}'
    assert serializers.loads(data, JSON, ["json"]) == Decimal("2.5")


@pytest.mark.parametrize("value", [{1, 2}, object(), {"nested": [complex(1, 2)]}])
def test_json_unserializable_values_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        serializers.dumps(value, "json")


def test_json_circular_structure_raises_type_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="cannot serialize"):
        serializers.dumps(loop, "json")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a": 1', "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[1, 2] x", "invalid JSON"),
        (b'"\xff"', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"__type__": "frobnicator", "__value__": 1}', "unknown JSON type marker 'frobnicator'"),
        (
            b'{"__type__": "datetime", "__value__": "yesterday"}',
            "invalid value for JSON type marker 'datetime'",
        ),
        (b'{"__type__": "datetime", "__value__": 5}', "needs a string value"),
        (b'{"__type__": "decimal", "__value__": "one"}', "invalid value for JSON type marker 'decimal'"),
        (b'{"__type__": "uuid", "__value__": "abc"}', "uuid marker"),
        (b'{"__type__": "uuid", "__value__": {"hex": "zz"}}', "invalid value for JSON type marker 'uuid'"),
        (b'{"__type__": "base64", "__value__": "!!"}', "invalid value for JSON type marker 'base64'"),
        (b"1" * 5000, "invalid JSON"),
    ],
)
def test_json_malformed_data_raises_decode_error_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        serializers.loads(data, JSON, ["json"])


@pytest.mark.parametrize("accept", [["json"], ["application/json"], ("pickle", "json"), {"APPLICATION/JSON"}])
def test_accept_takes_names_or_content_types(accept: Any) -> None:
    assert serializers.loads(b"[1]", JSON, accept) == [1]


def test_content_type_parameters_are_ignored() -> None:
    assert serializers.loads(b"[1]", "application/json; charset=utf-8", ["json"]) == [1]


def test_disallowed_content_names_type_and_setting() -> None:
    with pytest.raises(ContentDisallowed) as info:
        serializers.loads(b"[1]", "application/x-yaml", ["json"])
    assert "application/x-yaml" in info.value.reason
    assert "accept_content" in info.value.reason
    assert isinstance(info.value, DecodeError)


class _Boom:
    calls = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Boom._record, ())

    @staticmethod
    def _record() -> None:
        _Boom.calls += 1


def test_pickle_is_never_loaded_unless_accepted() -> None:
    data = pickle.dumps(_Boom())
    with pytest.raises(ContentDisallowed):
        serializers.loads(data, "application/x-python-serialize", ["json", "msgpack"])
    assert _Boom.calls == 0
    serializers.loads(data, "application/x-python-serialize", ["pickle"])
    assert _Boom.calls == 1


def test_unknown_content_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no serializer for content type 'text/csv'"):
        serializers.loads(b"a,b", "text/csv", ["text/csv"])


def test_unknown_serializer_names_the_known_ones() -> None:
    for call in (
        lambda: serializers.dumps(1, "jsn"),
        lambda: serializers.content_type_of("jsn"),
        lambda: serializers.loads(b"1", JSON, ["jsn"]),
    ):
        with pytest.raises(
            ConfigurationError, match=r"unknown serializer 'jsn'.*json, msgpack, pickle, yaml"
        ):
            call()


def test_content_types_and_encodings_match_kombu() -> None:
    expected = {
        "json": ("application/json", "utf-8"),
        "msgpack": ("application/x-msgpack", "binary"),
        "yaml": ("application/x-yaml", "utf-8"),
        "pickle": ("application/x-python-serialize", "binary"),
    }
    for name, (content_type, encoding) in expected.items():
        assert serializers.content_type_of(name) == content_type
        assert serializers.content_encoding_of(name) == encoding


@pytest.mark.parametrize("name", ["msgpack", "yaml", "pickle"])
def test_other_serializers_round_trip(name: str) -> None:
    value = {"args": [1, "two", 3.5, None, True], "nested": {"x": [b"\x00\xff"] if name != "yaml" else []}}
    assert roundtrip(value, name) == value


@pytest.mark.parametrize(
    ("content_type", "data", "reason"),
    [
        ("application/x-msgpack", b"\x93\x01", "malformed msgpack"),
        ("application/x-msgpack", b"\x91" * 100_000 + b"\x01", "nested too deeply"),
        ("application/x-msgpack", b"\x81\x01\x02", "malformed msgpack"),  # integer map key
        ("application/x-yaml", b"a: [1, 2", "malformed yaml"),
        ("application/x-yaml", b"!!python/object:os.system {}", "malformed yaml"),
        ("application/x-yaml", b"[" * 20_000 + b"]" * 20_000, "nested too deeply|malformed yaml"),
        ("application/x-python-serialize", b"\x80\x04garbage", "malformed pickle"),
    ],
)
def test_other_serializers_malformed_data(content_type: str, data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        serializers.loads(data, content_type, [content_type])


@pytest.mark.parametrize(
    ("name", "module", "extra"), [("msgpack", "msgpack", "msgpack"), ("yaml", "yaml", "yaml")]
)
def test_missing_library_names_the_extra(
    name: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependency, match=rf"pip install 'celeriac\[{extra}\]'"):
        serializers.dumps([1], name)
    with pytest.raises(MissingDependency):
        serializers.loads(b"\x91\x01", serializers.content_type_of(name), [name])


def test_registered_serializer_is_used_and_its_errors_become_decode_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Register into copies so the new serializer does not leak into other tests.
    monkeypatch.setattr(serializers, "_by_name", dict(serializers._by_name))
    monkeypatch.setattr(serializers, "_by_type", dict(serializers._by_type))

    def loads(data: bytes) -> Any:
        if data == b"bad":
            raise KeyError("nope")
        return data.decode()[::-1]

    serializers.register("reverse", "application/x-reverse", lambda value: str(value)[::-1].encode(), loads)
    assert roundtrip("abc", "reverse") == "abc"
    with pytest.raises(DecodeError, match="malformed reverse data"):
        serializers.loads(b"bad", "application/x-reverse", ["reverse"])


def test_json_agrees_with_kombu_both_ways() -> None:
    kombu_json = pytest.importorskip("kombu.utils.json")
    value = [
        datetime(2024, 1, 2, 3, 4, 5),
        date(2024, 1, 2),
        time(1, 2),
        Decimal("1.5"),
        uuid.uuid4(),
        b"x",
        b"\xff",
    ]
    assert kombu_json.loads(serializers.dumps(value, "json")[1]) == value
    assert serializers.loads(kombu_json.dumps(value).encode(), JSON, ["json"]) == value


@settings(max_examples=150, deadline=None)
@given(extended_values)
def test_json_round_trips_extended_values(value: Any) -> None:
    assert roundtrip(value) == value


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from(["application/json", "application/x-msgpack", "application/x-yaml"]),
)
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes, content_type: str) -> None:
    with contextlib.suppress(DecodeError):
        serializers.loads(data, content_type, [content_type])


def test_json_nesting_is_capped_at_max_depth_whatever_the_recursion_limit() -> None:
    # (YAML's loader meets Python's recursion limit first, at about 330 levels: "nested too deeply".)
    def nested(depth: int) -> bytes:
        return b"[" * depth + b"0" + b"]" * depth

    limit = serializers.MAX_DEPTH
    assert serializers.loads(nested(limit), JSON, ["json"]) == json.loads(nested(limit))
    with pytest.raises(DecodeError, match=rf"json data is nested too deeply \(over {limit} levels\)"):
        serializers.loads(nested(limit + 1), JSON, ["json"])
    # many brackets, little depth: walked, and accepted
    wide = [[{}] for _ in range(2 * limit)]
    assert serializers.loads(serializers.dumps(wide, "json")[1], JSON, ["json"]) == wide

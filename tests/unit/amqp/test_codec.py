"""Our AMQP wire codec: field tables and properties read as pamqp (aiormq) reads them, written as pamqp and
py-amqp read them (byte for byte what pamqp writes where it picks the same types), and frames cut right
however the bytes arrive."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body, commands, decode, encode, frame, header

from celeriac.amqp._codec import (
    PROPERTY_NAMES,
    Properties,
    read_properties,
    read_table,
    write_properties,
    write_table,
)
from celeriac.amqp._link import Delivered, Link
from celeriac.exceptions import OperationalError

TASK_ID = "0f4b5e4c-8a4e-4e55-9d44-3f0a3c0c8d1a"


def pamqp_table(raw: bytes) -> dict[str, Any]:
    return decode.field_table(raw)[1]


def ours(raw: bytes) -> dict[str, Any]:
    table, end = read_table(raw, 0)
    assert end == len(raw)
    return table


def entry(key: str, kind: bytes, payload: bytes) -> bytes:
    raw = key.encode()
    return bytes([len(raw)]) + raw + kind + payload


def table_of(*entries: bytes) -> bytes:
    content = b"".join(entries)
    return struct.pack(">I", len(content)) + content


# -- field tables


def test_every_field_type_reads_as_pamqp_reads_it() -> None:
    when = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
    encoded = encode.field_table(
        {
            "t": True,
            "f": False,
            "b": -100,  # b
            "s": -30000,  # s
            "u": 65000,  # u
            "I": -2_000_000_000,  # I
            "i": 4_000_000_000,  # i
            "l": -(2**62),  # l
            "float": 1.5,  # f
            "D": Decimal("-12.345"),
            "S": "text",
            "x": bytearray(b"\x00\xff\x10"),
            "A": [1, "two", None, [3]],
            "T": when,
            "F": {"inner": {"deeper": "yes"}},
            "V": None,
        }
    )
    # Letters pamqp's encoder never picks, which RabbitMQ (or others) may write.
    extra = [
        entry("B", b"B", b"\xfe"),
        entry("d", b"d", struct.pack(">d", 2.25)),
        entry("L", b"L", struct.pack(">q", -5)),
        entry("nul", b"\x00", b""),
    ]
    raw = table_of(encoded[4:], *extra)
    mine, theirs = ours(raw), pamqp_table(raw)
    assert mine == theirs
    assert mine == {
        "t": True,
        "f": False,
        "b": -100,
        "s": -30000,
        "u": 65000,
        "I": -2_000_000_000,
        "i": 4_000_000_000,
        "l": -(2**62),
        "float": 1.5,
        "D": Decimal("-12.345"),
        "S": "text",
        "x": b"\x00\xff\x10",
        "A": [1, "two", None, [3]],
        "T": when,
        "F": {"inner": {"deeper": "yes"}},
        "V": None,
        "B": 254,
        "d": 2.25,
        "L": -5,
        "nul": None,
    }
    assert type(mine["t"]) is bool and type(mine["b"]) is int and type(mine["x"]) is bytes
    assert mine["T"].tzinfo is UTC


def test_strings_unicode_empty_large_and_not_utf8() -> None:
    big = "é" * 600_000  # 1.2 MB of UTF-8
    raw = encode.field_table({"ünï": "ça va ✓", "empty": "", "big": big, "nested": {}, "list": []})
    assert (
        ours(raw) == pamqp_table(raw) == {"ünï": "ça va ✓", "empty": "", "big": big, "nested": {}, "list": []}
    )
    # A long string that is not UTF-8 stays bytes, as pamqp leaves it.
    raw = table_of(entry("bin", b"S", struct.pack(">I", 2) + b"\xff\xfe"))
    assert ours(raw) == pamqp_table(raw) == {"bin": b"\xff\xfe"}
    assert ours(encode.field_table({})) == {}


def test_short_strings_that_are_not_utf8_are_replaced_not_fatal() -> None:
    # pamqp would raise; a message RabbitMQ redelivers must not end the link again and again.
    raw = table_of(b"\x02\xff\xfeS" + struct.pack(">I", 2) + b"ok")
    assert ours(raw) == {"\ufffd\ufffd": "ok"}
    properties, _ = read_properties(b"\x03a\xffb", 0, 0x8000)
    assert properties.content_type == "a\ufffdb"


def test_timestamps_past_2106_are_milliseconds_as_pamqp_says() -> None:
    millis = 1_772_359_200_123
    raw = table_of(entry("T", b"T", struct.pack(">Q", millis)))
    assert ours(raw) == pamqp_table(raw)
    assert ours(raw)["T"] == datetime.fromtimestamp(millis / 1000, tz=UTC)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (table_of(entry("k", b"?", b"")), "unknown field type"),
        (struct.pack(">I", 50) + b"\x01k", "overruns"),
        (table_of(entry("k", b"S", struct.pack(">I", 99) + b"short")), "overrun"),
        (table_of(entry("k", b"A", struct.pack(">I", 3) + b"S\x00\x00")), "malformed"),
        (table_of(entry("k", b"I", b"\x00")), "malformed"),
    ],
    ids=["unknown-type", "length-past-buffer", "string-past-table", "truncated-array", "truncated-int"],
)
def test_a_malformed_table_is_a_value_error(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        read_table(raw, 0)


_keys = st.text(min_size=0, max_size=20)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=50),
    st.binary(max_size=20).map(bytearray),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=12))
def test_any_table_reads_as_pamqp_reads_it(table: dict[str, Any]) -> None:
    raw = encode.field_table(table)
    assert ours(raw) == pamqp_table(raw)


# -- properties


def all_properties() -> commands.Basic.Properties:
    return commands.Basic.Properties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"lang": "py", "task": "proj.add", "id": TASK_ID, "timelimit": [None, None], "stamps": {}},
        delivery_mode=2,
        priority=7,
        correlation_id=TASK_ID,
        reply_to="reply-☺",
        expiration="60000",
        message_id="m-1",
        timestamp=datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC),
        message_type="task",
        user_id="guest",
        app_id="celeriac",
    )


def content_header(properties: commands.Basic.Properties, body_size: int = 5) -> bytes:
    return header.ContentHeader(body_size=body_size, properties=properties).marshal()


def read_header(raw: bytes) -> tuple[Properties, int]:
    (flags,) = struct.unpack_from(">H", raw, 12)
    return read_properties(raw, 14, flags)


def test_a_content_header_with_every_property() -> None:
    raw = content_header(all_properties())
    mine, end = read_header(raw)
    assert end == len(raw)
    theirs = header.ContentHeader()
    theirs.unmarshal(raw)
    for name in PROPERTY_NAMES[:-1]:
        assert getattr(mine, name) == getattr(theirs.properties, name), name
    assert mine.message_type == "task" and mine.priority == 7 and mine.timestamp.tzinfo is UTC
    assert mine.cluster_id is None


def test_cluster_id_the_last_property() -> None:
    # pamqp refuses to write cluster_id; its flag is bit 2 and it comes last.
    raw = struct.pack(">H", 0x8004) + b"\x04text" + b"\x02c1"
    properties, end = read_properties(raw, 2, 0x8004)
    assert (properties.content_type, properties.cluster_id, end) == ("text", "c1", len(raw))


def test_no_properties_at_all() -> None:
    raw = content_header(commands.Basic.Properties(), body_size=0)
    properties, end = read_header(raw)
    assert end == len(raw) == 14
    assert properties == Properties()
    assert all(getattr(properties, name) is None for name in PROPERTY_NAMES)


# -- writing


def written(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` written by us, read back by us; pamqp reads the same."""
    raw = write_table(table)
    assert (struct.unpack_from(">I", raw)[0], len(raw)) == (len(raw) - 4, len(raw))
    mine = ours(raw)
    assert mine == pamqp_table(raw)
    return mine


def test_every_type_is_written_with_the_letter_the_readers_expect() -> None:
    when = datetime(2026, 3, 1, 10, 0, 0, 999_000, tzinfo=UTC)
    table = {
        "S": "ça va ✓",
        "x": b"\x00\xff",
        "t": True,
        "f": False,
        "b": -128,
        "s": 32767,  # not pamqp's u
        "I": 65536,
        "big": 2**31,  # not pamqp's unsigned i
        "l": -(2**63),
        "d": 0.1,  # a double, not pamqp's 32-bit f
        "D": Decimal("-12.345"),
        "E": Decimal("1E+3"),
        "T": when,
        "naive": datetime(2026, 3, 1, 10, 0, 0),
        "F": {"inner": {"deeper": [1, "two"]}},
        "A": [None, 3, "x"],
        "tuple": (1, 2),
        "V": None,
    }
    back = written(table)
    assert back == {
        **table,
        "T": when.replace(microsecond=0),
        "naive": datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC),
        "tuple": [1, 2],
        "E": Decimal(1000),
    }
    assert type(back["x"]) is bytes and type(back["t"]) is bool and back["d"] == 0.1
    # The letters, entry by entry (RabbitMQ's signed integer kinds, never u or i).
    kinds = {key: encoded_letter(key, value) for key, value in table.items()}
    assert kinds == {
        "S": "S", "x": "x", "t": "t", "f": "t", "b": "b", "s": "s", "I": "I", "big": "l", "l": "l",
        "d": "d", "D": "D", "E": "D", "T": "T", "naive": "T", "F": "F", "A": "A", "tuple": "A", "V": "V",
    }  # fmt: skip


def encoded_letter(key: str, value: Any) -> str:
    raw = write_table({key: value})
    return chr(raw[4 + 1 + len(key.encode())])


def test_pyamqp_reads_what_we_write() -> None:
    from amqp.serialization import loads

    table = {"s": "text", "n": -5, "big": 2**40, "f": 1.5, "b": True, "none": None, "l": [1, {"a": "b"}]}
    (got,), _ = loads("F", write_table(table), 0)
    assert got == table


def test_a_table_we_write_reads_back_as_pamqp_wrote_it() -> None:
    # Where pamqp picks our letters, the bytes are the same (keys in pamqp's sorted order).
    table = {"a": "x", "b": None, "c": 5, "d": -300, "e": True, "f": [None, "y"], "g": {"h": {}}}
    assert write_table(table) == encode.field_table(table)
    assert write_table({}) == encode.field_table({}) == b"\0\0\0\0"


@pytest.mark.parametrize(
    ("table", "error", "where", "why"),
    [
        ({"k": {1, 2}}, TypeError, "'k'", "type set"),
        ({"meta": {"when": object()}}, TypeError, "'meta.when'", "type object"),
        ({"timelimit": [None, 1j]}, TypeError, r"'timelimit\[1\]'", "type complex"),
        ({"big": 2**63}, ValueError, "'big'", "past a signed 64-bit integer"),
        ({"deep": [{"small": -(2**63) - 1}]}, ValueError, r"'deep\[0\].small'", "64-bit"),
        ({"k" * 256: 1}, ValueError, "'kkkk", "256 bytes long"),
        ({"nan": Decimal("NaN")}, ValueError, "'nan'", "not a number"),
        ({"old": datetime(1969, 1, 1, tzinfo=UTC)}, ValueError, "'old'", "before 1970"),
        ({"bad": "\ud800"}, ValueError, "'bad'", "not valid Unicode"),
        ({3: "x"}, TypeError, "'3'", "a key of type int"),
    ],
    ids=["set", "nested-object", "in-array", "int65", "nested-int65", "long-key", "nan", "1969", "surrogate",
         "int-key"],
)  # fmt: skip
def test_what_a_table_cannot_hold_is_an_error_naming_the_key(
    table: dict[Any, Any], error: type[Exception], where: str, why: str
) -> None:
    with pytest.raises(error, match=rf"cannot write {where}.*{why}"):
        write_table(table)


_written_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    st.binary(max_size=20),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
)
_written_values = st.recursive(
    _written_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_keys, inner, max_size=5),
    ),
    max_leaves=25,
)


def normal(value: Any) -> Any:
    """What a reader gives back for a written value."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    if isinstance(value, datetime):
        return value.replace(microsecond=0)
    return value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _written_values, max_size=12))
def test_any_table_we_write_reads_back_the_same(table: dict[str, Any]) -> None:
    assert written(table) == normal(table)


def celery_properties(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": headers,
        "delivery_mode": 2,
        "priority": 0,
        "correlation_id": TASK_ID,
        "reply_to": "d5e8c8ae-reply",
        "expiration": "60000",
        "message_id": "m-1",
        "timestamp": datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC),
        "message_type": "task",
        "user_id": "guest",
        "app_id": "celeriac",
    }


def test_the_properties_celery_sends_are_written_byte_for_byte_as_pamqp_writes_them() -> None:
    headers = {  # sorted: pamqp writes keys in order
        "argsrepr": "(2, 3)",
        "eta": None,
        "id": TASK_ID,
        "ignore_result": False,
        "kwargsrepr": "{}",
        "lang": "py",
        "retries": 3,
        "root_id": TASK_ID,
        "stamps": {},
        "task": "proj.add",
        "timelimit": [30, None],
    }
    fields = celery_properties(headers)
    flags, encoded = write_properties(Properties(**fields))
    assert struct.pack(">H", flags) + encoded == commands.Basic.Properties(**fields).marshal()
    # And each alone, with its flag.
    for name, value in fields.items():
        flags, encoded = write_properties(Properties(**{name: value}))
        assert struct.pack(">H", flags) + encoded == commands.Basic.Properties(**{name: value}).marshal(), (
            name
        )
    flags, encoded = write_properties(Properties(**fields))
    assert (flags, read_properties(encoded, 0, flags)) == (0xFFF8, (Properties(**fields), len(encoded)))


def test_properties_read_back_whole_including_cluster_id() -> None:
    everything = Properties(**celery_properties({"k": "v"}), cluster_id="c1")
    flags, encoded = write_properties(everything)
    assert flags == 0xFFFC
    assert read_properties(encoded, 0, flags) == (everything, len(encoded))
    assert write_properties(Properties()) == (0, b"")
    flags, encoded = write_properties(Properties(timestamp=1_772_359_200.7))  # unix seconds too
    assert read_properties(encoded, 0, flags)[0].timestamp == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("properties", "error", "why"),
    [
        (Properties(reply_to="r" * 256), ValueError, "the reply_to property is 256 bytes long"),
        (Properties(content_type="é" * 128), ValueError, "the content_type property is 256 bytes"),
        (Properties(correlation_id=7), TypeError, "the correlation_id property must be a str, not int"),  # type: ignore[arg-type]
        (Properties(priority=256), ValueError, "the priority property must be 0 to 255"),
        (Properties(delivery_mode="2"), TypeError, "the delivery_mode property must be an int"),  # type: ignore[arg-type]
        (Properties(timestamp="now"), TypeError, "the timestamp property must be a datetime"),  # type: ignore[arg-type]
        (Properties(headers={"when": {1}}), TypeError, "cannot write 'when'"),
    ],
    ids=["long-reply-to", "long-content-type", "int-id", "priority", "mode", "timestamp", "header"],
)  # fmt: skip
def test_a_property_amqp_cannot_carry_is_an_error_naming_it(
    properties: Properties, error: type[Exception], why: str
) -> None:
    with pytest.raises(error, match=why):
        write_properties(properties)


# -- frames, fed to a link with no socket


def deliver(tag: int, body_bytes: bytes, *, frame_max: int = 131072, redelivered: bool = False) -> bytes:
    method = commands.Basic.Deliver(
        consumer_tag="ctag-1", delivery_tag=tag, redelivered=redelivered, exchange="ex", routing_key="rk"
    )
    parts = [
        frame.marshal(method, 1),
        frame.marshal(header.ContentHeader(0, len(body_bytes), all_properties()), 1),
    ]
    step = frame_max - 8
    parts += [
        frame.marshal(body.ContentBody(body_bytes[i : i + step]), 1) for i in range(0, len(body_bytes), step)
    ]
    return b"".join(parts)


HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
BODIES = [b"", b"x", bytes(range(256)) * 3, b"y" * (4096 - 8), b"z" * 20_000]


def feed(stream: bytes, chunks: Callable[[bytes], list[bytes]]) -> tuple[list[Delivered], list[int], Link]:
    """Feed ``stream`` to a link (no socket) in ``chunks(stream)``; return the deliveries, the number
    delivered at each ``on_batch``, and the link."""
    got: list[Delivered] = []
    batches: list[int] = []

    async def main() -> Link:
        link = Link("the test", got.append, lambda: batches.append(len(got)), None)
        link._frame_max = 4096
        for chunk in chunks(stream):
            link.data_received(chunk)
        return link

    return got, batches, asyncio.run(main())


def stream_of(bodies: list[bytes]) -> bytes:
    return HEARTBEAT + b"".join(deliver(i + 1, b, frame_max=4096) + HEARTBEAT for i, b in enumerate(bodies))


def check(got: list[Delivered], bodies: list[bytes]) -> None:
    assert [d.body for d in got] == bodies
    assert [d.delivery_tag for d in got] == list(range(1, len(bodies) + 1))
    for d in got:
        assert (d.consumer_tag, d.exchange, d.routing_key, d.redelivered) == ("ctag-1", "ex", "rk", False)
        assert type(d.body) is bytes
        assert d.properties.headers == {
            "lang": "py",
            "task": "proj.add",
            "id": TASK_ID,
            "timelimit": [None, None],
            "stamps": {},
        }
        assert d.properties.reply_to == "reply-☺"


def test_many_deliveries_in_one_read() -> None:
    got, batches, link = feed(stream_of(BODIES), lambda s: [s])
    check(got, BODIES)
    assert batches == [len(BODIES)]  # one batch call for the read
    assert not link.is_closed


def test_deliveries_fed_byte_by_byte() -> None:
    stream = stream_of(BODIES)
    got, batches, link = feed(stream, lambda s: [s[i : i + 1] for i in range(len(s))])
    check(got, BODIES)
    assert batches == list(range(1, len(BODIES) + 1))
    assert not link.is_closed


@pytest.mark.parametrize("seed", range(5))
def test_deliveries_split_anywhere(seed: int) -> None:
    rng = random.Random(seed)
    stream = stream_of(BODIES * 3)

    def chunks(s: bytes) -> list[bytes]:
        cuts = sorted(rng.sample(range(1, len(s)), 40))
        return [s[a:b] for a, b in zip([0, *cuts], [*cuts, len(s)], strict=True)]

    got, _, _ = feed(stream, chunks)
    check(got, BODIES * 3)


def test_the_redelivered_flag() -> None:
    got, _, _ = feed(deliver(9, b"again", redelivered=True), lambda s: [s])
    assert got[0].redelivered is True and got[0].delivery_tag == 9


def bad_end(stream: bytes) -> bytes:
    return stream[:-1] + b"\x00"


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (bad_end(HEARTBEAT), "frame end"),
        (deliver(1, b"body")[:-14], "incomplete"),  # cut inside the body frame: nothing wrong yet
        (frame.marshal(body.ContentBody(b"stray"), 1), "body frame outside"),
        (b"AMQP\x00\x00\x09\x01", "unknown frame type"),
        (b"\x01\x00\x01\x00\x10\x00\x00", "incomplete"),
        (b"\x01\x00\x01\x00\x00\xff\xff" + b"\x00" * 10, "over the agreed"),
    ],
    ids=["bad-frame-end", "partial-body", "stray-body", "protocol-header", "partial-header", "too-big"],
)
def test_a_broken_stream_ends_the_link(stream: bytes, why: str) -> None:
    got, _, link = feed(stream, lambda s: [s])
    assert got == []
    if why == "incomplete":
        assert not link.is_closed
        return
    assert link.is_closed
    reason = link.closing.result()
    assert isinstance(reason, OperationalError)
    assert why in str(reason)
    with pytest.raises(OperationalError, match=why):
        link.ack(1)


def test_an_error_in_on_delivery_ends_the_link() -> None:
    seen: list[Delivered] = []

    def boom(delivered: Delivered) -> None:
        seen.append(delivered)
        raise RuntimeError("boom")

    async def main() -> Link:
        link = Link("the test", boom, None, None)
        link.data_received(stream_of([b"a", b"b"]))
        return link

    link = asyncio.run(main())
    assert [d.body for d in seen] == [b"a"]  # nothing more is handed out once it ended
    assert link.is_closed
    reason = link.closing.result()
    assert isinstance(reason, OperationalError) and "boom" in str(reason)


def test_a_message_with_unreadable_properties_is_delivered_with_the_reason() -> None:
    # An unknown field type in the headers: the message is handed over (to be dead-lettered) and the
    # link reads on, rather than ending and having RabbitMQ redeliver the same message forever.
    method = frame.marshal(
        commands.Basic.Deliver(consumer_tag="ctag-1", delivery_tag=1, exchange="ex", routing_key="rk"), 1
    )
    table = b"\x01kZ\x00"
    payload = struct.pack(">HHQH", 60, 0, 4, 0x2000) + struct.pack(">I", len(table)) + table
    content = struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
    stream = method + content + frame.marshal(body.ContentBody(b"body"), 1) + deliver(2, b"next")
    got, _, link = feed(stream, lambda s: [s])
    assert [d.body for d in got] == [b"body", b"next"]
    assert got[0].error is not None and "unreadable AMQP properties" in got[0].error
    assert got[0].properties.headers is None
    assert got[1].error is None and got[1].properties.headers is not None
    assert not link.is_closed

"""The consuming link's wire decoding: field tables and properties read as pamqp (aiormq) reads them, and
frames cut right however the bytes arrive."""

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

from celeriac.brokers._amqp_codec import PROPERTY_NAMES, Properties, read_properties, read_table
from celeriac.brokers._amqp_link import Delivered, Link
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

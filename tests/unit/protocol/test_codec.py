"""Task codec: protocol v2 exactly as Celery sends it, v1 decoding, a precise reason for each bad input."""

from __future__ import annotations

import contextlib
import json
import math
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.exceptions import ContentDisallowed, DecodeError, MessageTooLarge
from celeriac.protocol import Message, TaskCall, decode_task, encode_task, from_envelope, to_envelope
from celeriac.protocol.codec import safe_repr

TASK_ID = "0f4b5e4c-8a4e-4e55-9d44-3f0a3c0c8d1a"
REPLY_TO = "5b5ea1a1-5cf3-3d4c-8a9b-0d2b1c5e7f11"
CELERY_HEADER_KEYS = [
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
    "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "replaced_task_nesting",
    "stamped_headers", "stamps",
]  # fmt: skip
CELERY_BODY = b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def celery_headers(**changes: Any) -> dict[str, Any]:
    """The headers of a Celery 5.7 ``add.delay(2, 3)``, as captured from RabbitMQ (reference §2.1)."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": "projamqp.add",
        "id": TASK_ID,
        "shadow": None,
        "eta": "2026-03-01T10:00:00.123456+00:00",
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": TASK_ID,
        "parent_id": None,
        "argsrepr": "(2, 3)",
        "kwargsrepr": "{}",
        "origin": "gen20046@vm",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    headers.update(changes)
    return headers


def celery_message(
    body: bytes = CELERY_BODY, content_type: str = "application/json", **changes: Any
) -> Message:
    return Message(
        body=body,
        headers=celery_headers(**changes),
        content_type=content_type,
        content_encoding="utf-8",
        properties={"correlation_id": TASK_ID, "reply_to": REPLY_TO, "delivery_mode": 2, "priority": 0},
    )


def test_decodes_a_real_celery_message() -> None:
    call = decode_task(celery_message())
    assert call.id == TASK_ID
    assert call.name == "projamqp.add"
    assert call.args == [2, 3]
    assert call.kwargs == {}
    assert (call.callbacks, call.errbacks, call.chain, call.chord) == (None, None, None, None)
    assert call.eta == datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert call.expires is None
    assert call.root_id == TASK_ID
    assert call.parent_id is None
    assert call.origin == "gen20046@vm"
    assert call.reply_to == REPLY_TO
    assert call.priority == 0
    assert (call.time_limit, call.soft_time_limit) == (None, None)
    assert call.argsrepr == "(2, 3)"
    assert call.headers == celery_headers()


def test_decodes_a_message_built_by_celery_itself() -> None:
    celery = pytest.importorskip("celery")
    kombu_serialization = pytest.importorskip("kombu.serialization")
    app = celery.Celery(set_as_current=False)
    sent = app.amqp.create_task_message(
        TASK_ID, "proj.add", (2, 3), {"z": 1}, countdown=60, time_limit=30, soft_time_limit=20, retries=2
    )
    content_type, _, body = kombu_serialization.dumps(sent.body, "json")
    call = decode_task(Message(body=body.encode(), headers=sent.headers, content_type=content_type))
    assert (call.name, call.args, call.kwargs, call.retries) == ("proj.add", [2, 3], {"z": 1}, 2)
    assert (call.time_limit, call.soft_time_limit) == (30, 20)
    assert call.eta is not None and call.eta.tzinfo is not None
    ours = encode_task(TaskCall(id=TASK_ID, name="proj.add"))
    assert list(ours.headers) == list(sent.headers)


def test_encodes_exactly_celerys_headers_body_and_properties() -> None:
    # Celery's delay() resolves ignore_result from the task's option; ours does the same in _sending
    call = TaskCall(
        id=TASK_ID, name="proj.add", args=[2, 3], reply_to=REPLY_TO, priority=0, ignore_result=False
    )
    message = encode_task(call)
    assert list(message.headers) == CELERY_HEADER_KEYS
    assert message.headers == celery_headers(
        task="proj.add", eta=None, origin=message.headers["origin"], root_id=TASK_ID
    )
    assert message.headers["origin"].startswith("gen")
    assert json.loads(message.body) == json.loads(CELERY_BODY)
    assert message.body == b'[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")
    assert message.properties == {
        "correlation_id": TASK_ID,
        "reply_to": REPLY_TO,
        "priority": 0,
        "delivery_mode": 2,
    }


def test_encodes_times_limits_and_workflow_fields() -> None:
    eta = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    call = TaskCall(
        id=TASK_ID,
        name="proj.add",
        eta=eta,
        expires=datetime(2026, 3, 1, 9, 0),
        time_limit=30,
        soft_time_limit=20,
        group_id="g",
        group_index=3,
        parent_id="p",
        root_id="r",
        shadow="nice name",
        ignore_result=True,
        retries=4,
        origin="w1@host",
        chain=[{"task": "proj.next", "args": [], "kwargs": {}, "options": {}}],
    )
    message = encode_task(call)
    headers = message.headers
    assert headers["eta"] == "2026-03-01T10:00:00+02:00"  # an aware time keeps its offset, as in Celery
    assert headers["expires"] == "2026-03-01T09:00:00+00:00"  # naive is taken as UTC
    assert headers["timelimit"] == [30, 20]  # [hard, soft], as on the wire
    assert (headers["group"], headers["group_index"], headers["parent_id"], headers["root_id"]) == (
        "g",
        3,
        "p",
        "r",
    )
    assert (headers["shadow"], headers["ignore_result"], headers["retries"], headers["origin"]) == (
        "nice name",
        True,
        4,
        "w1@host",
    )
    assert "expiration" not in message.properties  # no TTL: a worker must see it to record REVOKED
    assert json.loads(message.body)[2]["chain"] == call.chain


def test_expires_asks_no_broker_to_drop_the_message() -> None:
    expires = datetime.now(UTC) + timedelta(seconds=60)
    message = encode_task(TaskCall(id=TASK_ID, name="t", expires=expires))
    assert "expiration" not in message.properties and message.headers["expires"] == expires.isoformat()


def test_custom_headers_are_kept_but_our_fields_and_transport_headers_win() -> None:
    call = TaskCall(
        id=TASK_ID,
        name="proj.add",
        retries=2,
        headers={
            "x-tenant": "acme",
            "retries": 99,
            "task": "other",
            "compression": "application/x-bz2",
            "redelivered": True,
            "stamps": {"s": 1},
            "replaced_task_nesting": 2,
        },
    )
    headers = encode_task(call).headers
    assert headers["x-tenant"] == "acme"
    assert (headers["retries"], headers["task"]) == (2, "proj.add")
    assert "compression" not in headers and "redelivered" not in headers
    assert (headers["stamps"], headers["replaced_task_nesting"]) == ({"s": 1}, 2)
    assert decode_task(encode_task(call)).headers["x-tenant"] == "acme"


def test_compressed_message_carries_the_mime_type_and_decodes() -> None:
    call = TaskCall(id=TASK_ID, name="proj.add", args=["x" * 5000])
    message = encode_task(call, compression="zlib")
    assert message.headers["compression"] == "application/x-gzip"
    assert zlib.decompress(message.body).startswith(b'[["xxx')
    assert decode_task(message).args == ["x" * 5000]


def test_encode_refuses_a_body_over_the_limit() -> None:
    with pytest.raises(
        MessageTooLarge, match=r"is \d+ bytes, over the task_message_max_bytes limit of 100 bytes"
    ):
        encode_task(TaskCall(id=TASK_ID, name="proj.add", args=["x" * 200]), max_bytes=100)


def test_argsrepr_defaults_to_a_truncated_repr() -> None:
    headers = encode_task(TaskCall(id=TASK_ID, name="t", args=[list(range(10_000))], kwargs={"a": 1})).headers
    assert len(headers["argsrepr"]) == 1024
    assert headers["argsrepr"].startswith("([0, 1, 2") and headers["argsrepr"].endswith("...")
    assert headers["kwargsrepr"] == "{'a': 1}"
    given = TaskCall(id=TASK_ID, name="t", args=["secret"], argsrepr="(<hidden>,)", kwargsrepr="{}")
    assert encode_task(given).headers["argsrepr"] == "(<hidden>,)"


class _Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


CONTAINERS = {"a": [1, {2}], "b": frozenset([3]), "c": set(), "d": (), "e": {}}


@pytest.mark.parametrize(
    ("value", "maxlen", "expected"),
    [
        ((2, 3), 1024, "(2, 3)"),
        ((1,), 1024, "(1,)"),
        (CONTAINERS, 1024, repr(CONTAINERS)),
        ([_Unrepresentable()], 1024, "[<unrepresentable _Unrepresentable>]"),
        ("x" * 100, 10, "'xxxxxx..."),
        (b"\x00" * 100, 12, "b'\\x00\\x0..."),
    ],
    ids=["tuple", "one-tuple", "containers", "unrepresentable", "long-str", "long-bytes"],
)
def test_safe_repr(value: Any, maxlen: int, expected: str) -> None:
    assert safe_repr(value, maxlen) == expected


def test_safe_repr_of_cycles_and_huge_values_is_bounded() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert safe_repr(loop) == "[1, [...]]"
    assert len(safe_repr(["y" * 10_000_000] * 1_000_000, 50)) == 50
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    assert safe_repr(deep, 2000).endswith("]")


def test_msgpack_round_trip() -> None:
    call = TaskCall(id=TASK_ID, name="proj.add", args=[1, b"\xff", "s"], kwargs={"k": [1.5]})
    message = encode_task(call, serializer="msgpack")
    assert (message.content_type, message.content_encoding) == ("application/x-msgpack", "binary")
    decoded = decode_task(message, accept=["msgpack"])
    assert (decoded.args, decoded.kwargs) == ([1, b"\xff", "s"], {"k": [1.5]})


def test_time_values_are_accepted_in_every_reasonable_form() -> None:
    assert decode_task(celery_message(eta="2026-03-01T10:00:00")).eta == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert decode_task(celery_message(eta="2026-03-01T10:00:00Z")).eta == datetime(2026, 3, 1, 10, tzinfo=UTC)
    eta = decode_task(celery_message(eta="2026-03-01T12:00:00+02:00")).eta
    assert eta == datetime(2026, 3, 1, 10, tzinfo=UTC) and eta is not None and eta.tzinfo is UTC
    assert decode_task(celery_message(eta=0)).eta == datetime(1970, 1, 1, tzinfo=UTC)
    assert decode_task(celery_message(expires=1.5e9)).expires == datetime.fromtimestamp(1.5e9, UTC)
    assert decode_task(celery_message(eta="9999-12-31T00:00:00")).eta == datetime(9999, 12, 31, tzinfo=UTC)


def test_decodes_protocol_v1() -> None:
    body = {
        "task": "proj.add",
        "id": TASK_ID,
        "args": [2, 3],
        "kwargs": {"z": 1},
        "retries": 1,
        "eta": "2026-03-01T10:00:00",
        "expires": None,
        "utc": True,
        "callbacks": [{"task": "proj.cb"}],
        "errbacks": None,
        "timelimit": [30, 20],
        "taskset": "group-1",
        "chord": None,
    }
    message = Message(
        body=json.dumps(body).encode(), headers={}, properties={"reply_to": REPLY_TO, "priority": 3}
    )
    call = decode_task(message)
    assert (call.name, call.id, call.args, call.kwargs, call.retries) == (
        "proj.add",
        TASK_ID,
        [2, 3],
        {"z": 1},
        1,
    )
    assert call.eta == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert (call.time_limit, call.soft_time_limit) == (30, 20)
    assert call.group_id == "group-1"
    assert call.callbacks == [{"task": "proj.cb"}]
    assert (call.reply_to, call.priority) == (REPLY_TO, 3)


def test_v1_minimal_body_and_local_naive_times() -> None:
    minimal = Message(body=json.dumps({"task": "t", "id": TASK_ID}).encode(), headers={})
    call = decode_task(minimal)
    assert (call.args, call.kwargs, call.retries, call.eta) == ([], {}, 0, None)
    local = Message(
        body=json.dumps({"task": "t", "id": TASK_ID, "eta": "2026-03-01T10:00:00", "utc": False}).encode(),
        headers={},
    )
    assert decode_task(local).eta == datetime(2026, 3, 1, 10).astimezone(UTC)


def msg(
    body: Any = None, content_type: str = "application/json", properties: Any = None, **headers: Any
) -> Message:
    """A Celery message with some headers changed; ``body`` given as a value is JSON-encoded."""
    message = celery_message(**headers)
    if body is not None:
        message.body = body if isinstance(body, bytes) else json.dumps(body).encode()
    message.content_type = content_type
    if properties is not None:
        message.properties.update(properties)
    return message


def untyped(**fields: Any) -> Message:
    """A message built without type checks: what a broken transport might hand over."""
    return Message(**fields)


NAN = math.nan
E = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

BAD_MESSAGES: list[tuple[str, Callable[[], Message], str]] = [
    ("empty body", lambda: msg(b""), "message body is empty"),
    ("body not bytes", lambda: untyped(body="[]", headers={}), "body must be bytes, got string"),
    (
        "headers not a mapping",
        lambda: untyped(body=CELERY_BODY, headers=None),
        "headers must be a mapping, got null",
    ),
    (
        "properties not a mapping",
        lambda: untyped(body=b"[]", headers={}, properties=[]),
        "must be a mapping, got list",
    ),
    ("no content type", lambda: msg(content_type=""), "declares no content type"),
    ("unknown content type", lambda: msg(content_type="text/csv"), "not accepted"),
    ("truncated json", lambda: msg(CELERY_BODY[:-5]), "invalid JSON"),
    ("invalid utf-8", lambda: msg(b'[["\xff"], {}, {}]'), "not valid UTF-8"),
    ("deep nesting", lambda: msg(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    (
        "body is a mapping",
        lambda: msg({"args": []}),
        r"v2 body must be a list \[args, kwargs, embed\], got mapping",
    ),
    ("body is [args, kwargs]", lambda: msg([[2, 3], {}]), r"\[args, kwargs\] without the third item, embed"),
    ("body has 4 items", lambda: msg([[], {}, {}, 1]), "must have 3 items .* got 4"),
    ("args not a list", lambda: msg([{"a": 1}, {}, E]), "args must be a list, got mapping"),
    ("kwargs not a mapping", lambda: msg([[], [1], E]), "kwargs must be a mapping, got list"),
    ("kwargs key not a string", lambda: msg(b"- []\n- {1: 2}\n- {}\n", "application/x-yaml"), "not accepted"),
    ("embed not a mapping", lambda: msg([[], {}, None]), "embed .* must be a mapping, got null"),
    ("callbacks not a list", lambda: msg([[], {}, {"callbacks": "x"}]), "embed 'callbacks' must be a list"),
    (
        "callback not a mapping",
        lambda: msg([[], {}, {"errbacks": [1]}]),
        "embed 'errbacks' item 0 must be a signature",
    ),
    (
        "chord without task",
        lambda: msg([[], {}, {"chord": {"args": []}}]),
        "embed 'chord' is a signature without a 'task'",
    ),
    (
        "chain item without task",
        lambda: msg([[], {}, {"chain": [{"task": 1}]}]),
        "embed 'chain' item 0 is a signature without",
    ),
    ("id missing", lambda: msg(id=None), r"task id \(header 'id'\) is missing"),
    ("id not a string", lambda: msg(id=5), "task id .* must be a string or null, got int"),
    ("id empty", lambda: msg(id=""), "task id .* is empty"),
    ("id too long", lambda: msg(id="x" * 256), "256 characters long, over the limit of 255"),
    ("id with CRLF", lambda: msg(id="a\r\nb"), "forbidden character"),
    ("task name missing", lambda: msg(task=None), r"task name \(header 'task'\) is missing"),
    ("task name not a string", lambda: msg(task=["t"]), "task name .* must be a string or null, got list"),
    ("task name with space", lambda: msg(task="proj add"), "contains whitespace"),
    ("task name with tab", lambda: msg(task="proj\tadd"), "contains whitespace"),
    ("task name with CRLF", lambda: msg(task="proj\r\nadd"), "forbidden character"),
    ("task name with NUL", lambda: msg(task="proj\x00add"), "forbidden character"),
    ("task name too long", lambda: msg(task="t" * 256), "over the limit of 255"),
    ("eta unparseable", lambda: msg(eta="tomorrow"), "header 'eta' is not an ISO 8601 date-time: 'tomorrow'"),
    (
        "eta NaN",
        lambda: msg(eta=NAN),
        "header 'eta' must be a date-time or a non-negative epoch timestamp, got nan",
    ),
    ("eta negative epoch", lambda: msg(eta=-5), "non-negative epoch timestamp, got -5"),
    ("eta epoch out of range", lambda: msg(eta=1e20), "out of range"),
    (
        "eta overflows in UTC",
        lambda: msg(eta="9999-12-31T23:00:00-05:00"),
        "out of range once converted to UTC",
    ),
    ("eta a boolean", lambda: msg(eta=True), "must be an ISO 8601 string or null, got boolean"),
    (
        "expires a list",
        lambda: msg(expires=[]),
        "header 'expires' must be an ISO 8601 string or null, got list",
    ),
    ("retries negative", lambda: msg(retries=-1), "header 'retries' must not be negative"),
    ("retries a string", lambda: msg(retries="1"), "header 'retries' must be an integer, got string"),
    ("retries a float", lambda: msg(retries=1.5), "header 'retries' must be an integer, got float"),
    ("retries a boolean", lambda: msg(retries=True), "header 'retries' must be an integer, got boolean"),
    ("priority too high", lambda: msg(properties={"priority": 256}), "priority .* from 0 to 255, got 256"),
    ("priority negative", lambda: msg(properties={"priority": -1}), "priority .* from 0 to 255"),
    ("priority a string", lambda: msg(properties={"priority": "5"}), "priority .* from 0 to 255"),
    (
        "reply_to with LF",
        lambda: msg(properties={"reply_to": "a\nb"}),
        "reply_to property contains a forbidden",
    ),
    ("timelimit one item", lambda: msg(timelimit=[1]), r"header 'timelimit' must be a pair \[hard, soft\]"),
    ("timelimit a string", lambda: msg(timelimit="30"), "must be a pair"),
    ("timelimit a word", lambda: msg(timelimit=[1, "x"]), "soft limit must be a number of seconds or null"),
    ("timelimit negative", lambda: msg(timelimit=[-1, None]), "hard limit must be a finite, non-negative"),
    ("timelimit NaN", lambda: msg(timelimit=[NAN, None]), "hard limit must be a finite, non-negative"),
    ("group_index negative", lambda: msg(group_index=-1), "header 'group_index' must not be negative"),
    ("root_id with CRLF", lambda: msg(root_id="r\r\n"), "header 'root_id' contains a forbidden character"),
    ("parent_id a number", lambda: msg(parent_id=3), "header 'parent_id' must be a string or null"),
    ("group with NUL", lambda: msg(group="g\x00"), "header 'group' contains a forbidden character"),
    (
        "origin with CRLF",
        lambda: msg(origin="gen1@vm\r\nINFO forged"),
        "header 'origin' contains a forbidden",
    ),
    ("shadow not a string", lambda: msg(shadow={}), "header 'shadow' must be a string or null"),
    (
        "argsrepr with NUL",
        lambda: msg(argsrepr="(\x00)"),
        r"header 'argsrepr' contains a forbidden character \(NUL\)",
    ),
    ("lang not a string", lambda: msg(lang=1), "header 'lang' must be a string or null"),
    (
        "ignore_result a string",
        lambda: msg(ignore_result="yes"),
        "header 'ignore_result' must be true or false",
    ),
    ("stamped_headers a string", lambda: msg(stamped_headers="x"), "header 'stamped_headers' must be a list"),
    ("stamps a list", lambda: msg(stamps=[]), "header 'stamps' must be a mapping or null"),
    ("nesting negative", lambda: msg(replaced_task_nesting=-1), "header 'replaced_task_nesting' must not"),
    ("compression not a string", lambda: msg(compression=5), "header 'compression' must be a MIME type"),
    ("compression unknown", lambda: msg(compression="application/x-snappy"), "unsupported compression"),
    ("compression corrupt", lambda: msg(compression="application/x-gzip"), "corrupt application/x-gzip body"),
    (
        "v1 body is a list",
        lambda: Message(body=CELERY_BODY, headers={}),
        "no 'task' header, but its body is a list",
    ),
    (
        "v1 body is a string",
        lambda: Message(body=b'"x"', headers={}),
        "v1 body must be a mapping, got string",
    ),
    (
        "v1 id missing",
        lambda: Message(body=b'{"task": "t"}', headers={}),
        r"task id \(body 'id'\) is missing",
    ),
    (
        "v1 utc not a boolean",
        lambda: Message(body=b'{"task": "t", "id": "i", "utc": 1}', headers={}),
        "body 'utc' must be true or false",
    ),
    (
        "v1 timelimit bad",
        lambda: Message(body=b'{"task": "t", "id": "i", "timelimit": 3}', headers={}),
        "body 'timelimit' must be a pair",
    ),
]


@pytest.mark.parametrize(
    ("maker", "reason"), [case[1:] for case in BAD_MESSAGES], ids=[case[0] for case in BAD_MESSAGES]
)
def test_bad_messages_raise_decode_error_with_a_precise_reason(
    maker: Callable[[], Message], reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_task(maker())


def test_kwargs_keys_must_be_strings() -> None:
    message = msg(b"- []\n- {1: 2}\n- {}\n", "application/x-yaml")
    with pytest.raises(DecodeError, match="kwargs keys must be strings, got int 1"):
        decode_task(message, accept=["yaml"])


def test_disallowed_content_type_is_content_disallowed() -> None:
    with pytest.raises(ContentDisallowed, match=r"application/x-python-serialize.*accept_content"):
        decode_task(msg(b"\x80\x04N.", "application/x-python-serialize"))


def test_oversized_bodies_are_refused_before_and_after_decompression() -> None:
    with pytest.raises(
        MessageTooLarge, match=r"message body is \d+ bytes, over the task_message_max_bytes limit of 10"
    ):
        decode_task(celery_message(), max_bytes=10)
    bomb = zlib.compress(json.dumps([["x" * 1_000_000], {}, E]).encode())
    assert len(bomb) < 5000
    with pytest.raises(
        MessageTooLarge, match="decompressed body is over the task_message_max_bytes limit of 5000"
    ):
        decode_task(msg(bomb, compression="application/x-gzip"), max_bytes=5000)


# -- properties ------------------------------------------------------------------------------------------

json_leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text()
)
extended_leaves = (
    json_leaves
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=20)
)


def nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=8,
    )


ids = st.uuids().map(str)
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC))
seconds = st.none() | st.floats(0, 1e6) | st.integers(0, 10**6)
task_calls = st.builds(
    TaskCall,
    id=ids,
    name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:]{0,60}", fullmatch=True),
    args=st.lists(nested(extended_leaves), max_size=4),
    kwargs=st.dictionaries(st.text(max_size=10), nested(extended_leaves), max_size=4),
    callbacks=st.none() | st.lists(st.fixed_dictionaries({"task": st.text(max_size=10)}), max_size=2),
    chord=st.none()
    | st.fixed_dictionaries({"task": st.text(max_size=10), "args": st.lists(json_leaves, max_size=2)}),
    eta=st.none() | moments,
    expires=st.none() | moments,
    retries=st.integers(0, 1000),
    time_limit=seconds,
    soft_time_limit=seconds,
    root_id=st.none() | ids,
    parent_id=st.none() | ids,
    group_id=st.none() | ids,
    group_index=st.none() | st.integers(0, 1000),
    ignore_result=st.booleans(),
    reply_to=st.none() | ids,
    priority=st.none() | st.integers(0, 255),
    headers=st.dictionaries(
        st.text(min_size=1, max_size=8).map(lambda key: "x-" + key), json_leaves, max_size=3
    ),
)


ROUND_TRIP_FIELDS = [
    "id", "name", "args", "kwargs", "callbacks", "errbacks", "chain", "chord", "eta", "expires", "retries",
    "time_limit", "soft_time_limit", "parent_id", "group_id", "group_index", "ignore_result", "reply_to",
]  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(task_calls, st.sampled_from([None, "zlib", "bzip2", "lzma"]))
def test_encode_then_decode_round_trips_through_the_envelope(call: TaskCall, compression: str | None) -> None:
    message = encode_task(call, compression=compression)
    decoded = decode_task(from_envelope(to_envelope(message, routing_key="celery")))
    for field in ROUND_TRIP_FIELDS:
        assert getattr(decoded, field) == getattr(call, field), field
    assert decoded.root_id == (call.root_id or call.id)
    assert decoded.priority == (call.priority or 0)  # the envelope defaults priority to 0
    assert decoded.headers.items() >= call.headers.items()


v2_header_values = st.fixed_dictionaries(
    {"task": json_leaves | st.just("proj.add"), "id": json_leaves | st.just(TASK_ID)},
    optional={key: nested(json_leaves) for key in CELERY_HEADER_KEYS if key not in ("task", "id")},
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=200) | nested(json_leaves).map(lambda value: json.dumps(value).encode()),
    headers=st.just(celery_headers()) | v2_header_values | st.just({}),
    properties=st.dictionaries(st.sampled_from(["priority", "reply_to"]), nested(json_leaves), max_size=2),
)
def test_arbitrary_messages_decode_or_raise_decode_error(body: bytes, headers: Any, properties: Any) -> None:
    with contextlib.suppress(DecodeError):
        decode_task(Message(body=body, headers=dict(headers), properties=properties))


@settings(max_examples=200, deadline=None)
@given(
    args=nested(json_leaves),
    kwargs=nested(json_leaves),
    embed=nested(json_leaves) | st.fixed_dictionaries({}, optional=dict.fromkeys(E, nested(json_leaves))),
    headers=v2_header_values,
)
def test_arbitrary_v2_parts_decode_or_raise_decode_error(
    args: Any, kwargs: Any, embed: Any, headers: Any
) -> None:
    body = json.dumps([args, kwargs, embed]).encode()
    with contextlib.suppress(DecodeError):
        decode_task(Message(body=body, headers=headers))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | nested(json_leaves).map(lambda value: json.dumps({"body": value}).encode()))
def test_arbitrary_envelopes_decode_or_raise_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_task(from_envelope(raw))


def test_decimal_and_uuid_arguments_survive_as_celery_json() -> None:
    call = TaskCall(id=TASK_ID, name="t", args=[Decimal("0.1"), uuid.UUID(TASK_ID)])
    body = json.loads(encode_task(call).body)
    assert body[0] == [
        {"__type__": "decimal", "__value__": "0.1"},
        {"__type__": "uuid", "__value__": {"hex": uuid.UUID(TASK_ID).hex}},
    ]

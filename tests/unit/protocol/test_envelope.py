"""kombu's JSON envelope: the exact shape written, and strict reading of what comes back."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.exceptions import DecodeError
from celeriac.protocol import Message, from_envelope, to_envelope

BODY = b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
HEADERS = {"lang": "py", "task": "proj.add", "id": "0f4b5e4c-8a4e-4e55-9d44-3f0a3c0c8d1a"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def make_message(**properties: Any) -> Message:
    return Message(
        body=BODY, headers=dict(HEADERS), properties={"correlation_id": HEADERS["id"], **properties}
    )


def test_envelope_has_kombus_shape() -> None:
    envelope = json.loads(to_envelope(make_message(reply_to="r-1"), routing_key="celery"))
    assert list(envelope) == ["body", "content-encoding", "content-type", "headers", "properties"]
    assert base64.b64decode(envelope["body"]) == BODY
    assert envelope["content-encoding"] == "utf-8"
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"] == HEADERS
    properties = envelope["properties"]
    tag = properties.pop("delivery_tag")
    assert uuid.UUID(tag).version == 4
    assert properties == {
        "correlation_id": HEADERS["id"],
        "reply_to": "r-1",
        "delivery_info": {"exchange": "", "routing_key": "celery"},
        "priority": 0,
        "delivery_mode": 2,
        "body_encoding": "base64",
    }


def test_given_properties_are_kept_and_delivery_info_replaced() -> None:
    message = make_message(
        priority=5,
        delivery_mode=1,
        expiration="60000",
        delivery_info={"exchange": "old", "routing_key": "old", "redelivered": True},
    )
    properties = json.loads(to_envelope(message, routing_key="q", exchange="ex"))["properties"]
    assert properties["priority"] == 5
    assert properties["delivery_mode"] == 1
    assert properties["expiration"] == "60000"
    assert properties["delivery_info"] == {"exchange": "ex", "routing_key": "q"}


def test_every_envelope_gets_a_fresh_delivery_tag() -> None:
    message = make_message(delivery_tag="reused")
    tags = {json.loads(to_envelope(message, routing_key="q"))["properties"]["delivery_tag"] for _ in range(3)}
    assert len(tags) == 3
    assert "reused" not in tags


def test_reads_an_envelope_as_kombu_writes_it() -> None:
    raw = json.dumps(
        {
            "body": base64.b64encode(BODY).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": HEADERS,
            "properties": {
                "correlation_id": HEADERS["id"],
                "reply_to": "5b5ea1a1-5cf3-3d4c-8a9b-0d2b1c5e7f11",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "celery"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": "7d1a2a7e-5d4b-4a57-9a3c-7e0f5a3b2c1d",
            },
        },
        indent=None,
    ).encode()
    message = from_envelope(raw)
    assert message.body == BODY
    assert message.headers == HEADERS
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.task_id == HEADERS["id"]
    assert message.priority == 0
    assert "body_encoding" not in message.properties
    assert message.properties["delivery_info"]["routing_key"] == "celery"


def test_reads_a_plain_body_without_body_encoding() -> None:
    raw = json.dumps({"body": BODY.decode(), "content-type": "application/json", "headers": HEADERS})
    message = from_envelope(raw.encode())
    assert message.body == BODY
    assert message.properties == {}


def test_missing_optional_parts_take_defaults() -> None:
    message = from_envelope(b'{"body": "e30=", "properties": {"body_encoding": "base64"}}')
    assert message.body == b"{}"
    assert message.headers == {}
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "message envelope is not valid: invalid JSON"),
        (b'{"body": "x"', "message envelope is not valid: invalid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"body"', "must be a JSON object, got string"),
        (b"null", "must be a JSON object, got null"),
        (b'{"headers": {}}', "has no body"),
        (b'{"body": 12}', "body must be a string, got int"),
        (b'{"body": "!!!", "properties": {"body_encoding": "base64"}}', "not valid base64"),
        (b'{"body": "e30", "properties": {"body_encoding": "base64"}}', "not valid base64"),
        (b'{"body": "x", "properties": {"body_encoding": "rot13"}}', "unsupported body_encoding 'rot13'"),
        (b'{"body": "x", "headers": [1]}', "headers must be a JSON object, got list"),
        (b'{"body": "x", "properties": "p"}', "properties must be a JSON object, got string"),
        (b'{"body": "x", "content-type": 5}', "content-type must be a string, got int"),
        (b'{"body": "x", "content-encoding": []}', "content-encoding must be a string, got list"),
        (b'{"body": "\\ud800"}', "cannot be UTF-8"),
        (b"[" * 100_000, "nested too deeply|invalid JSON"),
    ],
)
def test_malformed_envelopes_raise_decode_error_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        from_envelope(raw)


def test_unserializable_header_is_a_type_error() -> None:
    message = Message(body=b"x", headers={"bad": {1, 2}})
    with pytest.raises(TypeError):
        to_envelope(message, routing_key="q")


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(max_size=300),
    headers=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    content_type=st.sampled_from(["application/json", "application/x-msgpack"]),
    priority=st.none() | st.integers(0, 255),
    routing_key=st.text(max_size=20),
)
def test_envelope_round_trip(
    body: bytes, headers: dict[str, Any], content_type: str, priority: int | None, routing_key: str
) -> None:
    message = Message(
        body=body, headers=headers, content_type=content_type, properties={"priority": priority}
    )
    decoded = from_envelope(to_envelope(message, routing_key=routing_key))
    assert decoded.body == body
    assert decoded.headers == headers
    assert decoded.content_type == content_type
    assert decoded.priority == (priority or 0)
    assert decoded.properties["delivery_info"] == {"exchange": "", "routing_key": routing_key}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode()))
def test_arbitrary_input_decodes_or_raises_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        from_envelope(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "body": json_values,
            "headers": json_values,
            "properties": st.fixed_dictionaries({}, optional={"body_encoding": json_values}) | json_values,
            "content-type": json_values,
            "content-encoding": json_values,
        },
    )
)
def test_arbitrary_envelope_objects_decode_or_raise_decode_error(envelope: dict[str, Any]) -> None:
    with contextlib.suppress(DecodeError):
        from_envelope(json.dumps(envelope).encode())


def test_the_ids_of_an_unreadable_envelope_are_read_as_far_as_they_can_be():
    from celeriac.protocol.envelope import readable_ids

    broken = (
        b'{"body": "%%%", "headers": {"id": "t-1"}, '
        b'"properties": {"body_encoding": "base64", "reply_to": "r"}}'
    )
    assert readable_ids(broken) == ("t-1", "r")
    assert readable_ids(b'{"headers": [1], "properties": {"correlation_id": "t-2"}}') == ("t-2", "")
    assert readable_ids(b'{"headers": {"id": 7}, "properties": {"correlation_id": ""}}') == (None, "")
    assert readable_ids(b"\xff not json") == (None, "")
    assert readable_ids(b"[1, 2]") == (None, "")

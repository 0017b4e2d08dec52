"""Task messages across the two: what Celery 5.7 sends celeriac reads, and what celeriac sends Celery runs.

* The real Celery client publishes on kombu's ``memory://`` transport (``send_task``, canvas, protocol
  v1, compression, serializers); the stored envelope, as the Redis transport would hold it, goes through
  celeriac's ``from_envelope`` and ``decode_task``, and an in-process celeriac worker runs it.
* celeriac's ``encode_task``/``to_envelope`` (and its real client, for a chain) write a message that
  kombu's virtual channel hands to Celery's worker-side ``Request``, as a Celery worker's consumer
  does for a protocol v2 message; ``Request.execute()`` runs it in-process.

No live Celery worker: celeriac has no broker a Celery worker reads yet (only SQL and memory, in a
layout of its own), and kombu's ``memory://`` transport lives in one process, so a Celery client or
worker on it cannot share a queue with another process. Live Celery worker <-> celeriac worker tests
come with the Redis broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery.worker.request import Request
from kombu.message import Message as KombuMessage
from kombu.serialization import prepare_accept_content
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from celeriac import Celeriac, signature
from celeriac import chain as celeriac_chain
from celeriac.brokers import create_broker
from celeriac.protocol import TaskCall, decode_task, encode_task, from_envelope, to_envelope
from celeriac.testing import start_worker

WAIT = 10.0

#: Values kombu's JSON writes with ``__type__`` markers; each must come back equal and of its type.
MARKED: list[Any] = [
    datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    datetime(2024, 1, 2, 3, 4, 5, 678),
    date(2024, 1, 2),
    time(3, 4, 5, 6),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    b"utf-8 bytes",
    b"\xff\x00 not utf-8",
]

#: kombu's compression names and the MIME type its ``compression`` header carries for each.
COMPRESSIONS = [
    ("zlib", "application/x-gzip"),
    ("bzip2", "application/x-bz2"),
    ("lzma", "application/x-lzma"),
]
CONTENT_TYPES = {"json": "application/json", "msgpack": "application/x-msgpack", "yaml": "application/x-yaml"}


def take_published(app: Celery) -> bytes:
    """Pop the next message Celery published on its default queue, as the Redis transport stores it.

    kombu's virtual transports keep a message as one envelope (body, headers, properties), which the
    Redis transport writes with kombu's JSON. The memory transport has no public way to read that
    stored form, hence the channel's ``_get``.
    """
    with app.connection_for_write() as conn:
        stored = conn.default_channel._get(app.conf.task_default_queue)
    return kombu_dumps(stored).encode("utf-8")


def take_all_published(app: Celery) -> list[bytes]:
    with app.connection_for_write() as conn:
        size = conn.default_channel._size(app.conf.task_default_queue)
    return [take_published(app) for _ in range(size)]


def deliver(app: Celery, envelope: bytes) -> KombuMessage:
    """Store ``envelope`` on Celery's default queue and receive it as a Celery worker's consumer does.

    Like kombu's ``Consumer``, this restricts the message to the app's ``accept_content``.
    """
    queue = app.conf.task_default_queue
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel._put(queue, kombu_loads(envelope))
        message: KombuMessage | None = channel.basic_get(queue, no_ack=True)
    assert message is not None
    message.accept = prepare_accept_content(app.conf.accept_content)
    return message


def celery_request(app: Celery, envelope: bytes) -> Request:
    """The ``Request`` a Celery worker makes for a protocol v2 message (``celery.worker.strategy``)."""
    message = deliver(app, envelope)
    assert "task" in message.headers  # the consumer routes a message with a task header as v2
    return Request(message, app=app, task=app.tasks[message.headers["task"]])


def decode(envelope: bytes, accept: Collection[str] = ("json",)) -> TaskCall:
    return decode_task(from_envelope(envelope), accept=accept)


def envelope_of(call: TaskCall, app: Celery, **encoding: Any) -> bytes:
    return to_envelope(encode_task(call, **encoding), routing_key=app.conf.task_default_queue)


def _add_tasks(app: Celery) -> None:
    # shared=False: a shared task would be added to every Celery app made later in this process.
    @app.task(name="interop.add", shared=False)
    def add(x: int, y: int, z: int = 0) -> int:
        return x + y + z

    @app.task(name="interop.sum", shared=False)
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="interop.echo", shared=False)
    def echo(*args: Any, **kwargs: Any) -> Any:
        return [list(args), kwargs]


# -- Celery sends, celeriac decodes ---------------------------------------------------------------------


def test_celery_send_task_decodes_to_the_same_task_call(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery()
    eta = datetime.now(UTC) + timedelta(minutes=5)
    expires = eta + timedelta(hours=1)
    task_id = str(uuid.uuid4())
    celery_app.send_task(
        "interop.add",
        (2, 3),
        {"z": 4},
        task_id=task_id,
        eta=eta,
        expires=expires,
        time_limit=30,
        soft_time_limit=20,
        root_id="root-1",
        parent_id="parent-1",
        group_id="group-1",
        group_index=4,
        retries=2,
        shadow="add-shadow",
        priority=5,
        link=celery_app.signature("interop.cb", (1,)),
        link_error=celery_app.signature("interop.eb", kwargs={"why": "x"}),
        headers={"x-tenant": "acme"},
    )

    call = decode(take_published(celery_app))

    assert (call.id, call.name, call.args, call.kwargs) == (task_id, "interop.add", [2, 3], {"z": 4})
    assert (call.eta, call.expires) == (eta, expires)
    assert (call.time_limit, call.soft_time_limit) == (30, 20)  # Celery's [hard, soft]
    assert (call.root_id, call.parent_id) == ("root-1", "parent-1")
    assert (call.group_id, call.group_index, call.retries) == ("group-1", 4, 2)
    assert (call.shadow, call.priority, call.reply_to) == ("add-shadow", 5, celery_app.thread_oid)
    assert (call.argsrepr, call.kwargsrepr) == ("(2, 3)", "{'z': 4}")
    assert call.origin is not None and call.origin.startswith("gen")
    assert call.ignore_result is None  # Celery's send_task writes null: the task's own option decides
    assert call.callbacks is not None and [(s["task"], s["args"]) for s in call.callbacks] == [
        ("interop.cb", [1])
    ]
    assert call.errbacks is not None and [(s["task"], s["kwargs"]) for s in call.errbacks] == [
        ("interop.eb", {"why": "x"})
    ]
    assert (call.chain, call.chord) == (None, None)
    assert call.headers["x-tenant"] == "acme"


def test_celery_defaults_decode_as_celery_means_them(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery()
    sent = celery_app.send_task("interop.add", (1, 2))

    call = decode(take_published(celery_app))

    assert call.id == sent.id
    assert call.root_id == sent.id  # a task without a parent is its own workflow's root
    assert (call.eta, call.expires, call.parent_id, call.group_id, call.group_index) == (None,) * 5
    assert (call.time_limit, call.soft_time_limit, call.retries) == (None, None, 0)


def test_celery_chain_decodes_with_the_rest_reversed(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery()
    _add_tasks(celery_app)
    add = celery_app.tasks["interop.add"]
    last = chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()

    call = decode(take_published(celery_app))

    assert (call.name, call.args) == ("interop.add", [1, 1])
    assert call.chain is not None
    # The next task is the last item, and every link carries the id its result will have.
    assert [(s["task"], s["args"]) for s in call.chain] == [("interop.add", [3]), ("interop.add", [2])]
    assert [s["options"]["task_id"] for s in call.chain] == [last.id, last.parent.id]
    assert call.id == last.parent.parent.id


def test_celery_group_members_decode_with_group_id_and_index(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery()
    _add_tasks(celery_app)
    add = celery_app.tasks["interop.add"]
    result = group(add.s(1, 1), add.s(2, 2)).apply_async()

    calls = [decode(envelope) for envelope in take_all_published(celery_app)]

    assert [(c.args, c.group_id, c.group_index) for c in calls] == [
        ([1, 1], result.id, 0),
        ([2, 2], result.id, 1),
    ]
    assert [c.id for c in calls] == [r.id for r in result.results]


def test_celery_chord_decodes_with_its_body_embedded(
    make_celery: Callable[..., Celery], tmp_path: Path
) -> None:
    # The database backend has no native chord join, so Celery also sends celery.chord_unlock.
    celery_app = make_celery(result_backend=f"db+sqlite:///{tmp_path}/chord.sqlite3")
    _add_tasks(celery_app)
    add, total = celery_app.tasks["interop.add"], celery_app.tasks["interop.sum"]
    result = chord([add.s(1, 1), add.s(2, 2)])(total.s())

    calls = [decode(envelope) for envelope in take_all_published(celery_app)]

    header = [c for c in calls if c.name == "interop.add"]
    assert [(c.args, c.group_index) for c in header] == [([1, 1], 0), ([2, 2], 1)]
    for call in header:
        assert call.group_id == result.parent.id
        assert call.chord is not None
        assert (call.chord["task"], call.chord["options"]["task_id"]) == ("interop.sum", result.id)
    unlock = [c for c in calls if c.name == "celery.chord_unlock"]
    assert len(unlock) == 1 and unlock[0].args[0] == result.parent.id


@pytest.mark.parametrize(("compression", "mime"), COMPRESSIONS)
def test_celery_compressed_message_decodes(
    make_celery: Callable[..., Celery], compression: str, mime: str
) -> None:
    celery_app = make_celery()
    args = ["x" * 2000, list(range(100))]
    celery_app.send_task("interop.echo", args, {"k": "v"}, compression=compression)

    call = decode(take_published(celery_app))

    assert call.headers["compression"] == mime
    assert (call.args, call.kwargs) == (args, {"k": "v"})


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml"])
def test_celery_message_in_each_serializer_decodes(
    make_celery: Callable[..., Celery], serializer: str
) -> None:
    celery_app = make_celery()
    celery_app.send_task("interop.echo", (1, "two", [3.5, None]), {"k": True}, serializer=serializer)

    call = decode(take_published(celery_app), accept=[serializer])

    assert (call.args, call.kwargs) == ([1, "two", [3.5, None]], {"k": True})


def test_celery_json_type_markers_decode_to_the_same_values(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery()
    celery_app.send_task("interop.echo", MARKED, {"when": MARKED[0], "amount": MARKED[6]})

    call = decode(take_published(celery_app))

    assert call.args == MARKED
    assert [type(v) for v in call.args] == [type(v) for v in MARKED]
    assert call.args[0].tzinfo is not None and call.args[2].tzinfo is None
    assert call.kwargs == {"when": MARKED[0], "amount": MARKED[6]}


def test_celery_protocol_v1_message_decodes(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery(task_protocol=1)
    eta = datetime.now(UTC) + timedelta(minutes=5)
    expires = eta + timedelta(hours=1)
    sent = celery_app.send_task(
        "interop.add",
        (1, 2),
        {"z": 3},
        eta=eta,
        expires=expires,
        time_limit=30,
        soft_time_limit=20,
        group_id="group-1",
        retries=2,
        link=celery_app.signature("interop.cb"),
    )

    envelope = take_published(celery_app)
    call = decode(envelope)

    assert "task" not in kombu_loads(envelope)["headers"]  # v1: everything is in the body
    assert (call.id, call.name, call.args, call.kwargs) == (sent.id, "interop.add", [1, 2], {"z": 3})
    assert (call.eta, call.expires) == (eta, expires)
    assert (call.time_limit, call.soft_time_limit) == (30, 20)
    assert (call.group_id, call.retries) == ("group-1", 2)
    assert call.callbacks is not None and [s["task"] for s in call.callbacks] == ["interop.cb"]


# -- Celery sends, a celeriac worker runs ---------------------------------------------------------------


def publish_to(app: Celeriac, envelope: bytes) -> None:
    """Put the message in ``envelope`` on ``app``'s default queue, headers and body as Celery wrote them."""

    async def publish() -> None:
        broker = create_broker(app.broker_url)
        try:
            await broker.publish(app.conf.task_default_queue, from_envelope(envelope))
        finally:
            await broker.close()

    asyncio.run(publish())


@pytest.mark.parametrize("protocol", [1, 2], ids=["v1", "v2"])
def test_celeriac_worker_runs_a_message_sent_by_celery(
    make_celery: Callable[..., Celery], make_celeriac: Callable[..., Celeriac], protocol: int
) -> None:
    celery_app = make_celery(task_protocol=protocol)
    app = make_celeriac(backend=f"memory://interop-{uuid.uuid4().hex[:12]}")

    @app.task(name="interop.add")
    def add(x: int, y: int, z: int = 0) -> int:
        return x + y + z

    sent = celery_app.send_task("interop.add", (2, 3), {"z": 4}, expires=600, time_limit=30)
    publish_to(app, take_published(celery_app))
    with start_worker(app):
        assert app.AsyncResult(sent.id).get(timeout=WAIT) == 9


def test_celeriac_worker_applies_the_task_ignore_result_when_celery_leaves_it_unset(
    make_celery: Callable[..., Celery], make_celeriac: Callable[..., Celeriac]
) -> None:
    # Celery's send_task writes ignore_result null: "the worker decides". A Celery worker then uses
    # the task's ignore_result (celery/worker/request.py, Request.__init__).
    celery_app = make_celery()
    app = make_celeriac(backend=f"memory://interop-{uuid.uuid4().hex[:12]}")

    @app.task(name="interop.quiet", ignore_result=True)
    def quiet() -> str:
        return "should not be stored"

    @app.task(name="interop.marker")
    def marker() -> str:
        return "done"

    quiet_id = celery_app.send_task("interop.quiet").id
    publish_to(app, take_published(celery_app))
    marker_id = celery_app.send_task("interop.marker").id
    publish_to(app, take_published(celery_app))
    with start_worker(app, concurrency=1):
        # One slot: once the marker sent after it is done, the quiet task has run and stored or not.
        assert app.AsyncResult(marker_id).get(timeout=WAIT) == "done"
    assert app.AsyncResult(quiet_id).state == "PENDING"


# -- celeriac sends, Celery's worker side reads and runs ------------------------------------------------


def test_celeriac_message_is_read_by_a_celery_worker_request(make_celery: Callable[..., Celery]) -> None:
    celery_app = make_celery()
    _add_tasks(celery_app)
    eta = datetime.now(UTC) + timedelta(minutes=5)
    expires = eta + timedelta(hours=1)
    call = TaskCall(
        id=str(uuid.uuid4()),
        name="interop.add",
        args=[2, 3],
        kwargs={"z": 4},
        eta=eta,
        expires=expires,
        retries=2,
        time_limit=30,
        soft_time_limit=20,
        root_id="root-1",
        parent_id="parent-1",
        group_id="group-1",
        group_index=4,
        shadow="add-shadow",
        reply_to="reply-queue",
        priority=5,
        headers={"x-tenant": "acme"},
    )

    request = celery_request(celery_app, envelope_of(call, celery_app))

    assert (request.id, request.type, request.name) == (call.id, "interop.add", "add-shadow")
    assert (request.args, request.kwargs) == ([2, 3], {"z": 4})
    assert (request.eta, request.expires) == (eta, expires)
    assert tuple(request.time_limits) == (30, 20)  # Celery's pool reads (hard, soft)
    assert (request.root_id, request.parent_id) == ("root-1", "parent-1")
    assert (request.argsrepr, request.kwargsrepr) == ("(2, 3)", "{'z': 4}")
    assert (request.reply_to, request.correlation_id) == ("reply-queue", call.id)
    assert request.delivery_info["priority"] == 5
    assert request.delivery_info["routing_key"] == celery_app.conf.task_default_queue
    headers = request.request_dict
    assert (headers["group"], headers["group_index"], headers["retries"]) == ("group-1", 4, 2)
    assert headers["x-tenant"] == "acme"
    assert headers["ignore_result"] is None  # a call made without one leaves it to the task, as Celery's does
    assert headers["origin"].startswith("gen")
    assert not request.revoked()  # not expired


def test_celery_runs_a_celeriac_message_and_celeriac_reads_the_result(
    make_celery: Callable[..., Celery], make_celeriac: Callable[..., Celeriac], tmp_path: Path
) -> None:
    results = f"db+sqlite:///{tmp_path}/results.sqlite3"
    celery_app = make_celery(result_backend=results)
    _add_tasks(celery_app)
    call = TaskCall(
        id=str(uuid.uuid4()),
        name="interop.add",
        args=[2, 3],
        kwargs={"z": 4},
        root_id="root-1",
        callbacks=[signature("interop.add", (10,))],
    )

    request = celery_request(celery_app, envelope_of(call, celery_app))

    assert request.execute() == 9
    assert make_celeriac(backend=results).AsyncResult(call.id).get(timeout=WAIT) == 9
    # Celery's worker sent the celeriac-embedded callback, with the result prepended.
    callback = decode(take_published(celery_app))
    assert (callback.name, callback.args) == ("interop.add", [9, 10])
    assert (callback.parent_id, callback.root_id) == (call.id, "root-1")


def test_celery_continues_a_chain_sent_by_celeriac(
    make_celery: Callable[..., Celery], make_celeriac: Callable[..., Celeriac]
) -> None:
    celery_app = make_celery()
    _add_tasks(celery_app)
    queue = celery_app.conf.task_default_queue
    app = make_celeriac(task_default_queue=queue)

    @app.task(name="interop.add")
    def add(x: int, y: int) -> int:
        return x + y

    last = celeriac_chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()
    assert last.parent is not None and last.parent.parent is not None
    first_id, second_id = last.parent.parent.id, last.parent.id

    async def take() -> bytes:
        # What celeriac's real client published, as its broker stores it (kombu's envelope).
        broker = create_broker(app.broker_url)
        try:
            (delivery,) = await broker.fetch([queue], 1, 1.0)
            await broker.ack([delivery])
            return delivery.raw
        finally:
            await broker.close()

    request = celery_request(celery_app, asyncio.run(take()))

    assert request.id == first_id
    assert request.execute() == 2
    following = decode(take_published(celery_app))
    assert (following.id, following.name, following.args) == (second_id, "interop.add", [2, 2])
    assert (following.parent_id, following.root_id) == (first_id, first_id)
    assert following.chain is not None
    assert [(s["task"], s["args"], s["options"]["task_id"]) for s in following.chain] == [
        ("interop.add", [3], last.id)
    ]


@pytest.mark.parametrize(("compression", "mime"), COMPRESSIONS)
def test_celery_reads_a_compressed_celeriac_message(
    make_celery: Callable[..., Celery], compression: str, mime: str
) -> None:
    celery_app = make_celery()
    _add_tasks(celery_app)
    args = ["x" * 2000, list(range(100))]
    call = TaskCall(id=str(uuid.uuid4()), name="interop.echo", args=args, kwargs={"k": "v"})

    request = celery_request(celery_app, envelope_of(call, celery_app, compression=compression))

    assert request.request_dict["compression"] == mime
    assert (request.args, request.kwargs) == (args, {"k": "v"})
    assert request.execute() == [args, {"k": "v"}]


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml"])
def test_celery_reads_a_celeriac_message_in_each_serializer(
    make_celery: Callable[..., Celery], serializer: str
) -> None:
    celery_app = make_celery(accept_content=[serializer])
    _add_tasks(celery_app)
    call = TaskCall(
        id=str(uuid.uuid4()), name="interop.echo", args=[1, "two", [3.5, None]], kwargs={"k": True}
    )

    request = celery_request(celery_app, envelope_of(call, celery_app, serializer=serializer))

    assert request.content_type == CONTENT_TYPES[serializer]
    assert (request.args, request.kwargs) == ([1, "two", [3.5, None]], {"k": True})
    assert request.execute() == [[1, "two", [3.5, None]], {"k": True}]


def test_celery_reads_celeriac_json_type_markers_as_the_same_values(
    make_celery: Callable[..., Celery],
) -> None:
    celery_app = make_celery()
    _add_tasks(celery_app)
    kwargs = {"when": MARKED[0], "amount": MARKED[6]}
    call = TaskCall(id=str(uuid.uuid4()), name="interop.echo", args=list(MARKED), kwargs=kwargs)

    request = celery_request(celery_app, envelope_of(call, celery_app))

    assert request.args == MARKED
    assert [type(v) for v in request.args] == [type(v) for v in MARKED]
    assert request.kwargs == kwargs
    assert request.execute() == [MARKED, kwargs]

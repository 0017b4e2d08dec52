"""A broker on Amazon SQS (or an SQS-compatible server), readable and writable by kombu's SQS transport.

Layout (kombu's, see ``_settings`` and ``_wire``): one SQS queue per queue, named ``queue_name_prefix``
+ the queue's name with punctuation mangled; each message kombu's JSON envelope, base64'd, in the body.
A queue is created on first use (``visibility_timeout``, kombu's, is its default), unless
``predefined_queues`` lists the queues, which are then the only ones.

Leases are SQS's visibility timeouts. A receive hides what it takes for ``lease_seconds`` (rounded up
to whole seconds, default 30) and, while this broker holds messages, a heartbeat extends them every
quarter of that (ChangeMessageVisibilityBatch), so a task of any length keeps its message, and a
killed worker's messages come back one lease later. A delivery whose lease lapsed (the heartbeat
could not renew it, or the loop stalled) is not deleted by a late ack: another consumer may hold it.

Delays: ``DelaySeconds`` (at most 900 s, whole seconds, rounded up). A message due later carries its
due time in an attribute and is sent on again with a new delay each time it surfaces early (a hop),
so no worker holds it. Deliveries are SQS's ``ApproximateReceiveCount``; ``release`` gives a message
back by sending it again with its count so far in an attribute (so its delivery is not counted), then
deleting the old copy.

Dead letters go to one queue of ours (``dead_letter_queue``, default ``celeriac-dead-letters``, under
the prefix), the envelope unchanged and the source queue, reason and time in attributes. A message an
SQS redrive policy moved there is read too (its queue from the envelope). SQS cannot be browsed: a
listing receives every dead letter (hidden for 30 s meanwhile) and makes them visible again.

Broadcasts (remote control, events): SQS has none, nor has Celery on SQS; with the option
``broadcast_url`` (a Redis or SQL URL) they travel through a broker of that URL, else they raise
NotImplementedError naming the option. Priorities: none (SQS has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from celeriac.brokers import create_broker
from celeriac.brokers.base import Broker, DeadLetter, Delivery, check_dead_letter_arguments, doomed
from celeriac.brokers.delivery import read_dead_letter, read_delivery
from celeriac.brokers.fanout import Subscription
from celeriac.exceptions import ConfigurationError, MessageTooLarge
from celeriac.protocol.envelope import from_envelope, to_envelope
from celeriac.protocol.message import Message
from celeriac.sqs import _wire
from celeriac.sqs._queues import BATCH, Queue, Queues, calling
from celeriac.sqs._settings import MAX_DELAY, Settings

__all__ = ["SQSBroker"]

log = logging.getLogger(__name__)

_SHORT_POLL_PAUSE = 0.05
_LISTING_HIDE = 30  # seconds a dead-letter listing hides what it reads
_REASON_MAX = 4096


@dataclass(slots=True)
class _Held:
    """What this broker holds of one received message, by receipt handle."""

    queue: Queue
    body: str
    attributes: dict[str, dict[str, str]]
    deliveries: int
    group: str | None
    lease_until: float  # time.monotonic()


def _send_attributes(received: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        for name, value in received.items()
        if isinstance(value, dict) and "StringValue" in value
    }


class SQSBroker(Broker):
    """A broker whose queues are SQS queues, shared with Celery's SQS transport.

    Options: kombu's (``region``, ``queue_name_prefix``, ``predefined_queues``, ``visibility_timeout``,
    ``wait_time_seconds``, ``is_secure``, ``sqs-creation-attributes``, ``queue_tags``,
    ``client-config``, ``sqs_base64_encoding``) and ``endpoint_url``, ``lease_seconds``,
    ``dead_letter_queue``, ``max_message_bytes`` (SQS's message limit, default 262144).
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqs",)
    priority_order = "none"

    def __init__(self, url: str = "sqs://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.settings = Settings.read(url, self.options)
        self.lease_seconds = self.settings.lease_seconds
        self._sqs = Queues(self.settings)
        self._held: dict[str, _Held] = {}
        self._spare: list[Delivery] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._side: Broker | None = None

    # -- publishing

    async def publish(self, queue: str, message: Message, *, not_before: float | None = None) -> None:
        await self.publish_many([(queue, message, not_before)])

    async def publish_many(self, items: Sequence[tuple[str, Message, float | None]]) -> None:
        queues = {name: await self._sqs.get(name) for name in dict.fromkeys(name for name, _, _ in items)}
        now = time.time()  # after the lookups: a queue created on the way must not eat into a delay
        by_queue: dict[str, list[dict[str, Any]]] = {}
        for name, message, not_before in items:
            by_queue.setdefault(name, []).append(self._entry(queues[name], message, not_before, now))
        for name, entries in by_queue.items():
            await self._sqs.send(queues[name], entries)

    def _entry(self, target: Queue, message: Message, not_before: float | None, now: float) -> dict[str, Any]:
        body = _wire.encode_body(
            to_envelope(message, routing_key=target.name), base64_encoded=self.settings.base64
        )
        attributes: dict[str, dict[str, str]] = {}
        entry: dict[str, Any] = {"MessageBody": body, "MessageAttributes": attributes}
        if not_before is not None and not_before > now:
            if target.fifo:
                raise ConfigurationError(
                    f"SQS FIFO queue {target.name!r} cannot delay one message; send it without a "
                    "countdown or eta, or use a standard queue"
                )
            wait = not_before - now
            entry["DelaySeconds"] = min(math.ceil(wait), MAX_DELAY)
            if wait > MAX_DELAY:
                attributes[_wire.NOT_BEFORE] = _wire.attribute(not_before)
        if target.fifo:
            entry["MessageGroupId"] = str(message.properties.get("MessageGroupId") or "default")
            entry["MessageDeduplicationId"] = str(
                message.properties.get("MessageDeduplicationId") or uuid.uuid4()
            )
        size = _wire.text_size(body, attributes)
        if size > self.settings.max_message_bytes:
            task = message.headers.get("task") or "message"
            raise MessageTooLarge(
                f"{task} is {size} bytes on SQS, over its limit of {self.settings.max_message_bytes} "
                "bytes (max_message_bytes): pass large arguments by reference (an S3 key, a row id)"
            )
        return entry

    # -- consuming

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if limit < 1:
            return []
        names = list(dict.fromkeys(queues))
        # Spares whose lease the heartbeat lost are dropped: SQS hands them out again.
        self._spare = [d for d in self._spare if d.tag in self._held]
        spare = [d for d in self._spare if d.queue in names][:limit]
        if spare:
            self._spare = [d for d in self._spare if d not in spare]
            return spare
        targets = [await self._sqs.get(name) for name in names]
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            wait = int(min(max(remaining, 0.0), self.settings.wait_time_seconds or 0, 20))
            # Every queue is polled at once (a long poll on one would starve the others); what comes
            # beyond ``limit`` is held as spare for the next fetch, earlier queues' messages first.
            batches = await asyncio.gather(
                *(self._receive(t, min(limit, BATCH), wait) for t in targets), return_exceptions=True
            )
            found = [d for batch in batches if not isinstance(batch, BaseException) for d in batch]
            failed = [batch for batch in batches if isinstance(batch, BaseException)]
            if failed and not found:
                raise failed[0]
            for error in failed:
                # What the other queues gave is handed out (raising would strand it, held unseen).
                log.warning("could not receive from one of %s: %s", names, error)
            if found:
                self._spare.extend(found[limit:])
                return found[:limit]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if wait == 0:
                await asyncio.sleep(min(_SHORT_POLL_PAUSE, remaining))

    async def _receive(self, target: Queue, count: int, wait: int) -> list[Delivery]:
        client = await self._sqs.client(target)
        visibility = self.settings.lease_visibility
        sent_at = time.monotonic()
        with calling(f"receive from {target.name!r}"):
            reply = await client.receive_message(
                QueueUrl=target.url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait,
                VisibilityTimeout=visibility,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
                MessageAttributeNames=["All"],
            )
        got: list[Delivery] = []
        early: list[tuple[str, dict[str, Any]]] = []
        now = time.time()
        for raw in reply.get("Messages") or []:
            receipt, body = raw["ReceiptHandle"], raw.get("Body", "")
            attributes = _send_attributes(raw.get("MessageAttributes") or {})
            system = raw.get("Attributes") or {}
            due = _wire.number(attributes, _wire.NOT_BEFORE)
            if due is not None and due > now:
                wait_more = due - now
                early.append(
                    (
                        receipt,
                        {
                            "MessageBody": body,
                            "MessageAttributes": attributes,
                            "DelaySeconds": min(math.ceil(wait_more), MAX_DELAY),
                        },
                    )
                )
                continue
            before = int(_wire.number(attributes, _wire.DELIVERIES) or 0)
            deliveries = int(system.get("ApproximateReceiveCount", 1)) + before
            delivery = read_delivery(receipt, target.name, _wire.decode_body(body), deliveries)
            if delivery.message is not None:
                delivery.message.properties["delivery_tag"] = receipt  # kombu's: the receipt handle
            self._held[receipt] = _Held(
                target, body, attributes, deliveries, system.get("MessageGroupId"), sent_at + visibility
            )
            got.append(delivery)
        if got:
            self._start_heartbeat()
        if early:
            # Not due yet: sent on with a new delay (a hop), then this copy deleted; never handed out.
            try:
                await self._sqs.send(target, [entry for _, entry in early])
                await self._forget(target, [receipt for receipt, _ in early])
            except Exception as exc:
                # The copies are not held: they surface again after one lease, and hop then.
                log.warning("could not send on %d delayed message(s) of %r: %s", len(early), target.name, exc)
        return got

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[Queue, list[str]] = {}
        for held, receipt in self._take_held(deliveries, "acked"):
            by_queue.setdefault(held.queue, []).append(receipt)
        for target, receipts in by_queue.items():
            await self._forget(target, receipts)

    async def holds(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """A delivery whose lease lapsed (SQS may have handed it to another consumer) is not held; one
        still held is hidden for a full lease longer."""
        now = time.monotonic()
        by_queue: dict[Queue, list[str]] = {}
        for delivery in deliveries:
            held = self._held.get(delivery.tag)
            if held is not None and held.lease_until > now:
                by_queue.setdefault(held.queue, []).append(delivery.tag)
        kept: set[str] = set()
        for target, receipts in by_queue.items():
            kept.update(await self._extend(target, receipts))
        return [delivery.tag in kept for delivery in deliveries]

    async def reject(self, delivery: Delivery, *, requeue: bool, reason: str = "") -> None:
        for held, receipt in self._take_held([delivery], "rejected"):
            if requeue:
                await self._sqs.show(held.queue, [receipt])
                return
            dead = await self._dead_queue()
            attributes = {
                _wire.QUEUE: _wire.attribute(delivery.queue),
                _wire.TIME: _wire.attribute(time.time()),
            }
            # The reason is cut to what SQS's limit leaves beside the message (a full-size message
            # keeps a short reason rather than failing to be dead-lettered at all).
            room = self.settings.max_message_bytes - _wire.text_size(held.body, attributes) - 64
            text = (reason or "rejected").encode()[: max(min(room, _REASON_MAX), 0)]
            attributes[_wire.REASON] = _wire.attribute(text.decode(errors="ignore") or "rejected")
            entry: dict[str, Any] = {"MessageBody": held.body, "MessageAttributes": attributes}
            if dead.fifo:
                entry.update(MessageGroupId="dead", MessageDeduplicationId=uuid.uuid4().hex)
            await self._sqs.send(dead, [entry])
            await self._forget(held.queue, [receipt])

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[Queue, list[tuple[str, _Held]]] = {}
        for held, receipt in self._take_held(deliveries, "released"):
            by_queue.setdefault(held.queue, []).append((receipt, held))
        for target, pairs in by_queue.items():
            await self._send_again(target, [held for _, held in pairs])
            await self._forget(target, [receipt for receipt, _ in pairs])

    async def _send_again(self, target: Queue, held: list[_Held]) -> None:
        """Send copies that count as not delivered this time (their delivery count so far rides along)."""
        entries = []
        for one in held:
            attributes = dict(one.attributes)
            attributes[_wire.DELIVERIES] = _wire.attribute(float(one.deliveries - 1))
            entry: dict[str, Any] = {"MessageBody": one.body, "MessageAttributes": attributes}
            if target.fifo:
                entry.update(MessageGroupId=one.group or "default", MessageDeduplicationId=uuid.uuid4().hex)
            entries.append(entry)
        await self._sqs.send(target, entries)

    async def _forget(self, target: Queue, receipts: list[str]) -> None:
        """Delete messages for good; one SQS refuses (purged meanwhile, say) is only logged."""
        refused = await self._sqs.delete(target, receipts)
        if refused:
            log.warning("SQS did not delete %d message(s) of %r", len(refused), target.name)

    def _take_held(self, deliveries: Sequence[Delivery], what: str) -> Iterator[tuple[_Held, str]]:
        """The held messages of ``deliveries`` whose lease still runs; they are no longer held."""
        now = time.monotonic()
        for delivery in deliveries:
            held = self._held.pop(delivery.tag, None)
            if held is None:
                continue
            if held.lease_until <= now:
                log.warning(
                    "the lease of a message from %r ran out before it was %s; left alone (another "
                    "consumer may hold it now), so it runs again",
                    held.queue.name,
                    what,
                )
                continue
            yield held, delivery.tag

    # -- heartbeat

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="celeriac-sqs-heartbeat")

    async def _beat(self) -> None:
        # While this broker lives, what it holds stays hidden however long a task runs; once it dies the
        # visibility timeouts run out and SQS hands the messages to another consumer.
        while self._held or self._spare:
            await asyncio.sleep(max(self.lease_seconds / 4, 0.05))
            by_queue: dict[Queue, list[str]] = {}
            for receipt, held in self._held.items():
                by_queue.setdefault(held.queue, []).append(receipt)
            for target, receipts in by_queue.items():
                try:
                    await self._extend(target, receipts)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("could not extend the leases on %r; will retry", target.name, exc_info=True)

    async def _extend(self, target: Queue, receipts: list[str]) -> set[str]:
        """Hide held messages of ``target`` for a full lease longer; return the receipts still held. One
        SQS refused to extend has lost its lease: it is no longer held."""
        visibility = self.settings.lease_visibility
        sent_at = time.monotonic()
        refused = set(await self._sqs.show(target, receipts, visibility))
        kept: set[str] = set()
        for receipt in receipts:
            still = self._held.get(receipt)
            if still is None:
                continue
            if receipt in refused:
                del self._held[receipt]
                log.warning("lost the lease of a message from %r (SQS refused to extend it)", target.name)
            else:
                still.lease_until = sent_at + visibility
                kept.add(receipt)
        return kept

    # -- queues

    async def declare(self, queue: str) -> None:
        await self._sqs.get(queue)

    async def size(self, queue: str) -> int:
        return await self._sqs.size(queue)

    async def purge(self, queue: str) -> int:
        """PurgeQueue: every message of the queue goes, those consumers hold too (SQS's rule)."""
        count = await self._sqs.size(queue)
        await self._sqs.purge(queue)
        self._spare = [d for d in self._spare if d.queue != queue]
        return count

    async def _dead_queue(self) -> Queue:
        return await self._sqs.get(self.settings.dead_letter_queue)

    # -- dead letters

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        async with self._reading_dead_letters() as letters:
            chosen = [letter for _, letter in letters if letter.selected(queue)]
        chosen.sort(key=lambda d: d.time, reverse=True)
        return chosen[:limit]

    async def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        check_dead_letter_arguments(limit=limit)
        dead = await self._dead_queue()
        async with self._reading_dead_letters() as letters:
            # A letter whose queue is unknown (moved by a redrive policy, envelope unreadable) stays.
            chosen = sorted(
                (p for p in letters if p[1].queue and p[1].selected(queue, ids)), key=lambda p: p[1].time
            )
            chosen = chosen[:limit]
            by_queue: dict[str, list[dict[str, Any]]] = {}
            for _, letter in chosen:
                target = await self._sqs.get(letter.queue)
                entry: dict[str, Any] = {
                    "MessageBody": _wire.encode_body(letter.raw),
                    "MessageAttributes": {},
                }
                if target.fifo:
                    entry.update(MessageGroupId="default", MessageDeduplicationId=uuid.uuid4().hex)
                by_queue.setdefault(letter.queue, []).append(entry)
            # Stored on its queue before it leaves the dead letters: on a failure in both, never in neither.
            for name, entries in by_queue.items():
                await self._sqs.send(await self._sqs.get(name), entries)
            taken = {id(letter) for _, letter in chosen}
            await self._forget(dead, [receipt for receipt, letter in chosen])
            letters[:] = [p for p in letters if id(p[1]) not in taken]
        return len(chosen)

    async def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        check_dead_letter_arguments(older_than=older_than, keep=keep)
        dead = await self._dead_queue()
        async with self._reading_dead_letters() as letters:
            chosen = sorted(
                (p for p in letters if p[1].selected(queue)), key=lambda p: p[1].time, reverse=True
            )
            drop = doomed([p[1].time for p in chosen], older_than=older_than, keep=keep, now=time.time())
            gone = [p for p, dropped in zip(chosen, drop, strict=True) if dropped]
            await self._forget(dead, [receipt for receipt, _ in gone])
            taken = {id(letter) for _, letter in gone}
            letters[:] = [p for p in letters if id(p[1]) not in taken]
        return len(gone)

    @contextlib.asynccontextmanager
    async def _reading_dead_letters(self) -> Any:
        """Every dead letter with its receipt, hidden while the body runs; those the body leaves in the
        list are made visible again after it."""
        dead = await self._dead_queue()
        client = await self._sqs.client(dead)
        letters: list[tuple[str, DeadLetter]] = []
        try:
            while True:
                with calling("read the dead letters"):
                    reply = await client.receive_message(
                        QueueUrl=dead.url,
                        MaxNumberOfMessages=BATCH,
                        WaitTimeSeconds=0,
                        VisibilityTimeout=_LISTING_HIDE,
                        MessageSystemAttributeNames=["SentTimestamp"],
                        MessageAttributeNames=["All"],
                    )
                found = reply.get("Messages") or []
                letters += [(raw["ReceiptHandle"], _letter(raw)) for raw in found]
                if not found:
                    break
            yield letters
        finally:
            if letters:
                await self._sqs.show(dead, [receipt for receipt, _ in letters])

    # -- broadcasts, through a side channel

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        await self._side_channel().broadcast(exchange, message, routing_key=routing_key)

    def subscribe(self, exchange: str, pattern: str = "#") -> AbstractAsyncContextManager[Subscription]:
        return self._side_channel().subscribe(exchange, pattern)

    def _side_channel(self) -> Broker:
        """The broker of ``broadcast_url`` (Redis, SQL, ...), which carries remote control and events."""
        if self._side is None:
            url = self.settings.broadcast_url
            if not url:
                raise NotImplementedError(
                    "SQSBroker cannot broadcast: SQS has no fanout; remote control and events need the "
                    "transport option broadcast_url (a Redis or SQL URL, e.g. your result backend's)"
                )
            self._side = create_broker(url)
        return self._side

    # -- closing

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait((self._heartbeat,))
            self._heartbeat = None
        try:
            spare, self._spare = self._spare, []
            if spare:
                await self.release(spare)  # never handed out: not counted
            by_queue: dict[Queue, list[str]] = {}
            for receipt, held in self._held.items():
                by_queue.setdefault(held.queue, []).append(receipt)
            self._held.clear()
            for target, receipts in by_queue.items():
                await self._sqs.show(target, receipts)
        except Exception as exc:
            log.warning(
                "could not give back this consumer's messages on closing (%s); SQS hands them out "
                "again when their visibility timeout ends",
                exc,
            )
        finally:
            await self._sqs.aclose()
            side, self._side = self._side, None
            if side is not None:
                await side.close()


def _letter(raw: dict[str, Any]) -> DeadLetter:
    """A dead letter from a received SQS message: ours carry queue, reason and time in attributes; one
    a redrive policy moved here names its queue in its envelope."""
    attributes = raw.get("MessageAttributes") or {}
    payload = _wire.decode_body(raw.get("Body", ""))
    queue = _wire.text(attributes, _wire.QUEUE)
    reason = _wire.text(attributes, _wire.REASON)
    when = _wire.number(attributes, _wire.TIME)
    if when is None:
        sent = (raw.get("Attributes") or {}).get("SentTimestamp")
        when = int(sent) / 1000 if sent else time.time()
    if queue is None:
        queue = ""
        reason = reason or "moved here by the queue's SQS redrive policy (maxReceiveCount)"
        with contextlib.suppress(Exception):
            info = from_envelope(payload).properties.get("delivery_info") or {}
            queue = str(info.get("routing_key") or "")
    return read_dead_letter(queue, reason or "", payload, when)

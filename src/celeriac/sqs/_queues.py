"""The SQS calls the broker makes, by queue: URLs found or queues created once, batched sends, deletes
and visibility changes, counts and purges. Failures to reach SQS are ``OperationalError``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import ConfigurationError, OperationalError
from celeriac.sqs import _wire
from celeriac.sqs._settings import Credentials, Settings, queue_name
from celeriac.sqs.client import Clients

__all__ = ["BATCH", "Queue", "Queues", "calling"]

BATCH = 10  # SQS's most entries per batch call and messages per receive


@dataclass(frozen=True, slots=True)
class Queue:
    """One queue: our name for it, its URL, the credentials of its client, whether it is FIFO."""

    name: str
    url: str
    credentials: Credentials
    fifo: bool


@contextlib.contextmanager
def calling(what: str) -> Iterator[None]:
    """Report an unreachable or failing endpoint as OperationalError, as every broker does."""
    try:
        yield
    except (TimeoutError, OSError) as exc:
        raise OperationalError(f"the SQS broker could not {what}: {exc}") from exc
    except Exception as exc:
        # botocore's transport errors (no endpoint, timeouts); an answer of SQS's own (ClientError,
        # which has a ``response``) is a refusal, not an outage, and goes up as it is.
        if not hasattr(exc, "response") and type(exc).__module__.startswith(
            ("botocore", "aiobotocore", "aiohttp")
        ):
            raise OperationalError(f"the SQS broker could not {what}: {exc}") from exc
        raise


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class Queues:
    """The queues one broker uses, and the calls it makes on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = Clients(settings)
        self._known: dict[str, Queue] = {}

    async def client(self, target: Queue | None = None) -> Any:
        """The client for ``target``'s credentials (the URL's when None)."""
        return await self.clients.get(target.credentials if target is not None else None)

    async def get(self, name: str) -> Queue:
        """The queue ``name``: its URL found (or the queue created) once, then cached.

        Raises:
            ConfigurationError: ``predefined_queues`` is set and does not name it.
        """
        found = self._known.get(name)
        if found is not None:
            return found
        settings = self.settings
        sqs_name = queue_name(name, settings.prefix)
        fifo = sqs_name.endswith(".fifo")
        if settings.predefined:
            spec = settings.predefined.get(name) or settings.predefined.get(sqs_name)
            if spec is None:
                raise ConfigurationError(
                    f"queue {name!r} is not in predefined_queues ({', '.join(settings.predefined)}); "
                    "add it there, or drop predefined_queues to let celeriac create queues"
                )
            key, secret = spec.get("access_key_id"), spec.get("secret_access_key")
            credentials = (
                Credentials(key, secret, spec.get("region"))
                if key and secret
                else Credentials(settings.credentials.key, settings.credentials.secret, spec.get("region"))
            )
            found = Queue(name, spec["url"], credentials, fifo)
        else:
            found = Queue(name, await self._find_or_create(sqs_name, fifo), settings.credentials, fifo)
        self._known[name] = found
        return found

    async def _find_or_create(self, sqs_name: str, fifo: bool) -> str:
        client = await self.client()
        try:
            with calling(f"look up queue {sqs_name!r}"):
                reply = await client.get_queue_url(QueueName=sqs_name)
            return str(reply["QueueUrl"])
        except Exception as exc:
            if "NonExistentQueue" not in _code(exc) and "QueueDoesNotExist" not in _code(exc):
                raise
        attributes = {"VisibilityTimeout": str(self.settings.create_visibility)}
        if fifo:
            attributes["FifoQueue"] = "true"
        attributes.update(self.settings.creation_attributes)
        extra: dict[str, Any] = {"tags": self.settings.tags} if self.settings.tags else {}
        with calling(f"create queue {sqs_name!r}"):
            reply = await client.create_queue(QueueName=sqs_name, Attributes=attributes, **extra)
        return str(reply["QueueUrl"])

    async def send(self, target: Queue, entries: list[dict[str, Any]]) -> None:
        """SendMessageBatch in batches of 10 within the size limit; raises unless all were stored."""
        client = await self.client(target)
        batch: list[dict[str, Any]] = []
        size = 0
        for entry in [*entries, None]:
            entry_size = (
                0 if entry is None else _wire.text_size(entry["MessageBody"], entry["MessageAttributes"])
            )
            if batch and (
                entry is None or len(batch) == BATCH or size + entry_size > self.settings.max_message_bytes
            ):
                with calling(f"publish to {target.name!r}"):
                    reply = await client.send_message_batch(
                        QueueUrl=target.url, Entries=[{"Id": str(n), **e} for n, e in enumerate(batch)]
                    )
                failed = reply.get("Failed") or []
                if failed:
                    reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed)
                    raise OperationalError(
                        f"SQS refused {len(failed)} of {len(batch)} message(s) for {target.name!r}: {reasons}"
                    )
                batch, size = [], 0
            if entry is not None:
                batch.append(entry)
                size += entry_size

    async def delete(self, target: Queue, receipts: list[str]) -> list[str]:
        """DeleteMessageBatch, 10 at a time; the receipts SQS refused are returned."""
        return await self._by_receipt(
            target, receipts, "delete_message_batch", f"delete from {target.name!r}"
        )

    async def show(self, target: Queue, receipts: list[str], visibility: int = 0) -> list[str]:
        """ChangeMessageVisibilityBatch: visible again (0 s) or hidden ``visibility`` s; the receipts
        SQS refused (no longer valid) are returned."""
        what = f"change the visibility of messages of {target.name!r}"
        extra = {"VisibilityTimeout": visibility}
        return await self._by_receipt(target, receipts, "change_message_visibility_batch", what, extra)

    async def _by_receipt(
        self, target: Queue, receipts: list[str], call: str, what: str, extra: dict[str, Any] | None = None
    ) -> list[str]:
        """Make the batch ``call`` on ``receipts``, 10 at a time; return the receipts SQS refused."""
        method = getattr(await self.client(target), call)
        refused: list[str] = []
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            entries = [{"Id": str(n), "ReceiptHandle": r, **(extra or {})} for n, r in enumerate(chunk)]
            with calling(what):
                reply = await method(QueueUrl=target.url, Entries=entries)
            refused += [chunk[int(f["Id"])] for f in reply.get("Failed") or []]
        return refused

    async def size(self, name: str) -> int:
        """Waiting plus delayed messages of queue ``name`` (SQS's approximate counts)."""
        target = await self.get(name)
        client = await self.client(target)
        with calling(f"count the messages of {name!r}"):
            reply = await client.get_queue_attributes(
                QueueUrl=target.url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
            )
        counts = reply.get("Attributes") or {}
        return int(counts.get("ApproximateNumberOfMessages", 0)) + int(
            counts.get("ApproximateNumberOfMessagesDelayed", 0)
        )

    async def purge(self, name: str) -> None:
        """PurgeQueue: every message of the queue goes, those consumers hold too (SQS's rule)."""
        target = await self.get(name)
        client = await self.client(target)
        with calling(f"purge {name!r}"):
            await client.purge_queue(QueueUrl=target.url)

    async def aclose(self) -> None:
        """Close the clients; URLs are looked up again on next use."""
        self._known.clear()
        await self.clients.aclose()

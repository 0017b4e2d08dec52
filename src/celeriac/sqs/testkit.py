"""The SQS broker's kit for the contract suite (``celeriac.testing.contract``).

Each kit's queues (its dead-letter queue too) carry a ``queue_name_prefix`` of the kit's own; ``clean``
deletes every queue under it.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

from celeriac.brokers import Broker
from celeriac.sqs.broker import SQSBroker
from celeriac.sqs.client import Clients
from celeriac.testing.contract.kit import BrokerKit

__all__ = ["SQSBrokerKit"]


class SQSBrokerKit(BrokerKit):
    """SQS brokers at ``url`` (with ``endpoint_url`` for a local server such as moto) on queues under a
    fresh ``queue_name_prefix``, deleted by ``clean``."""

    def __init__(self, url: str, **defaults: Any) -> None:
        """A kit for ``url``; ``defaults`` as in ``BrokerKit`` (a fresh prefix unless one is given)."""
        defaults.setdefault("queue_name_prefix", f"t{uuid.uuid4().hex[:10]}-")
        super().__init__(url, **defaults)

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Send ``payload`` base64'd as the body, where a Celery client would send its envelope."""
        assert isinstance(broker, SQSBroker)
        entry = {"MessageBody": base64.b64encode(payload).decode(), "MessageAttributes": {}}
        await broker._sqs.send(await broker._sqs.get(queue), [entry])

    def freeze(self, broker: Broker) -> None:
        """Stop the broker's heartbeat: its visibility timeouts run out, as a dead worker's do."""
        assert isinstance(broker, SQSBroker)
        if broker._heartbeat is not None:
            broker._heartbeat.cancel()

    def clean(self) -> None:
        """Delete every queue under the kit's prefix."""
        asyncio.run(self._delete_queues())

    async def _delete_queues(self) -> None:
        settings = SQSBroker(self.url, options=dict(self.defaults)).settings
        clients = Clients(settings)
        try:
            client = await clients.get()
            reply = await client.list_queues(QueueNamePrefix=settings.prefix)
            for url in reply.get("QueueUrls") or []:
                await client.delete_queue(QueueUrl=url)
        finally:
            await clients.aclose()

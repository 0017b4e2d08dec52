"""The real Celery's side of the SQS interop tests: ``celery worker -A tests.interop.celery_sqs_app``.

Broker: kombu's SQS transport at ``INTEROP_SQS_URL`` (``sqs://KEY:SECRET@host:port``: kombu makes the
endpoint from the host), queues under ``INTEROP_SQS_PREFIX``; results on Redis at ``INTEROP_RESULTS``
under the key prefix ``INTEROP_RESULTS_PREFIX``. Task names match the celeriac app the tests build.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

ADD, FAIL = "interop.sqs.add", "interop.sqs.fail"
KIND = "celery"


def transport_options(prefix: str) -> dict[str, Any]:
    """kombu's SQS options both sides share: region, queue prefix, a short long poll."""
    return {"region": "us-east-1", "queue_name_prefix": prefix, "wait_time_seconds": 1}


def build(url: str, prefix: str, results: str, results_prefix: str) -> Celery:
    """A Celery app on SQS at ``url`` with the interop tasks, results on Redis."""
    app = Celery("interop_sqs", broker=url, backend=results, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options(prefix),
        result_backend_transport_options={"global_keyprefix": results_prefix},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        result_expires=600,
    )

    @app.task(name=ADD, shared=False)  # type: ignore[untyped-decorator]
    def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y, "kind": KIND}

    @app.task(name=FAIL, shared=False)  # type: ignore[untyped-decorator]
    def fail(message: str) -> None:
        raise ValueError(message)

    return app


if os.environ.get("INTEROP_SQS_URL"):
    app = build(
        os.environ["INTEROP_SQS_URL"],
        os.environ["INTEROP_SQS_PREFIX"],
        os.environ["INTEROP_RESULTS"],
        os.environ["INTEROP_RESULTS_PREFIX"],
    )

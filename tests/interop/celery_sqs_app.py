"""The real Celery's side of the SQS interop tests: ``celery worker -A tests.interop.celery_sqs_app``.

The RabbitMQ interop tests' tasks (``celery_rabbit_app``), on kombu's SQS transport at
``INTEROP_SQS_URL`` (``sqs://KEY:SECRET@host:port``: kombu makes the endpoint from the host), queues
under ``INTEROP_SQS_PREFIX``; results on Redis at ``INTEROP_RESULTS`` under the key prefix
``INTEROP_RESULTS_PREFIX``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from tests.interop import celery_rabbit_app


def settings(prefix: str, results_prefix: str) -> dict[str, Any]:
    """What both sides set: kombu's SQS options (region, queue prefix, a short long poll) and the
    results' key prefix."""
    return {
        "broker_transport_options": {
            "region": "us-east-1",
            "queue_name_prefix": prefix,
            "wait_time_seconds": 1,
        },
        "result_backend_transport_options": {"global_keyprefix": results_prefix},
    }


def build(url: str, prefix: str, results: str, results_prefix: str) -> Celery:
    """A Celery app on SQS at ``url`` with the interop tasks, results on Redis."""
    app = celery_rabbit_app.build(results, **settings(prefix, results_prefix))
    app.conf.broker_url = url
    return app


if os.environ.get("INTEROP_SQS_URL"):
    app = build(
        os.environ["INTEROP_SQS_URL"],
        os.environ["INTEROP_SQS_PREFIX"],
        os.environ["INTEROP_RESULTS"],
        os.environ["INTEROP_RESULTS_PREFIX"],
    )

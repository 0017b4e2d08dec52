"""``python -m bench [redis|rabbitmq|canvas|control|events] [OPTIONS]``: the benchmarks, each prints a table.

``python -m bench``: the memory and SQLite brokers, celeriac against Celery (``bench.local``).
``python -m bench redis``: celeriac against Celery and its peers on a private Redis (``bench.redis_suite``);
``python -m bench redis --help`` lists its options.
``python -m bench rabbitmq``: celeriac against Celery and Dramatiq on a private RabbitMQ node
(``bench.rabbit_suite``); ``python -m bench rabbitmq --help`` lists its options.
``python -m bench canvas``: a group and a chord of 10,000 no-op tasks, celeriac against Celery, on a private
Redis (``bench.canvas``); ``python -m bench canvas --help`` lists its options.
``python -m bench control``: the round trip of ``inspect ping`` to 1 and 4 workers on Redis, RabbitMQ and
SQLite, celeriac against Celery, then what task events cost a draining worker (``bench.control``).
``python -m bench events``: only the task events' cost (``bench.events``; needs a Redis, ``--url``).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["redis"]:
        from bench.redis_suite.run import main as redis_main

        return redis_main(argv[1:])
    if argv[:1] in (["rabbitmq"], ["rabbit"]):
        from bench.rabbit_suite.run import main as rabbit_main

        return rabbit_main(argv[1:])
    if argv[:1] == ["canvas"]:
        from bench.canvas import main as canvas_main

        return canvas_main(argv[1:])
    if argv[:1] == ["control"]:
        from bench.control import main as control_main

        return control_main(argv[1:])
    if argv[:1] == ["events"]:
        from bench.events import main as events_main

        return events_main(argv[1:])
    from bench.local import main as local_main

    return local_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

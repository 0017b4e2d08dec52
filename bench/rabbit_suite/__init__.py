"""``python -m bench rabbitmq``: celeriac, Celery and Dramatiq on one private RabbitMQ node, in one run.

The Redis suite's measuring code and peers run unchanged (``bench.redis_suite``): the peers take their
broker from ``BENCH_BROKER_URL`` and their result backend from ``BENCH_RESULT_URL``, which this suite points
at RabbitMQ (a fresh vhost per phase) and at a private Redis (results and the bench's marks) or ``rpc://``.
The parts: ``run`` (command line, phases, the node), ``systems`` (which configurations run, with which
broker and result URLs) and ``report`` (the table and the issue's targets).
"""

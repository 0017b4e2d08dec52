"""One module per system: its app, the bench's tasks (noop, echo, sleeper, mark) and its client calls.

Each module reads ``BENCH_REDIS_URL`` when imported and exposes ``client()``, an object with ``mark``,
``noops``, ``sleepers``, ``call`` and ``close`` (coroutines when the module sets ``ASYNC = True``).
"""

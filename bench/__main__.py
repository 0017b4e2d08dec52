"""``python -m bench [redis] [OPTIONS]``: the benchmarks, each printing a table.

``python -m bench``: the memory and SQLite brokers, celeriac against Celery (``bench.local``).
``python -m bench redis``: celeriac against Celery and its peers on a private Redis (``bench.redis_suite``);
``python -m bench redis --help`` lists its options.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["redis"]:
        from bench.redis_suite.run import main as redis_main

        return redis_main(argv[1:])
    from bench.local import main as local_main

    return local_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

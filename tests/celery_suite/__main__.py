"""Run Celery 5.7's own integration tests (test_canvas.py, test_tasks.py) against a worker we start.

``./dev celery-suite [--worker celeriac|celery] [--file test_tasks.py] [options] [pytest args]``.
The client side is the real Celery of the suite's venv, running Celery's unmodified tests with
``NO_WORKER=1``; the worker is celeriac running Celery's ``tasks.py`` with only its imports rewritten
(``rewrite.py``), or, to check the exclusions list, a real ``celery worker`` running Celery's own.
Everything is downloaded and made under ``.cache/celery-suite`` (gitignored); everything started is
stopped. Not part of the default test run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.celery_suite.environment import extract_sdist, make_venv
from tests.celery_suite.processes import private_redis, worker
from tests.celery_suite.report import FILES, load_exclusions, load_known_celery_failures, read_junit, table
from tests.celery_suite.rewrite import GAPS, write_celeriac_tasks

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="./dev celery-suite", description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["celeriac", "celery"], default="celeriac")
    parser.add_argument("--celeriac-src", type=Path, default=ROOT / "src", help="celeriac's src folder")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test (60)")
    parser.add_argument("--reruns", action="store_true", help="honour Celery's flaky marks (5 reruns)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "celery-suite")
    parser.add_argument(
        "--file", dest="files", action="append", default=[], help="a test file (default: both)"
    )
    args, rest = parser.parse_known_args([a for a in argv if a != "--"])
    return args, rest


def _pytest(python: Path, sdist: Path, files: list[str], args: list[str], env: dict[str, str]) -> int:
    # Celery's tests import its t package from the sdist; the plugin comes from this folder.
    command = [str(python), "-m", "pytest", *files, "-p", "celery.contrib.pytest", "-p", "external_worker"]
    env = {**os.environ, **env, "NO_WORKER": "1", "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run([*command, "-p", "no:cacheprovider", *args], cwd=sdist, env=env).returncode


def _report(worker: str, junit: Path, took: float) -> None:
    outcomes = read_junit(junit)
    excluded, known = load_exclusions(), load_known_celery_failures()
    print(f"\ncelery-suite: {worker} worker, {took / 60:.1f} min\n")
    print(table(outcomes, excluded if worker == "celeriac" else {}))
    failing = outcomes.failing()
    if failing:
        print("\nfailing (* also fails with a real Celery worker: exclusions.toml, fails_with_celery):")
        for test in failing:
            mark = "*" if test in known and worker == "celeriac" else " "
            print(f" {mark}{test}  [{outcomes.messages.get(test, '')}]")
    if worker == "celery":
        print("\nexclusions that pass against a real Celery worker (not valid exclusions):")
        passing = [t for t in excluded if outcomes.by_test.get(t) == "passed"]
        print("\n".join(f"  {t}" for t in passing) or "  none")
        unchecked = [t for t in excluded if t not in outcomes.by_test]
        if unchecked:
            print(f"exclusions not run this time: {len(unchecked)}")


def main(argv: list[str]) -> int:
    """Prepare, run, report; the exit status is pytest's."""
    args, pytest_args = _parse(argv)
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    python = make_venv(cache)
    sdist = extract_sdist(cache, python)
    run = cache / f"run-{args.worker}"
    if args.worker == "celeriac":
        paths = [write_celeriac_tasks(sdist, run / "tasks"), args.celeriac_src.resolve()]
        print("celery-suite: stand-ins for what celeriac may lack:", *GAPS, sep="\n  ")
        deselect = [a for t in load_exclusions() for a in ("--deselect", t)]
    else:
        paths, deselect = [sdist], []
    files = [f if "/" in f else f"t/integration/{f}" for f in args.files] or FILES
    junit = run / "junit.xml"
    junit.unlink(missing_ok=True)
    options = [f"--timeout={args.timeout}", f"--junitxml={junit}", "-q", "-rfEs", *deselect]
    if not args.reruns:
        options += ["-p", "no:rerunfailures"]
    with private_redis(run / "redis") as (host, port):
        url = f"redis://{host}:{port}/1"
        env = {"TEST_BROKER": url, "TEST_BACKEND": url, "REDIS_HOST": host, "REDIS_PORT": str(port)}
        with worker(args.worker, python, paths, run / "worker", env, args.concurrency) as log:
            print(f"celery-suite: {args.worker} worker up (log: {log}); running {' '.join(files)}")
            started = time.monotonic()
            code = _pytest(python, sdist, files, [*options, *pytest_args], env)
            took = time.monotonic() - started
    if not junit.exists():
        print(f"celery-suite: pytest stopped without a report (exit status {code})")
        return code or 1
    _report(args.worker, junit, took)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

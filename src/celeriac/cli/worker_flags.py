"""Celery's ``celery`` and ``celery worker`` flags that celeriac's own options do not cover.

So that a systemd unit, a Procfile or a Helm chart written for Celery starts a celeriac worker
unchanged, every flag of ``celery worker`` (and the global ones of ``celery``) is accepted: each either
does what it does in Celery, or is accepted with a one-line warning that says what celeriac does
instead. ``-B`` runs the beat inside the worker (``celeriac.cli.beat``).
"""

from __future__ import annotations

import argparse
import os

from celeriac.exceptions import CeleriacError

#: Subcommands of ``celery`` that celeriac has not got yet: named, they say so instead of argparse's
#: bare "invalid choice".
NOT_YET = ("multi", "shell", "upgrade", "graph", "list", "logtool", "amqp", "migrate", "report")

#: Flags handled once by the command itself (or only warned about): never passed on to the workers a
#: supervisor (``--processes N``) starts, which inherit their effect (environment, working directory,
#: descriptors) instead.
NOT_PASSED_ON = frozenset(
    {
        "loader",
        "workdir",
        "no_color",
        "quiet",
        "version",
        "skip_checks",
        "detach",
        "statedb",
        "optimization",
        "disable_prefetch",
        "time_limit",
        "soft_time_limit",
        "pool_start_method",
        "purge",
        "include",
        "without_gossip",
        "schedule_filename",
        "logfile",
        "pidfile",
        "uid",
        "gid",
        "umask",
        "executable",
    }
)


#: Celery's pools that celeriac has not got, each run as the pool named instead (with a warning).
POOLS = {"gevent": "threads", "eventlet": "threads", "custom": "processes"}


def count(text: str, *, also: str = "") -> int:
    """A command-line count: a whole number of at least 1 (``also`` names what else is accepted)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1{also}, not {text!r}")
    return value


def concurrency(text: str) -> int | None:
    """``-c``: a whole number of at least 1, or Celery's ``auto`` (None: the default, one per CPU)."""
    return None if text == "auto" else count(text, also=" or auto")


def pool_of(name: str | None) -> str | None:
    """The pool to run for ``-P name``: celeriac's own, or the one standing in for a Celery pool."""
    return POOLS.get(name, name) if name else name


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """``celery``'s global options beyond ``-A``, ``-b`` and ``--result-backend``."""
    parser.add_argument("--version", action="store_true", help="print celeriac's version and exit")
    parser.add_argument(
        "--config",
        metavar="MODULE",
        help="a configuration module loaded after the app (its settings win over the app's)",
    )
    parser.add_argument("--workdir", help="change to this directory before loading the app")
    parser.add_argument("--loader", help=argparse.SUPPRESS)  # Celery's loaders: warned about
    parser.add_argument("-C", "--no-color", action="store_true", help="no colours (celeriac uses none)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no banner (celeriac prints none)")
    parser.add_argument("--skip-checks", action="store_true", help="(Django's checks: celeriac runs none)")


def add_worker_flags(worker: argparse.ArgumentParser) -> None:
    """The flags of ``celery worker`` that celeriac's worker options do not already have."""
    daemon = worker.add_argument_group("daemon options (as Celery's)")
    daemon.add_argument("-f", "--logfile", help="write the log here (%%n, %%h, %%d, %%i expand)")
    daemon.add_argument("--pidfile", help="write the pid here; refuse to start if a live process holds it")
    daemon.add_argument(
        "-D",
        "--detach",
        action="store_true",
        help="run in the background; logs go to --logfile (default: %%n.log)",
    )
    daemon.add_argument("--uid", help="as root: become this user (name or number)")
    daemon.add_argument("--gid", help="as root: become this group (name or number)")
    daemon.add_argument("--umask", help="umask of the files the worker makes (octal)")
    daemon.add_argument("--executable", help=argparse.SUPPRESS)
    celery = worker.add_argument_group("Celery's other worker options")
    celery.add_argument("--time-limit", type=float, help="hard time limit of every task (task_time_limit)")
    celery.add_argument("--soft-time-limit", type=float, help="soft time limit (task_soft_time_limit)")
    celery.add_argument("-I", "--include", help="comma-separated modules to import at start (include)")
    celery.add_argument("-X", "--exclude-queues", help="comma-separated queues not to consume")
    celery.add_argument(
        "--purge", "--discard", action="store_true", help="delete the waiting messages of the queues first"
    )
    celery.add_argument("--disable-prefetch", action="store_true", help="fetch only for free pool slots")
    celery.add_argument("-O", "--optimization", choices=["default", "fair"], help=argparse.SUPPRESS)
    celery.add_argument("--pool-start-method", choices=["fork", "spawn"], help=argparse.SUPPRESS)
    celery.add_argument("-S", "--statedb", help=argparse.SUPPRESS)
    celery.add_argument("--without-gossip", action="store_true", help=argparse.SUPPRESS)
    celery.add_argument(
        "-B",
        "--beat",
        action="store_true",
        help="also run the beat (periodic tasks) on this worker's loop; any number of workers may",
    )
    celery.add_argument("-s", "--schedule-filename", "--schedule", help=argparse.SUPPRESS)
    celery.add_argument("--scheduler", help="with -B: celery.beat:PersistentScheduler (the only one taken)")


def warnings(args: argparse.Namespace) -> list[str]:
    """One line per accepted flag that celeriac does not do as Celery does, saying what it does instead."""
    notes: list[str] = []
    if args.optimization == "fair":
        notes.append("-O fair: always celeriac's behaviour (a worker fetches only for its free pool slots)")
    if args.statedb:
        notes.append(
            "--statedb ignored: revocations are kept in the result backend, where every worker sees them "
            "and they survive restarts"
        )
    if args.without_gossip:
        notes.append("--without-gossip: celeriac workers do not gossip; the flag changes nothing")
    if args.pool_start_method:
        notes.append(
            f"--pool-start-method {args.pool_start_method} ignored: pool processes are started with spawn "
            "when the app is named with -A (fork otherwise)"
        )
    if args.schedule_filename:
        notes.append(
            "--schedule ignored: the beat's state is kept in the broker's (or result backend's) store, "
            "shared by every beat"
        )
    if args.executable:
        notes.append("--executable ignored: the worker runs on the Python that runs celeriac")
    if args.pool in POOLS:
        notes.append(
            f"-P {args.pool}: celeriac has no {args.pool} pool; runs the {POOLS[args.pool]} pool instead "
            "(async def tasks run natively on every pool)"
        )
    if args.loader:
        notes.append("--loader ignored: celeriac has no loaders; the app is found with -A")
    return notes


def settings_from_flags(args: argparse.Namespace) -> dict[str, str]:
    """``CELERIAC_*`` environment variables for the flags that are settings: set before the app loads,
    they outrank what the app module configures and reach the processes the worker starts."""
    env: dict[str, str] = {}
    if args.time_limit is not None:
        env["CELERIAC_TASK_TIME_LIMIT"] = str(args.time_limit)
    if args.soft_time_limit is not None:
        env["CELERIAC_TASK_SOFT_TIME_LIMIT"] = str(args.soft_time_limit)
    if args.disable_prefetch:
        env["CELERIAC_WORKER_PREFETCH_MULTIPLIER"] = "1"
    return env


def served_queues(args: argparse.Namespace, default: str) -> list[str]:
    """The queues to consume: ``-Q`` (or the default queue) less ``-X``; raise if none is left."""
    queues = [q for q in (args.queues.split(",") if args.queues else [default]) if q]
    excluded = {q for q in (args.exclude_queues or "").split(",") if q}
    left = [q for q in queues if q not in excluded]
    if not left:
        raise CeleriacError(f"-X {args.exclude_queues} leaves no queue to consume (of {', '.join(queues)})")
    return left


def included(args: argparse.Namespace, current: list[str]) -> list[str] | None:
    """The ``include`` setting with ``-I``'s modules added, or None without ``-I``."""
    if not args.include:
        return None
    extra = [m.strip() for m in args.include.split(",") if m.strip()]
    return [*current, *[m for m in extra if m not in current]]


def apply_workdir(args: argparse.Namespace) -> None:
    """``--workdir``: change directory before anything is loaded (so ``-A`` and relative paths resolve
    there)."""
    if args.workdir:
        try:
            os.chdir(args.workdir)
        except OSError as exc:
            raise CeleriacError(f"--workdir {args.workdir}: {exc}") from exc

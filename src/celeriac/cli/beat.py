"""``celeriac beat`` (and ``celeriac worker -B``): run the periodic task scheduler.

Celery's flags of ``celery beat`` are taken: ``-l``, ``--max-interval``, the daemon options (``--detach``,
``--pidfile``, ``-f/--logfile``, ``--uid``, ``--gid``, ``--umask``), ``-s/--schedule`` (accepted: the
schedule's state lives in the broker's or the backend's store, shared by every beat, not in a local
file) and ``-S/--scheduler`` (Celery's default scheduler is accepted; another, such as
django-celery-beat's, is refused with a clear error, as its entries would not run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from celeriac.cli import _daemon
from celeriac.exceptions import CeleriacError
from celeriac.worker._logging import setup_logging

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.beat import Beat

log = logging.getLogger("celeriac.beat")

#: ``-S`` values that name Celery's own scheduler, which celeriac's beat stands in for.
CELERY_SCHEDULERS = ("celery.beat:PersistentScheduler", "celery.beat.PersistentScheduler", "persistent")


def add_parser(sub: Any) -> None:
    """The ``beat`` subcommand and its options."""
    beat = sub.add_parser("beat", help="run the periodic task scheduler (any number may run: one leads)")
    beat.add_argument("-l", "--loglevel", default=os.environ.get("CELERIAC_LOGLEVEL", "INFO"))
    beat.add_argument(
        "--max-interval",
        type=float,
        help="longest sleep between looks at the schedule (beat_max_loop_interval)",
    )
    beat.add_argument(
        "-s",
        "--schedule",
        help="(accepted, not used: the state lives in the broker's or backend's store, shared by all beats)",
    )
    beat.add_argument("-S", "--scheduler", help="celery.beat:PersistentScheduler (the only one taken)")
    daemon = beat.add_argument_group("daemon options (as Celery's)")
    daemon.add_argument("-f", "--logfile", help="write the log here")
    daemon.add_argument("--pidfile", help="write the pid here; refuse to start if a live process holds it")
    daemon.add_argument("--detach", "-D", action="store_true", help="run in the background (log: --logfile)")
    daemon.add_argument("--uid", help="as root: become this user (name or number)")
    daemon.add_argument("--gid", help="as root: become this group (name or number)")
    daemon.add_argument("--umask", help="umask of the files beat makes (octal)")


def check_scheduler(scheduler: str | None) -> None:
    """Refuse a ``-S`` scheduler other than Celery's default: its entries would silently not run."""
    if scheduler and scheduler not in CELERY_SCHEDULERS:
        raise CeleriacError(
            f"-S {scheduler}: celeriac beat runs the beat_schedule setting and add_periodic_task entries "
            "with its own store; other schedulers (django-celery-beat's database entries) are not read. "
            "Move the entries to beat_schedule, or leave -S out"
        )


def make_beat(app: Celeriac, max_interval: float | None = None) -> Beat:
    """The app's beat, its entries checked (errors name the entry and what to fix)."""
    from celeriac.beat import Beat  # the beat's modules load for beat users only

    return Beat(app, max_interval=max_interval)


async def alongside(beat: Beat, work: Coroutine[Any, Any, int]) -> int:
    """Run ``beat`` on this loop while ``work`` (a worker) runs; stop it when the work ends."""
    stop = asyncio.Event()
    running = asyncio.create_task(beat.run(stop), name="celeriac-beat")
    try:
        return await work
    finally:
        stop.set()
        await running


def run(args: argparse.Namespace, load_app: Any) -> int:
    """``celeriac beat``: the daemon options first (as the worker's), then the beat until SIGTERM/SIGINT."""
    check_scheduler(args.scheduler)
    if args.umask:
        _daemon.set_umask(args.umask)
    pidfile = _daemon.PidFile(_daemon.expand_node(args.pidfile)) if args.pidfile else None
    if pidfile is not None:
        pidfile.check()
    logfile = args.logfile or ("celeriac-beat.log" if args.detach else None)
    log_fd = _daemon.open_log(logfile) if logfile else None
    if args.detach:
        print(f"celeriac: beat runs in the background; log {os.path.abspath(logfile or '')}", file=sys.stderr)
        _daemon.detach()
    notes = [note for note in [_daemon.drop_privileges(args.uid, args.gid)] if note]
    if args.schedule:
        notes.append(
            f"-s {args.schedule}: not used; the schedule's state is kept in the broker's (or result "
            "backend's) store, which every beat shares"
        )
    if log_fd is not None:
        _daemon.log_to(log_fd)
    if pidfile is not None:
        pidfile.acquire()
    try:
        app = load_app(args)
        beat = make_beat(app, args.max_interval)  # a bad entry stops the start before logging is set up
        conf = app.conf
        setup_logging(
            args.loglevel, conf.worker_log_format, conf.worker_task_log_format, conf.worker_hijack_root_logger
        )
        for note in notes:
            log.warning("%s", note)
        return asyncio.run(_serve(beat))
    finally:
        if pidfile is not None:
            pidfile.release()


async def _serve(beat: Beat) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await beat.run(stop)
    return 0

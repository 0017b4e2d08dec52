"""``celeriac [-A APP] COMMAND``: worker, beat, call, result, purge, status, inspect, control, events,
dead-letters, dashboard, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac import __version__
from celeriac._outages import safe_url
from celeriac.cli import _daemon, worker_flags
from celeriac.cli import beat as beat_cli
from celeriac.cli.control import add_parsers as add_control_parsers
from celeriac.cli.control import run as run_control
from celeriac.cli.dashboard import add_parser as add_dashboard_parser
from celeriac.cli.dashboard import run as run_dashboard
from celeriac.cli.dead_letters import add_parser as add_dead_letters_parser
from celeriac.cli.dead_letters import run as run_dead_letters
from celeriac.exceptions import CeleriacError
from celeriac.worker._appref import find_app
from celeriac.worker._autoscale import parse_autoscale
from celeriac.worker._logging import setup_logging

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.config import Settings
    from celeriac.worker._supervisor import Child


def _autoscale_range(text: str) -> str:
    try:
        parse_autoscale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port (0-65535; 0: any free one), not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celeriac", description="A task queue that speaks Celery's protocol."
    )
    parser.add_argument(
        "-A",
        "--app",
        default=os.environ.get("CELERIAC_APP"),
        help="the app: module, module:attr, or a package with a celery/celeriac module",
    )
    parser.add_argument("-b", "--broker", help="broker URL (overrides broker_url)")
    parser.add_argument("--result-backend", help="result backend URL (overrides result_backend)")
    worker_flags.add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    worker = sub.add_parser("worker", help="run a worker")
    worker.add_argument("-Q", "--queues", help="comma-separated queues to consume (default: celery)")
    worker.add_argument("-n", "--hostname", help="node name, e.g. w1@%%h (%%h, %%n, %%d expand)")
    worker.add_argument(
        "-c",
        "--concurrency",
        type=worker_flags.concurrency,
        help="pool size (default, or auto: number of CPUs)",
    )
    worker.add_argument(
        "-P", "--pool", choices=["processes", "prefork", "threads", "async", "solo", *worker_flags.POOLS]
    )
    worker.add_argument("-l", "--loglevel", default=os.environ.get("CELERIAC_LOGLEVEL", "INFO"))
    worker.add_argument("--max-tasks-per-child", type=int)
    worker.add_argument("--max-memory-per-child", type=int, help="KiB of resident memory per child")
    worker.add_argument("--prefetch-multiplier", type=int)
    worker.add_argument("--shutdown-timeout", type=float, help="seconds a warm shutdown waits")
    worker.add_argument(
        "-E",
        "--task-events",
        "--events",
        action="store_true",
        default=None,
        help="send task events, for Flower and `celeriac events` (worker_send_task_events)",
    )
    worker.add_argument("--heartbeat-interval", type=float, help="seconds between worker heartbeats (2)")
    worker.add_argument("--without-heartbeat", action="store_true", help="send no worker heartbeats")
    # Mingle (worker._mingle): greeting the other workers once started.
    worker.add_argument(
        "--without-mingle",
        action="store_true",
        help="do not greet the other workers at start to learn their revoked ids and clock",
    )
    worker.add_argument(
        "--processes",
        type=worker_flags.count,
        default=1,
        metavar="N",
        help="run N workers, each with its own pool of -c, under one supervisor (default: 1)",
    )
    # --autoscale: kept as the text given (checked here), so a supervisor passes it on unchanged.
    worker.add_argument(
        "--autoscale",
        type=_autoscale_range,
        metavar="MAX,MIN",
        help="resize the pool between MIN and MAX slots as work waits (Celery's order: max first)",
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (worker_metrics_port; 0: any free "
        "port); with --processes N, the workers take PORT, PORT+1, ...",
    )
    worker.add_argument(
        "--metrics-host", help="the address /metrics listens on (worker_metrics_host, 127.0.0.1)"
    )
    # Set by the supervisor on the workers it starts: stdin is its lifeline (see worker._supervisor).
    worker.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    # Celery's other worker flags, each done or accepted with a warning (celeriac.cli.worker_flags).
    worker_flags.add_worker_flags(worker)

    call = sub.add_parser("call", help="send a task by name")
    call.add_argument("name")
    call.add_argument("-a", "--args", default="[]", help="JSON list of positional arguments")
    call.add_argument("-k", "--kwargs", default="{}", help="JSON object of keyword arguments")
    call.add_argument("--countdown", type=float)
    call.add_argument("--eta", help="ISO-8601 time")
    call.add_argument("--expires", type=float)
    call.add_argument("-Q", "--queue")
    call.add_argument("--priority", type=int)
    call.add_argument("--wait", action="store_true", help="wait for the result and print it")
    call.add_argument("--timeout", type=float, default=60.0)

    result = sub.add_parser("result", help="show a task's state and result")
    result.add_argument("task_id")
    result.add_argument("--traceback", action="store_true")
    result.add_argument("--wait", action="store_true")
    result.add_argument("--timeout", type=float, default=60.0)

    purge = sub.add_parser("purge", help="delete every waiting message")
    purge.add_argument("-Q", "--queues")
    purge.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")

    status = sub.add_parser("status", help="show queue sizes and dead letters")
    status.add_argument("-Q", "--queues", help="comma-separated queues (default: those the app names)")
    status.add_argument("-t", "--timeout", type=float, default=1.0, help="seconds to wait for workers")
    status.add_argument("-j", "--json", action="store_true", help="print it all as one JSON object")

    beat_cli.add_parser(sub)
    add_control_parsers(sub)
    add_dead_letters_parser(sub)
    add_dashboard_parser(sub)
    events = sub.add_parser("events", help="follow the workers' events (a live view, or --dump)")
    events.add_argument("--dump", action="store_true", help="print each event as a line (JSON by default)")
    events.add_argument(
        "--format",
        choices=("json", "text"),
        default="json",
        help="--dump as a JSON object per line (default), or as a line to read: node [time] type fields",
    )
    events.add_argument("--freq", type=float, default=1.0, help="seconds between redraws (1)")

    demo = sub.add_parser("demo", help="run a worker on the embedded SQLite default and show it working")
    demo.add_argument("-n", "--tasks", type=int, default=100)
    demo.add_argument("-c", "--concurrency", type=int, default=2)
    demo.add_argument("-P", "--pool", default="processes")
    for name in worker_flags.NOT_YET:  # unlisted: each only says it is not available yet
        sub.add_parser(name, add_help=False)
    return parser


def _load_app(args: argparse.Namespace) -> Celeriac:
    if not args.app:
        raise CeleriacError(f"'{args.command}' needs the app: celeriac -A MODULE {args.command} ...")
    # Set through the environment: it outranks what the app module configures, and the pool's child
    # processes, which import the app anew, inherit it.
    if args.broker:
        os.environ["CELERIAC_BROKER_URL"] = args.broker
    if args.result_backend:
        os.environ["CELERIAC_RESULT_BACKEND"] = args.result_backend
    app = find_app(args.app)
    if args.config:
        app.config_from_object(args.config)
    if args.broker or args.result_backend:
        app.conf.reload_environment()
    return app


def cmd_worker(args: argparse.Namespace) -> int:
    """``celeriac worker``: run a worker (or ``--processes N`` of them under a supervisor) until stopped.

    The daemon options come first, as in Celery: ``--umask``, ``-D`` (the log file is opened and the
    pid file checked before detaching, so their errors reach the terminal), ``--uid``/``--gid``, the
    log file, then the pid file, which is removed when the worker exits.
    """
    beat_cli.check_scheduler(args.scheduler)
    if args.umask:
        _daemon.set_umask(args.umask)
    hostname = _daemon.node_name(args.hostname) if args.hostname else None
    node = hostname or _daemon.node_name(None)  # the worker's default
    pidfile = _daemon.PidFile(_daemon.expand_node(args.pidfile, node)) if args.pidfile else None
    if pidfile is not None:
        pidfile.check()  # before anything is made: a refused start leaves no trace
    logfile = args.logfile or ("%n.log" if args.detach else None)
    log_fd = _daemon.open_log(_daemon.expand_node(logfile, node)) if logfile else None
    if args.detach:
        where = os.path.abspath(_daemon.expand_node(logfile or "", node))
        pid_note = f", pid file {pidfile.path}" if pidfile is not None else ""
        print(f"celeriac: worker {node} runs in the background; log {where}{pid_note}", file=sys.stderr)
        _daemon.detach()
    notes = worker_flags.warnings(args)
    args.pool = worker_flags.pool_of(args.pool)
    privileges = _daemon.drop_privileges(args.uid, args.gid)
    if privileges:
        notes.append(privileges)
    if log_fd is not None:
        _daemon.log_to(log_fd)
    if pidfile is not None:
        pidfile.acquire()
    try:
        return _run_worker(args, hostname, notes)
    finally:
        if pidfile is not None:
            pidfile.release()


def _run_worker(args: argparse.Namespace, hostname: str | None, notes: list[str]) -> int:
    # The worker (consumer, middleware, pools) loads for the command that runs one, not for every command.
    from celeriac.worker import Worker
    from celeriac.worker.events import HEARTBEAT_INTERVAL

    os.environ.update(worker_flags.settings_from_flags(args))
    app = _load_app(args)
    conf = app.conf
    # -B: the beat runs on the worker's loop; several workers with -B are fine (one beat leads). Made
    # first, so that a bad entry stops the start before anything else is set up.
    beat = beat_cli.make_beat(app) if args.beat else None
    include = worker_flags.included(args, list(conf.include))
    if include is not None:
        os.environ["CELERIAC_INCLUDE"] = ",".join(include)  # for the pool's processes too
        conf.reload_environment()
    setup_logging(
        args.loglevel, conf.worker_log_format, conf.worker_task_log_format, conf.worker_hijack_root_logger
    )
    log = logging.getLogger("celeriac.worker")
    for note in notes:
        log.warning("%s", note)
    queues = worker_flags.served_queues(args, conf.task_default_queue)
    args.queues = ",".join(queues)  # what the workers of --processes N consume as well
    if args.purge:
        purged = app.run(_purge(app, queues))
        log.warning("purged %d message(s) from %s (--purge)", purged, ", ".join(queues))
    if args.processes > 1:
        return _supervise(args, app, hostname or _daemon.node_name(None))
    worker = Worker(
        app,
        queues=queues,
        concurrency=args.concurrency,
        pool=args.pool,
        hostname=hostname,
        app_path=args.app,
        max_tasks_per_child=args.max_tasks_per_child,
        max_memory_per_child=args.max_memory_per_child,
        prefetch_multiplier=args.prefetch_multiplier,
        shutdown_timeout=args.shutdown_timeout,
        task_events=args.task_events,
        heartbeat_interval=0 if args.without_heartbeat else args.heartbeat_interval or HEARTBEAT_INTERVAL,
        autoscale=parse_autoscale(args.autoscale) if args.autoscale else None,
        mingle=not args.without_mingle,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    if args.supervised:
        from celeriac.worker._supervisor import serve_supervised  # as Worker above

        work = serve_supervised(worker)
    else:
        work = worker.arun()
    return asyncio.run(beat_cli.alongside(beat, work) if beat is not None else work)


async def _purge(app: Celeriac, queues: Sequence[str]) -> int:
    broker = app.broker()
    return sum([await broker.purge(q) for q in queues])


# Options of the command line that are not passed on as they are to the workers a supervisor starts.
_NOT_PASSED_ON = frozenset({"command", "hostname", "processes", "supervised"}) | worker_flags.NOT_PASSED_ON
_GLOBAL_OPTIONS = ("app", "broker", "result_backend", "config")


def child_argv(args: argparse.Namespace, node: str) -> list[str]:
    """The command line of one of the workers ``celeriac worker --processes N`` starts: the same
    options, one process, node name ``node``."""

    def options(names: Sequence[str]) -> list[str]:
        argv: list[str] = []
        for name in names:
            value = getattr(args, name)
            if value is None or value is False:
                continue
            option = "--" + name.replace("_", "-")
            # one word with its value, so a value that starts with "-" is not read as an option
            argv.append(option if value is True else f"{option}={value}")
        return argv

    worker_options = [n for n in vars(args) if n not in _NOT_PASSED_ON and n not in _GLOBAL_OPTIONS]
    return [
        sys.executable,
        "-m",
        "celeriac",
        *options(_GLOBAL_OPTIONS),
        "worker",
        *options(worker_options),
        "--hostname",
        node,
        "--supervised",
    ]


def _supervise(args: argparse.Namespace, app: Celeriac, hostname: str) -> int:
    from celeriac.worker._supervisor import Supervisor  # loaded for this command only

    return Supervisor(supervised_children(args, app.conf, hostname)).run()


def supervised_children(args: argparse.Namespace, conf: Settings, hostname: str) -> list[Child]:
    """The workers ``celeriac worker --processes N`` starts: node names, command lines, environments."""
    from celeriac.worker._supervisor import Child, node_name

    children = []
    for index in range(1, args.processes + 1):
        node = node_name(hostname, index)
        # Every worker writes to this stderr: each line starts with the node name that wrote it,
        # also the lines of its pool's child processes, which log with the worker's formats.
        tag = node.replace("%", "%%") + " | "
        env = {
            "CELERIAC_WORKER_LOG_FORMAT": tag + conf.worker_log_format,
            "CELERIAC_WORKER_TASK_LOG_FORMAT": tag + conf.worker_task_log_format,
        }
        own = args
        if args.metrics_port:  # one port each: PORT, PORT+1, ...
            own = argparse.Namespace(**{**vars(args), "metrics_port": args.metrics_port + index - 1})
        children.append(Child(node, child_argv(own, node), env))
    return children


def cmd_call(args: argparse.Namespace) -> int:
    """``celeriac call``: send a task by name, print its id (and with ``--wait``, its result)."""
    app = _load_app(args)
    options: dict[str, Any] = {}
    for key in ("countdown", "expires", "queue", "priority"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.eta:
        options["eta"] = datetime.fromisoformat(args.eta)
    try:
        call_args, call_kwargs = json.loads(args.args), json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise CeleriacError(f"--args and --kwargs must be JSON: {exc}") from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise CeleriacError("--args must be a JSON list and --kwargs a JSON object")
    try:
        result = app.send_task(args.name, call_args, call_kwargs, task=app.tasks.get(args.name), **options)
    except (TypeError, ValueError) as exc:
        raise CeleriacError(f"not sent: {exc}") from None
    print(result.id)
    if args.wait:
        print(json.dumps(result.get(timeout=args.timeout), default=repr))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    """``celeriac result``: print a task's state and result (``--wait`` waits for it to finish)."""
    app = _load_app(args)
    result = app.AsyncResult(args.task_id)
    if args.wait:
        result.get(timeout=args.timeout, propagate=False)
    meta = result.meta()
    print(f"state: {meta.status}")
    print(f"result: {json.dumps(meta.result, default=repr)}")
    if args.traceback and meta.traceback:
        print(meta.traceback)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """``celeriac purge``: delete the waiting messages of queues, after a confirmation unless ``-f``."""
    app = _load_app(args)
    queues = args.queues.split(",") if args.queues else [app.conf.task_default_queue]
    if not args.force:
        if not sys.stdin.isatty():
            raise CeleriacError("purge deletes messages for good: pass -f to confirm")
        answer = input(f"Delete every message waiting in {', '.join(queues)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 1

    async def purge() -> int:
        broker = app.broker()
        return sum([await broker.purge(q) for q in queues])

    print(f"purged {app.run(purge())} message(s) from {', '.join(queues)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``celeriac status``: the broker, how many messages wait in each queue, the dead letters, and the
    workers that answer (pool, running tasks, tasks run, uptime): tables, or one JSON object."""
    app = _load_app(args)
    queues = (
        args.queues.split(",")
        if args.queues
        else sorted({app.conf.task_default_queue, *[t.queue for t in app.tasks.values() if t.queue]})
    )

    async def status() -> tuple[list[tuple[str, int]], int]:
        broker = app.broker()
        sizes = [(q, await broker.size(q)) for q in queues]
        return sizes, len(await broker.dead_letters(limit=1000))

    sizes, dead = app.run(status())
    workers = _workers(app, args.timeout)
    if args.json:
        found = {
            "broker": safe_url(app.broker_url),
            "queues": dict(sizes),
            "dead_letters": dead,
            "workers": workers,
        }
        print(json.dumps(found, default=repr))
        return 0
    from celeriac.cli._tables import emit, make_console, status_tables  # rich: for this command only

    emit(make_console(), *status_tables(safe_url(app.broker_url), sizes, dead, workers))
    return 0


def _workers(app: Celeriac, timeout: float) -> dict[str, dict[str, Any]] | None:
    """The workers answering a ping, each with its ``stats`` and ``active`` replies (None: the broker
    cannot broadcast, so there is no remote control to ask)."""
    try:
        nodes = sorted(node for reply in app.control.ping(timeout=timeout) for node in reply)
    except NotImplementedError:
        return None
    found: dict[str, dict[str, Any]] = {node: {} for node in nodes}
    if nodes:
        inspect = app.control.inspect(nodes, timeout=timeout)
        for kind, replies in (("stats", inspect.stats()), ("active", inspect.active())):
            for node, value in (replies or {}).items():
                if node in found:
                    found[node][kind] = value
    return found


def cmd_control(args: argparse.Namespace) -> int:
    """``celeriac inspect|control COMMAND``: send a remote-control command and print the replies."""
    return run_control(args, _load_app(args))


def cmd_events(args: argparse.Namespace) -> int:
    """``celeriac events``: follow the events on the broker (of ``-A``'s app, or ``-b`` alone)."""
    from celeriac.cli.events import watch  # loaded for this command only

    if args.app:
        app = _load_app(args)
    else:
        from celeriac.app import Celeriac  # no app needed: the broker is all events need

        app = Celeriac("events", broker=args.broker)
    text = args.format == "text"  # a format of lines: --dump is implied
    return watch(app, dump=args.dump or text, freq=args.freq, text=text)


def cmd_beat(args: argparse.Namespace) -> int:
    """``celeriac beat``: publish the app's periodic tasks (docs/periodic-tasks.md)."""
    return beat_cli.run(args, _load_app)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """``celeriac dead-letters list|show|requeue|purge``: see, replay and delete dead letters."""
    return run_dead_letters(args, _load_app(args))


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``celeriac dashboard``: serve /metrics for the whole fleet (uvicorn and Starlette load only then)."""
    return run_dashboard(args, _load_app(args))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``celeriac`` command: parse ``argv`` and run the subcommand; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in worker_flags.NOT_YET:  # what those take is not known: not checked
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        print(f"celeriac {__version__}")
        return 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("celeriac: error: a COMMAND is needed (celeriac --help lists them)", file=sys.stderr)
        return 2
    if args.command in worker_flags.NOT_YET:
        print(f"celeriac: error: celeriac {args.command} is not available yet", file=sys.stderr)
        return 2
    commands = {
        "worker": cmd_worker,
        "call": cmd_call,
        "result": cmd_result,
        "purge": cmd_purge,
        "status": cmd_status,
        "inspect": cmd_control,
        "control": cmd_control,
        "events": cmd_events,
        "dead-letters": cmd_dead_letters,
        "beat": cmd_beat,
        "dashboard": cmd_dashboard,
    }
    try:
        worker_flags.apply_workdir(args)
        if args.command == "demo":
            from celeriac.cli.demo import run_demo  # loaded for this command only

            return run_demo(tasks=args.tasks, concurrency=args.concurrency, pool=args.pool)
        return commands[args.command](args)
    except CeleriacError as exc:
        print(f"celeriac: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

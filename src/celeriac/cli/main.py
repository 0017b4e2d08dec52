"""``celeriac [-A APP] COMMAND``: worker, call, result, purge, status, inspect, control, events, dead-letters,
demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac.cli.control import add_parsers as add_control_parsers
from celeriac.cli.control import run as run_control
from celeriac.cli.dead_letters import add_parser as add_dead_letters_parser
from celeriac.cli.dead_letters import run as run_dead_letters
from celeriac.exceptions import CeleriacError
from celeriac.worker._appref import find_app
from celeriac.worker._logging import setup_logging

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser("worker", help="run a worker")
    worker.add_argument("-Q", "--queues", help="comma-separated queues to consume (default: celery)")
    worker.add_argument("-n", "--hostname", help="node name, e.g. w1@%%h")
    worker.add_argument("-c", "--concurrency", type=int, help="pool size (default: number of CPUs)")
    worker.add_argument("-P", "--pool", choices=["processes", "prefork", "threads", "async", "solo"])
    worker.add_argument("-l", "--loglevel", default=os.environ.get("CELERIAC_LOGLEVEL", "INFO"))
    worker.add_argument("--max-tasks-per-child", type=int)
    worker.add_argument("--max-memory-per-child", type=int, help="KiB of resident memory per child")
    worker.add_argument("--prefetch-multiplier", type=int)
    worker.add_argument("--shutdown-timeout", type=float, help="seconds a warm shutdown waits")
    worker.add_argument(
        "-E",
        "--task-events",
        action="store_true",
        default=None,
        help="send task events, for Flower and `celeriac events` (worker_send_task_events)",
    )
    worker.add_argument("--heartbeat-interval", type=float, help="seconds between worker heartbeats (2)")
    worker.add_argument("--without-heartbeat", action="store_true", help="send no worker heartbeats")
    worker.add_argument(
        "--processes",
        type=_count,
        default=1,
        metavar="N",
        help="run N workers, each with its own pool of -c, under one supervisor (default: 1)",
    )
    # Set by the supervisor on the workers it starts: stdin is its lifeline (see worker._supervisor).
    worker.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)

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

    add_control_parsers(sub)
    add_dead_letters_parser(sub)
    events = sub.add_parser("events", help="follow the workers' events (a live view, or --dump)")
    events.add_argument("--dump", action="store_true", help="print each event as a line of JSON")
    events.add_argument("--freq", type=float, default=1.0, help="seconds between redraws (1)")

    demo = sub.add_parser("demo", help="run a worker on the embedded SQLite default and show it working")
    demo.add_argument("-n", "--tasks", type=int, default=100)
    demo.add_argument("-c", "--concurrency", type=int, default=2)
    demo.add_argument("-P", "--pool", default="processes")
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
    if args.broker or args.result_backend:
        app.conf.reload_environment()
    return app


def cmd_worker(args: argparse.Namespace) -> int:
    """``celeriac worker``: run a worker (or ``--processes N`` of them under a supervisor) until stopped."""
    # The worker (consumer, middleware, pools) loads for the command that runs one, not for every command.
    from celeriac.worker import Worker
    from celeriac.worker.events import HEARTBEAT_INTERVAL

    app = _load_app(args)
    conf = app.conf
    setup_logging(
        args.loglevel, conf.worker_log_format, conf.worker_task_log_format, conf.worker_hijack_root_logger
    )
    hostname = args.hostname.replace("%h", os.uname().nodename) if args.hostname else None
    if args.processes > 1:
        return _supervise(args, app, hostname or f"celeriac@{socket.gethostname()}")  # the worker's default
    worker = Worker(
        app,
        queues=args.queues.split(",") if args.queues else None,
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
    )
    if args.supervised:
        from celeriac.worker._supervisor import serve_supervised  # as Worker above

        return asyncio.run(serve_supervised(worker))
    return worker.run()


# Options of the command line that are not passed on as they are to the workers a supervisor starts.
_NOT_PASSED_ON = frozenset({"command", "hostname", "processes", "supervised"})
_GLOBAL_OPTIONS = ("app", "broker", "result_backend")


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
    from celeriac.worker._supervisor import Child, Supervisor, node_name  # loaded for this command only

    conf = app.conf
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
        children.append(Child(node, child_argv(args, node), env))
    return Supervisor(children).run()


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
    """``celeriac status``: print the broker, how many messages wait in each queue, and the dead letters."""
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
    print(f"broker: {app.broker_url}")
    for queue, size in sizes:
        print(f"queue {queue}: {size} waiting")
    print(f"dead letters: {dead}")
    try:
        nodes = sorted(node for reply in app.control.ping() for node in reply)
    except NotImplementedError:
        return 0  # a broker without broadcasts: no remote control to ask
    print(f"workers: {', '.join(nodes) if nodes else 'none answered'}")
    return 0


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
    return watch(app, dump=args.dump, freq=args.freq)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """``celeriac dead-letters list|show|requeue|purge``: see, replay and delete dead letters."""
    return run_dead_letters(args, _load_app(args))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``celeriac`` command: parse ``argv`` and run the subcommand; returns the exit code."""
    args = _parser().parse_args(argv)
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
    }
    try:
        if args.command == "demo":
            from celeriac.cli.demo import run_demo  # loaded for this command only

            return run_demo(tasks=args.tasks, concurrency=args.concurrency, pool=args.pool)
        return commands[args.command](args)
    except CeleriacError as exc:
        print(f"celeriac: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

"""``celeriac inspect COMMAND`` and ``celeriac control COMMAND``: remote control from the shell.

Both send one command to the workers (all, or ``--destination a,b``) and print the replies as one
table (a row per worker, or per item a worker listed), or all replies as JSON with ``--json``.
Positional arguments after the command are the command's own (``celeriac control rate_limit proj.add
10/m``), converted as the command declares.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from celeriac.exceptions import CeleriacError
from celeriac.worker.control import find_command, known_commands

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.control.registry import Handler

__all__ = ["add_parsers", "print_replies", "run"]


def add_parsers(sub: Any) -> None:
    """Add the ``inspect`` and ``control`` subcommands to the ``celeriac`` parser."""
    for kind, text in (("inspect", "ask workers about themselves"), ("control", "change running workers")):
        parser = sub.add_parser(kind, help=text)
        parser.add_argument(
            "name", metavar="COMMAND", help=f"the command: ping, stats, ... ('{kind} help' lists them)"
        )
        parser.add_argument("arguments", nargs="*", metavar="ARG", help="the command's own arguments")
        parser.add_argument("-d", "--destination", help="comma-separated node names (default: every worker)")
        parser.add_argument("-t", "--timeout", type=float, default=1.0, help="seconds to wait for replies")
        parser.add_argument("-j", "--json", action="store_true", help="print the replies as JSON")


def run(args: argparse.Namespace, app: Celeriac) -> int:
    """Send the command and print the replies; 1 when no worker replied, 2 on a bad command line."""
    if args.name == "help":
        for known in known_commands(app):
            if known.kind == args.command:
                usage = " ".join(f"<{name}>" for name, _ in known.args)
                print(f"{known.name} {usage}".rstrip().ljust(40), known.help.replace("``", ""))
        return 0
    handler = find_command(app, args.name)
    if handler is None or handler.kind != args.command:
        raise CeleriacError(
            f"no {args.command} command {args.name!r}; 'celeriac {args.command} help' lists them"
        )
    arguments = _arguments(handler, args.arguments)
    destination = args.destination.split(",") if args.destination else None
    if handler.name == "shutdown":  # workers do not answer it (as Celery's do not)
        app.control.broadcast("shutdown", arguments, destination)
        print("shutdown sent")
        return 0
    replies = (
        app.control.broadcast(handler.name, arguments, destination, reply=True, timeout=args.timeout) or []
    )
    if args.json:
        by_node: Any = {k: v for reply in replies for k, v in reply.items()}
        print(json.dumps(by_node if args.command == "inspect" else replies, default=repr))
    else:
        print_replies(replies, handler.name)
    if not replies:
        print("no worker replied in time", file=sys.stderr)
        return 1
    return 0


def _arguments(handler: Handler, given: list[str]) -> dict[str, Any]:
    """The command's arguments from the command line: its declared ones in order; a variadic one takes
    the rest as a list."""
    found: dict[str, Any] = {}
    names = list(handler.args)
    for n, text in enumerate(given):
        if handler.variadic and (n >= len(names) or names[n][0] == handler.variadic):
            found.setdefault(handler.variadic, []).append(text)
            continue
        if n >= len(names):
            raise CeleriacError(
                f"{handler.name} takes at most {len(names)} argument(s): {given[n:]!r} left over"
            )
        name, kind = names[n]
        try:
            found[name] = kind(text)
        except ValueError as exc:
            raise CeleriacError(f"{handler.name}: {name} must be a {kind.__name__}, not {text!r}") from exc
    return found


def print_replies(replies: list[dict[str, Any]], command: str = "", file: TextIO | None = None) -> None:
    """Every worker's reply to ``command`` as one table, then how many workers replied."""
    if not replies:
        return
    from celeriac.cli._tables import emit, make_console, replies_table  # rich: for this command only

    emit(make_console(file), replies_table(command, replies), f"{len(replies)} node(s) replied")

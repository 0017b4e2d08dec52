"""``celeriac dead-letters list|show|requeue|purge``: see, replay and delete dead letters from the shell.

Works on every broker through the Broker contract (``dead_letters``, ``requeue_dead_letters``,
``purge_dead_letters``); ``docs/dead-letters.md`` says what each broker keeps and how.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac._redaction import HIDDEN
from celeriac.exceptions import CeleriacError
from celeriac.protocol import decode_task

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import DeadLetter

__all__ = ["add_parser", "run"]

#: Most dead letters ``show`` looks through for an id.
_SHOW_SCAN = 100_000


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), not {text!r}")
    return value


def add_parser(sub: Any) -> None:
    """Add the ``dead-letters`` subcommand (and its own subcommands) to the ``celeriac`` parser."""
    parser = sub.add_parser("dead-letters", help="list, show, requeue or purge dead letters")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the most recent dead letters, newest first")
    listing.add_argument("-Q", "--queue", help="only those of this queue")
    listing.add_argument("--limit", type=_count, default=50, help="at most this many (50)")
    listing.add_argument("--json", action="store_true", help="print them as JSON, in full")

    show = actions.add_parser("show", help="one dead letter in full: reason, headers, arguments")
    show.add_argument("id", metavar="ID", help="the task id")
    show.add_argument("-Q", "--queue", help="look only at this queue's dead letters")
    show.add_argument("--json", action="store_true", help="print it as JSON")

    requeue = actions.add_parser("requeue", help="put dead letters back on their queues, oldest first")
    requeue.add_argument("-Q", "--queue", help="only those of this queue")
    requeue.add_argument("--limit", type=_count, help="at most this many (default: all selected)")
    requeue.add_argument(
        "--id", action="append", dest="ids", metavar="ID", help="only this task id (repeatable)"
    )

    purge = actions.add_parser("purge", help="delete dead letters for good")
    purge.add_argument("-Q", "--queue", help="only those of this queue")
    purge.add_argument("--older-than", type=_seconds, metavar="SECONDS", help="only those older than this")
    purge.add_argument("--keep", type=_count, metavar="N", help="keep the newest N (of the queue)")
    purge.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace, app: Celeriac) -> int:
    """Run the ``dead-letters`` action of ``args``; the exit code (1: nothing found to show)."""
    if args.action == "list":
        letters = app.dead_letters(args.queue, args.limit)
        if args.json:
            print(json.dumps([_as_json(app, letter) for letter in letters], indent=2, default=repr))
        else:
            _print_table(letters)
        return 0
    if args.action == "show":
        found = [d for d in app.dead_letters(args.queue, _SHOW_SCAN) if d.task_id == args.id]
        if not found:
            where = f" of queue {args.queue!r}" if args.queue else ""
            print(f"no dead letter{where} has task id {args.id!r}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps([_as_json(app, letter) for letter in found], indent=2, default=repr))
        else:
            print("\n\n".join(_describe(app, letter) for letter in found))
        return 0
    if args.action == "requeue":
        moved = app.requeue_dead_letters(args.queue, args.limit, ids=args.ids)
        print(f"requeued {moved} dead letter(s)")
        return 0
    return _purge(args, app)


def _purge(args: argparse.Namespace, app: Celeriac) -> int:
    if not args.yes:
        what = _purge_what(args)
        if not sys.stdin.isatty():
            raise CeleriacError(f"purge deletes {what} for good: pass --yes to confirm")
        if input(f"Delete {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    removed = app.purge_dead_letters(args.queue, older_than=args.older_than, keep=args.keep)
    print(f"deleted {removed} dead letter(s)")
    return 0


def _purge_what(args: argparse.Namespace) -> str:
    of = f" of queue {args.queue!r}" if args.queue else ""
    if args.older_than is None and args.keep is None:
        return f"every dead letter{of}"
    limits = []
    if args.older_than is not None:
        limits.append(f"older than {args.older_than:g} s")
    if args.keep is not None:
        limits.append(f"beyond the newest {args.keep}")
    return f"the dead letters{of} {' or '.join(limits)}"


def _when(letter: DeadLetter) -> str:
    if not letter.time:
        return "unknown"
    return datetime.fromtimestamp(letter.time, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _print_table(letters: list[DeadLetter]) -> None:
    if not letters:
        print("no dead letters")
        return
    rows = [
        (_when(d), d.queue or "?", d.task_name or "-", d.task_id or "-", _first_line(d.reason))
        for d in letters
    ]
    header = ("TIME (UTC)", "QUEUE", "TASK", "ID", "REASON")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4])
    print(f"\n{len(letters)} dead letter(s), newest first")


def _decoded(app: Celeriac, letter: DeadLetter) -> tuple[dict[str, Any] | None, str | None]:
    """The task call's arguments (``args``, ``kwargs`` and the rest of its body), or why not."""
    if letter.message is None:
        return None, "the broker could not read the stored message"
    try:
        call = decode_task(
            letter.message,
            accept=app.conf.accept_content,
            max_bytes=app.conf.task_message_max_bytes,
        )
    except Exception as exc:  # the reason it was dead-lettered, often: say it, show the raw body
        return None, f"{type(exc).__name__}: {exc}"
    task = app.tasks.get(call.name)
    args, kwargs = task.redaction.values(call.args, call.kwargs) if task else (call.args, call.kwargs)
    fields = {"args": args, "kwargs": kwargs, "retries": call.retries, "eta": call.eta}
    for name in ("callbacks", "errbacks", "chain", "chord", "group_id", "root_id", "parent_id"):
        value = getattr(call, name)
        if value:
            fields[name] = value
    return fields, None


def _hides(app: Celeriac, letter: DeadLetter) -> bool:
    """Whether the letter is of a task this app marks ``sensitive`` (its raw bytes are not shown)."""
    task = app.tasks.get(letter.task_name or "")
    return bool(task and task.redaction)


def _headers(app: Celeriac, letter: DeadLetter) -> dict[str, Any] | None:
    """The message's headers; a sensitive task's argument reprs hidden whatever the sender wrote."""
    if letter.message is None:
        return None
    headers = dict(letter.message.headers)
    if _hides(app, letter):
        headers.update(argsrepr=HIDDEN, kwargsrepr=HIDDEN)
    return headers


def _raw(data: bytes) -> str:
    """Bytes as text when they are UTF-8, else as base64 (prefixed ``base64:``)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")


def _as_json(app: Celeriac, letter: DeadLetter) -> dict[str, Any]:
    decoded, error = _decoded(app, letter)
    found: dict[str, Any] = {
        "time": letter.time,
        "queue": letter.queue,
        "task": letter.task_name,
        "id": letter.task_id,
        "reason": letter.reason,
        "headers": _headers(app, letter),
        "properties": letter.message.properties if letter.message is not None else None,
    }
    if decoded is not None:
        found.update(decoded)
    else:
        found["undecodable"] = error
        if _hides(app, letter):
            found["body"] = f"{HIDDEN} (task {letter.task_name} is sensitive)"
        elif letter.message is not None:
            found["body"] = _raw(letter.message.body)
        else:
            found["raw"] = _raw(letter.raw)
    return found


def _describe(app: Celeriac, letter: DeadLetter) -> str:
    age = f" ({time.time() - letter.time:.0f} s ago)" if letter.time else ""
    lines = [
        f"id:     {letter.task_id or '-'}",
        f"task:   {letter.task_name or '-'}",
        f"queue:  {letter.queue or '?'}",
        f"time:   {_when(letter)} UTC{age}",
        "reason: " + "\n        ".join(letter.reason.splitlines() or [""]),
    ]
    decoded, error = _decoded(app, letter)
    if decoded is not None:
        lines += [f"{name}: {json.dumps(value, default=str)}" for name, value in decoded.items()]
    else:
        lines.append(f"body:   not decodable ({error})")
        stored = letter.raw if letter.message is None else letter.message.body
        shown = (
            f"{HIDDEN} (task {letter.task_name} is sensitive)" if _hides(app, letter) else _raw(stored)[:2000]
        )
        lines.append(f"{'raw:  ' if letter.message is None else 'bytes:'}  {shown}")
    headers = _headers(app, letter)
    if letter.message is not None and headers is not None:
        lines.append("headers:")
        lines += [f"  {key}: {json.dumps(value, default=str)}" for key, value in headers.items()]
        lines.append("properties:")
        lines += [
            f"  {key}: {json.dumps(value, default=str)}" for key, value in letter.message.properties.items()
        ]
    return "\n".join(lines)

"""Celery's flags on celeriac's command line: accepted, refused clearly, or warned about."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from celeriac import __version__
from celeriac.cli import worker_flags
from celeriac.cli.main import _parser, child_argv, main, supervised_children
from celeriac.config import Settings
from celeriac.exceptions import CeleriacError


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"celeriac {__version__}"


@pytest.mark.parametrize("command", worker_flags.NOT_YET)
def test_celery_commands_we_lack_say_so(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-A", "proj", command, "--some-option", "x"]) == 2
    assert capsys.readouterr().err.strip() == f"celeriac: error: celeriac {command} is not available yet"


@pytest.mark.parametrize("command", [["worker", "-B"], ["beat"]])
def test_a_scheduler_other_than_celerys_default_is_refused(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
    assert (
        main(
            [
                "-A",
                "tests.unit.sample_config",
                *command,
                "-S" if command[0] == "beat" else "--scheduler",
                scheduler,
            ]
        )
        == 2
    )
    assert f"-S {scheduler}: celeriac beat runs the beat_schedule setting" in capsys.readouterr().err


def test_a_bad_beat_schedule_entry_stops_the_beat_with_its_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "badbeat.py").write_text(
        "from celeriac import Celeriac\n"
        "app = Celeriac('badbeat', broker='memory://badbeat')\n"
        "app.conf.beat_schedule = {'nightly': {'task': 't', 'schedule': 'daily'}}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for command in (["beat", "-s", "celerybeat-schedule"], ["worker", "-B"]):
        assert main(["-A", "badbeat", *command]) == 2
        assert "beat_schedule entry 'nightly': 'schedule' must be seconds" in capsys.readouterr().err


def test_every_celery_worker_flag_parses() -> None:
    argv = shlex.split(
        "-A proj -b redis:// --result-backend redis:// --loader x --config cfg --workdir . -C -q "
        "--skip-checks "
        "worker -n w1@%h -D -S state.db -l INFO -O fair --prefetch-multiplier 2 --disable-prefetch -c 2 "
        "-P prefork -E --events --task-events --time-limit 30 --soft-time-limit 20 --max-tasks-per-child 5 "
        "--pool-start-method spawn --max-memory-per-child 1000 --purge --discard -Q a,b -X b -I m1,m2 "
        "--without-gossip --without-heartbeat --heartbeat-interval 3 -B -s sched --schedule sched "
        "--schedule-filename sched --scheduler x -f log --logfile log --pidfile pid --uid 0 --gid 0 "
        "--umask 022 --executable python"
    )
    args = _parser().parse_args(argv)
    assert args.detach and args.beat and args.purge and args.task_events and args.time_limit == 30.0
    assert args.config == "cfg" and args.include == "m1,m2" and args.exclude_queues == "b"


def test_what_is_not_done_as_celery_does_is_one_warning_each() -> None:
    args = _parser().parse_args(
        shlex.split("worker -O fair -S s.db --without-gossip --pool-start-method fork -s f --executable py")
    )
    notes = worker_flags.warnings(args)
    assert len(notes) == 6
    assert notes[0].startswith("-O fair: always celeriac's behaviour")
    assert "revocations are kept in the result backend" in notes[1]


def test_excluded_queues_and_included_modules() -> None:
    args = _parser().parse_args(shlex.split("worker -Q a,b,c -X b -I x,y"))
    assert worker_flags.served_queues(args, "celery") == ["a", "c"]
    assert worker_flags.included(args, ["y", "z"]) == ["y", "z", "x"]
    args = _parser().parse_args(shlex.split("worker -X celery"))
    with pytest.raises(CeleriacError, match="leaves no queue to consume"):
        worker_flags.served_queues(args, "celery")


def test_the_workers_a_supervisor_starts_get_no_daemon_flags() -> None:
    args = _parser().parse_args(
        shlex.split("-A proj --config cfg worker --processes 2 --pidfile p --logfile l -D -O fair --purge -E")
    )
    argv = child_argv(args, "w-1@h")
    assert "--config=cfg" in argv and "--task-events" in argv
    assert not [
        a for a in argv if a.startswith(("--pidfile", "--logfile", "--detach", "--optimization", "--purge"))
    ]


def test_celery_pools_we_lack_run_a_stand_in_and_concurrency_auto() -> None:
    args = _parser().parse_args(shlex.split("worker -P gevent -c 500"))
    notes = worker_flags.warnings(args)
    assert notes == [
        "-P gevent: celeriac has no gevent pool; runs the threads pool instead "
        "(async def tasks run natively on every pool)"
    ]
    assert worker_flags.pool_of(args.pool) == "threads" and args.concurrency == 500
    assert _parser().parse_args(shlex.split("worker -c auto")).concurrency is None
    with pytest.raises(SystemExit):
        _parser().parse_args(shlex.split("worker -c 0"))


def test_supervised_workers_take_one_metrics_port_each() -> None:
    args = _parser().parse_args(["-A", "proj", "worker", "--processes", "3", "--metrics-port", "9808"])
    children = supervised_children(args, Settings(), "w@host")
    ports = [[a for a in child.argv if a.startswith("--metrics-port=")] for child in children]
    assert ports == [["--metrics-port=9808"], ["--metrics-port=9809"], ["--metrics-port=9810"]]
    assert args.metrics_port == 9808  # the command's own options are left as they were

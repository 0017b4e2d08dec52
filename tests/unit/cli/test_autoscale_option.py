"""``celeriac worker --autoscale MAX,MIN``: read as Celery reads it, refused with a clear message when it
is not a range, and passed on unchanged to the workers a supervisor starts."""

from __future__ import annotations

import pytest

from celeriac.cli.main import _parser, child_argv


def test_autoscale_is_kept_as_given_and_passed_on_to_supervised_workers() -> None:
    args = _parser().parse_args(["-A", "app", "worker", "--autoscale", "10,3", "--processes", "2"])
    assert args.autoscale == "10,3"
    assert "--autoscale=10,3" in child_argv(args, "w1@host")


@pytest.mark.parametrize("text", ["ten", "1,2,3", "0", "4,-1"])
def test_a_bad_autoscale_is_refused_with_its_reason(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["-A", "app", "worker", f"--autoscale={text}"])
    assert exit_.value.code == 2
    assert "--autoscale" in capsys.readouterr().err

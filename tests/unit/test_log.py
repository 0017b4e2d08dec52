"""``get_task_logger``: records logged inside a task name it, from either import path."""

from __future__ import annotations

import logging

import pytest

from celeriac import Celeriac
from celeriac.log import get_task_logger
from celeriac.utils import log as celery_path


def test_records_carry_the_running_tasks_name_and_id(caplog: pytest.LogCaptureFixture) -> None:
    app = Celeriac("proj", broker="memory://log-unit", backend="memory://log-unit")
    logger = get_task_logger("proj.tasks")

    @app.task(name="proj.tasks.hello")
    def hello() -> None:
        logger.warning("inside")

    with caplog.at_level(logging.INFO, logger="proj.tasks"):
        hello.apply(task_id="t-1")
        logger.warning("outside")
    inside, outside = caplog.records
    assert (inside.task_name, inside.task_id) == ("proj.tasks.hello", "t-1")  # type: ignore[attr-defined]
    assert (outside.task_name, outside.task_id) == ("???", "???")  # type: ignore[attr-defined]
    assert logging.Formatter("%(task_name)s[%(task_id)s] %(message)s").format(inside) == (
        "proj.tasks.hello[t-1] inside"
    )


def test_celerys_path_gives_the_same_function_and_the_logger_is_the_named_one() -> None:
    assert celery_path.get_task_logger is get_task_logger
    logger = get_task_logger("proj.other")
    assert logger is logging.getLogger("proj.other")
    assert len(get_task_logger("proj.other").filters) == 1  # asking twice adds nothing

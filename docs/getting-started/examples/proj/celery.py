"""The project's app. Its tasks live in the modules listed in ``include``."""

from celeriac import Celery

app = Celery("proj", include=["proj.tasks", "proj.retrying", "proj.aio"])

app.conf.update(
    task_routes={"proj.tasks.mul": {"queue": "hipri"}},
    task_track_started=True,
)

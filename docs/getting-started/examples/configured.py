"""An app whose settings live in a module of their own (celeryconfig.py)."""

from celeriac import Celery

app = Celery("configured")
app.config_from_object("celeryconfig")

# Settings can also be changed in code; every name is checked, a typo is an error.
app.conf.update(result_extended=True)


@app.task
def mul(x: int, y: int) -> int:
    return x * y

"""An example project. ``celeriac -A proj worker`` finds the app in proj/celery.py."""

from proj.celery import app

__all__ = ["app"]

"""Celery's ``celery.utils`` import paths that task code uses, kept so that such code moves over as it is.

Only ``celeriac.utils.log`` lives here; it re-exports ``celeriac.log``.
"""

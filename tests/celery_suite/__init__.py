"""./dev celery-suite: Celery 5.7's own integration tests against a celeriac (or a real Celery) worker."""

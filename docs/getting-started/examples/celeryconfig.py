"""Settings for configured.py, under Celery's names. Lower-case module attributes are settings."""

task_serializer = "json"
accept_content = ["json"]
task_track_started = True
task_time_limit = 300  # seconds; a task still running after this is stopped
worker_concurrency = 4

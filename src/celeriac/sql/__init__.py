"""SQL databases through SQLAlchemy (SQLite, the embedded default; PostgreSQL; MySQL/MariaDB): the broker
(``sql.broker``), the result backend in Celery's ``celery_taskmeta`` layout (``sql.backend``) and the
engine both use (``sql.database``).
"""

"""Redis: the broker (``redis.broker``), the result backend (``redis.backend``), the clients both use
(``redis.client``) and their Lua scripts, stored in Celery's key layout.

Nothing is imported here, so naming a module of this package loads only what that module needs;
redis-py is imported when a client is made (``pip install 'celeriac[redis]'``).
"""

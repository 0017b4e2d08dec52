"""The real Celery with ``app.setup_security()``, for the signing interop tests (a subprocess only).

``SIGNING_DIR`` holds ``alice.key``, ``alice.pem`` and the trusted store ``store/``; the tests write
them. Setting up security changes kombu's registry for the whole process, so this module is only ever
imported by a ``celery worker`` or a client subprocess, never by the test process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.interop import celery_redis_app
from tests.interop.redis_fleet_tasks import REDIS_URL, WORK
from tests.signing_keys import signing_settings

app = celery_redis_app.build(REDIS_URL, **signing_settings(Path(os.environ["SIGNING_DIR"])))
app.setup_security()

if __name__ == "__main__":
    # A client: send one signed task, print its id. Arguments: queue, ledger, n.
    queue, ledger, n = sys.argv[1:4]
    print(app.send_task(WORK, (ledger, int(n)), queue=queue).id)

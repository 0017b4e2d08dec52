"""The backend in force when a broker is configured and ``result_backend`` is not: it keeps nothing."""

from __future__ import annotations

from collections.abc import Sequence

from celeriac.backends.base import Backend, ResultMeta
from celeriac.exceptions import ConfigurationError


class DisabledBackend(Backend):
    schemes = ("disabled",)

    async def store(self, metas: Sequence[ResultMeta]) -> None:
        return None

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        raise ConfigurationError(
            "no result backend is configured: set result_backend (e.g. "
            "'redis://localhost' or 'db+sqlite:///results.sqlite3') to read results"
        )

    async def forget(self, task_id: str) -> None:
        return None

"""The backend in force when a broker is configured and ``result_backend`` is not: it keeps nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celeriac.backends.base import Backend, ChordClaim, ChordPart, ResultMeta
from celeriac.exceptions import ConfigurationError


def _unconfigured(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"no result backend is configured: set result_backend (e.g. "
        f"'redis://localhost' or 'db+sqlite:///results.sqlite3') to {what}"
    )


class DisabledBackend(Backend):
    schemes = ("disabled",)

    async def store(self, metas: Sequence[ResultMeta]) -> None:
        return None

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        raise _unconfigured("read results")

    async def forget(self, task_id: str) -> None:
        return None

    async def save_group(self, group_id: str, result: Any) -> None:
        raise _unconfigured("save groups")

    async def restore_group(self, group_id: str) -> Any | None:
        raise _unconfigured("restore groups")

    async def forget_group(self, group_id: str) -> None:
        return None

    async def chord_part(
        self, group_id: str, part: ChordPart, size: int, *, lease: float = 60.0
    ) -> ChordClaim | None:
        raise _unconfigured("run chords")

    async def chord_done(self, claim: ChordClaim) -> None:
        raise _unconfigured("run chords")

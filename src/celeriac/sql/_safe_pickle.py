"""Read the pickled saved groups that Celery leaves in ``celery_tasksetmeta``, without running its code.

Celery up to 5.6 kept a saved group there as SQLAlchemy's ``PickleType``: the pickled
``celery.result.GroupResult`` object itself, with its ``AsyncResult`` members and, through them, the
result backend and the app. Celery 5.7 still pickles the object when ``result_serializer`` is pickle.
Plain ``pickle.loads`` would import and call whatever such bytes name (anyone who can write the table
could run code in every process that restores a group), so this unpickler imports nothing:

* lists, tuples, dicts, sets, strings, bytes, numbers, booleans and None are built as usual (pickle
  makes those without naming a class);
* ``celery.result.GroupResult`` and ``AsyncResult`` become Celery's result tuples
  (``[[id, parent], [members]]`` and ``[[id, parent], None]``), built by functions of this module.
  An app's own result classes are pickled as ``celery.app.base._unpickle_appattr("GroupResult",
  args)``; that name is read the same way;
* any other name from Celery, kombu or ``datetime`` (the backend and app a result drags along) becomes
  an inert placeholder that takes any arguments and does nothing;
* every other name is refused.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

from celeriac.exceptions import DecodeError

__all__ = ["loads"]

#: Modules whose names may appear in a pickled Celery result; none is ever imported.
_INERT_MODULES = ("celery", "kombu", "billiard", "datetime")


class _Inert:
    """What a pickled backend, app or timedelta becomes: it accepts anything and means nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _task_result(
    id: Any, backend: Any = None, task_name: Any = None, app: Any = None, parent: Any = None, *_: Any
) -> list[Any]:
    return [[id, parent if isinstance(parent, list) else None], None]


def _group_result(id: Any = None, results: Any = None, *_: Any, **__: Any) -> list[Any]:
    # The members' list itself, not a copy: pickle may fill it after this call.
    return [[id, None], results if isinstance(results, list) else list(results or ())]


def _app_attribute(name: Any, args: Any = ()) -> Any:
    builders: dict[Any, Callable[..., list[Any]]] = {
        "AsyncResult": _task_result,
        "GroupResult": _group_result,
    }
    builder = builders.get(name)
    return _Inert() if builder is None else builder(*args)


_RESULTS = {
    ("celery.result", "AsyncResult"): _task_result,
    ("celery.result", "GroupResult"): _group_result,
    ("celery.app.base", "_unpickle_appattr"): _app_attribute,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        builder = _RESULTS.get((module, name))
        if builder is not None:
            return builder
        if module.partition(".")[0] in _INERT_MODULES:
            return _Inert
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickled group")


def loads(data: bytes) -> Any:
    """The pickled value of ``data`` with Celery's result objects as result tuples (see the module)."""
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise DecodeError(f"cannot read a pickled saved group: {exc}") from exc

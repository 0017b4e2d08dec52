"""The restricted unpickler for Celery's pickled saved groups: plain data and result tuples only."""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest

from celeriac.exceptions import DecodeError
from celeriac.sql import _safe_pickle


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned > /dev/null",))


class _Sneaky:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("__import__('os').system('true')",))


def test_plain_data_comes_back() -> None:
    value = [["g", None], [[["t", None], None]], {"k": (1, 2.5, b"x", True, None)}]
    assert _safe_pickle.loads(pickle.dumps(value)) == value


@pytest.mark.parametrize("payload", [_Evil(), _Sneaky(), [1, _Evil()]])
def test_other_names_are_refused_and_nothing_runs(payload: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pickle.dumps(payload)
    called: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(DecodeError, match="refusing"):
        _safe_pickle.loads(data)
    assert called == []


def test_celery_names_are_never_imported() -> None:
    # A name under celery.* that does not exist: an import would fail; we make an inert placeholder.
    data = b"ccelery.nope\nThing\n(Varg\ntR."  # protocol 0: celery.nope.Thing("arg")
    loaded = _safe_pickle.loads(data)
    assert type(loaded).__module__ == "celeriac.sql._safe_pickle"


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        _safe_pickle.loads(b"\x80\x04not a pickle")

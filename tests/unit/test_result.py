import pytest

from celeriac._exception_records import exception_from_dict, exception_to_dict
from celeriac.exceptions import RemoteTaskError, SoftTimeLimitExceeded


def test_builtin_exceptions_come_back_as_themselves():
    exc = exception_from_dict(exception_to_dict(ValueError("bad", 1)))
    assert type(exc) is ValueError and exc.args == ("bad", 1)


def test_celery_exception_names_map_to_ours():
    exc = exception_from_dict(
        {"exc_type": "SoftTimeLimitExceeded", "exc_message": ["x"], "exc_module": "celery.exceptions"}
    )
    assert isinstance(exc, SoftTimeLimitExceeded)


def test_a_record_never_makes_us_import_a_module():
    import sys

    assert "antigravity_module_xyz" not in sys.modules
    exc = exception_from_dict(
        {"exc_type": "Boom", "exc_message": ["m"], "exc_module": "antigravity_module_xyz"}
    )
    assert isinstance(exc, RemoteTaskError)
    assert type(exc).__name__ == "Boom" and type(exc).__module__ == "antigravity_module_xyz"
    assert "antigravity_module_xyz" not in sys.modules
    # round trip keeps the original names
    assert exception_to_dict(exc) == {
        "exc_type": "Boom",
        "exc_message": ["m"],
        "exc_module": "antigravity_module_xyz",
    }


def test_non_exception_names_are_not_trusted():
    exc = exception_from_dict({"exc_type": "system", "exc_message": ["rm -rf"], "exc_module": "os"})
    assert isinstance(exc, RemoteTaskError)


@pytest.mark.parametrize("junk", [None, "text", {"no": "type"}])
def test_junk_records_become_remote_errors(junk):
    assert isinstance(exception_from_dict(junk), RemoteTaskError)

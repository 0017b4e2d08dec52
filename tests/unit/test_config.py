import types

import pytest

from celeriac import Celeriac
from celeriac.config import Settings, settings_from_object
from celeriac.exceptions import ConfigurationError


def test_defaults_use_celery_names():
    conf = Settings(environ={})
    assert conf.task_serializer == "json"
    assert conf["accept_content"] == ["json"]
    assert conf.task_default_queue == "celery"
    assert conf.result_expires == 86400.0


def test_unknown_setting_names_the_closest_known_one():
    conf = Settings(environ={})
    with pytest.raises(ConfigurationError, match="did you mean 'task_serializer'"):
        conf.update(task_serializr="json")
    with pytest.raises(ConfigurationError, match="did you mean 'broker_url'"):
        conf["broker_ulr"] = "memory://"


def test_wrong_type_is_refused_with_what_was_expected():
    conf = Settings(environ={})
    with pytest.raises(ConfigurationError, match=r"worker_concurrency.*must be int"):
        conf.worker_concurrency = "four"
    with pytest.raises(ConfigurationError, match="not a bool"):
        conf.worker_concurrency = True


def test_update_is_all_or_nothing():
    conf = Settings(environ={})
    with pytest.raises(ConfigurationError):
        conf.update(task_serializer="msgpack", nonsense=1)
    assert conf.task_serializer == "json"


def test_environment_variables_win_and_are_typed():
    conf = Settings(
        environ={
            "CELERIAC_TASK_ACKS_LATE": "false",
            "CELERIAC_WORKER_CONCURRENCY": "3",
            "CELERIAC_ACCEPT_CONTENT": "json,msgpack",
            "PATH": "/bin",
        }
    )
    conf.update(worker_concurrency=8)
    assert conf.task_acks_late is False
    assert conf.worker_concurrency == 3
    assert conf.accept_content == ["json", "msgpack"]


def test_misspelt_environment_variable_is_an_error():
    with pytest.raises(ConfigurationError, match="CELERIAC_BROKER_URL"):
        Settings(environ={"CELERIAC_BROKER_URLL": "memory://"})


def test_config_from_module_object_mapping_and_dotted_path():
    module = types.ModuleType("celeryconfig")
    module.task_serializer = "yaml"
    module.helper = lambda: None
    module.CONSTANT = 1
    assert settings_from_object(module) == {"task_serializer": "yaml"}
    assert settings_from_object({"result_expires": 10}) == {"result_expires": 10}
    assert settings_from_object("tests.unit.sample_config")["task_default_queue"] == "sample"
    assert settings_from_object("tests.unit.sample_config:Config") == {"worker_concurrency": 5}


def test_django_style_namespace():
    found = settings_from_object(
        {"CELERY_BROKER_URL": "memory://", "CELERY_TASK_ALWAYS_EAGER": True, "DEBUG": True},
        namespace="CELERY",
    )
    assert found == {"broker_url": "memory://", "task_always_eager": True}


def test_app_config_from_object_and_kwargs():
    app = Celeriac("proj", broker="memory://x", task_default_queue="q1")
    assert app.broker_url == "memory://x"
    app.config_from_object({"task_default_queue": "q2"})
    assert app.conf.task_default_queue == "q2"
    with pytest.raises(ConfigurationError, match="cannot import configuration"):
        app.config_from_object("no_such_module_here")


def test_embedded_default_is_sqlite_for_both():
    app = Celeriac("proj")
    assert app.broker_url == "sqlite:///celeriac.sqlite3"
    assert app.backend_url == "db+sqlite:///celeriac.sqlite3"
    assert Celeriac("p", broker="memory://").backend_url == "disabled://"

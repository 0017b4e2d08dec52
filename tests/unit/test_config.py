import types

import pytest

from celeriac import Celeriac
from celeriac.config import Settings, settings_from_object
from celeriac.exceptions import ConfigurationError, ConfigurationWarning


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
    assert app.broker_url == "sqlite:///proj.celeriac.sqlite3"
    assert app.backend_url == "db+sqlite:///proj.celeriac.sqlite3"
    assert Celeriac("p", broker="memory://").backend_url == "disabled://"


def test_a_celery_setting_we_do_not_implement_loads_with_one_warning_naming_it():
    app = Celeriac("proj")
    with pytest.warns(
        ConfigurationWarning, match="'beat_scheduler' is Celery's, but celeriac does not"
    ) as caught:
        app.config_from_object({"beat_scheduler": "django_celery_beat.schedulers:DatabaseScheduler"})
    assert len(caught) == 1
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    with pytest.warns(ConfigurationWarning, match="'worker_state_db'"):
        app.conf.worker_state_db = "/var/run/celery/state.db"
    assert app.conf.worker_state_db == "/var/run/celery/state.db"  # kept, as set
    assert app.conf.beat_sync_every is None  # a Celery name not set reads as unset, not as an error
    with pytest.warns(ConfigurationWarning, match="'worker_log_color'"):
        Settings(environ={"CELERIAC_WORKER_LOG_COLOR": "false"})


def test_a_truly_unknown_setting_is_still_an_error():
    with pytest.raises(ConfigurationError, match="unknown setting 'beat_schedul'; did you mean"):
        settings_from_object({"beat_schedul": {}})
    with pytest.raises(ConfigurationError, match="unknown setting 'no_such_thing'"):
        settings_from_object({"CELERY_NO_SUCH_THING": 1}, namespace="CELERY")


def test_old_upper_case_names_are_read_as_the_new_ones_with_a_warning():
    module = types.ModuleType("oldconfig")
    module.BROKER_URL = "memory://old"
    module.CELERY_RESULT_BACKEND = "memory://"
    module.CELERYD_CONCURRENCY = 3
    module.CELERY_ALWAYS_EAGER = False
    module.CELERYD_TASK_TIME_LIMIT = 10
    module.DEBUG = True  # a constant of the module: not a setting
    with pytest.warns(ConfigurationWarning) as caught:
        found = settings_from_object(module)
    assert found == {
        "broker_url": "memory://old",
        "result_backend": "memory://",
        "worker_concurrency": 3,
        "task_always_eager": False,
        "task_time_limit": 10,
    }
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 5
    assert "setting 'CELERYD_CONCURRENCY' is Celery's old name of 'worker_concurrency'" in messages[1]
    # The new name given as well wins.
    with pytest.warns(ConfigurationWarning, match="'broker_url' is given as well and wins"):
        assert settings_from_object({"BROKER_URL": "memory://old", "broker_url": "memory://new"}) == {
            "broker_url": "memory://new"
        }


def test_a_django_settings_module_with_celery_beat_schedule_loads(tmp_path, monkeypatch):
    (tmp_path / "djsettings.py").write_text(
        "from datetime import timedelta\n"
        "DEBUG = True\n"
        "INSTALLED_APPS = ['django_celery_beat']\n"
        "CELERY_BROKER_URL = 'memory://dj'\n"
        "CELERY_TASK_ALWAYS_EAGER = True\n"
        "CELERY_ALWAYS_EAGER = True\n"  # an old name under the namespace
        "CELERY_BEAT_SCHEDULE = {'tick': {'task': 'proj.tick', 'schedule': timedelta(seconds=30)}}\n"
        "CELERY_BEAT_SCHEDULER = 'django_celery_beat.schedulers:DatabaseScheduler'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celeriac("proj")
    with pytest.warns(ConfigurationWarning) as caught:
        app.config_from_object("djsettings", namespace="CELERY")
    assert sorted(str(w.message).split("'")[1] for w in caught) == [
        "CELERY_ALWAYS_EAGER",
        "beat_scheduler",
    ]
    assert app.broker_url == "memory://dj" and app.conf.task_always_eager is True
    assert app.conf.beat_schedule["tick"]["task"] == "proj.tick"


def test_two_apps_in_one_folder_get_a_file_each():
    assert Celeriac("billing").broker_url == "sqlite:///billing.celeriac.sqlite3"
    assert Celeriac("mail").backend_url == "db+sqlite:///mail.celeriac.sqlite3"
    assert Celeriac("a b/c").default_sqlite == "a_b_c.celeriac.sqlite3"
    # Without a name (or as a script's __main__, which the worker imports under another name), one file.
    assert Celeriac().broker_url == Celeriac("__main__").broker_url == "sqlite:///celeriac.sqlite3"

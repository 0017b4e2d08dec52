import inspect
import re

import pytest

from celeriac import Celeriac, Task, shared_task
from celeriac.exceptions import ConfigurationError, NotRegistered
from celeriac.routing import Router


@pytest.fixture
def app():
    return Celeriac("proj", broker="memory://tasks-unit", backend="memory://tasks-unit")


def test_task_names_options_and_direct_call(app):
    @app.task
    def add(x, y):
        return x + y

    @app.task(name="custom.mul", max_retries=7, rate_limit="10/m", queue="math")
    def mul(x, y):
        return x * y

    assert add.name == "tests.unit.test_task.add"
    assert add(2, 3) == 5
    assert mul.name == "custom.mul" and mul.max_retries == 7 and mul.queue == "math"
    assert app.get_task("custom.mul") is mul
    with pytest.raises(NotRegistered):
        app.get_task("nope")


def test_unknown_task_option_is_refused(app):
    with pytest.raises(TypeError, match="did you mean 'max_retries'"):
        app.task(max_retrys=3)(lambda: None)


def test_bind_and_base_class_hooks(app):
    class Base(Task):
        custom = "yes"

    @app.task(bind=True, base=Base)
    def whoami(self):
        return self.custom, self.request.id

    assert isinstance(whoami, Base)
    assert whoami() == ("yes", None)


def test_typing_checks_arguments_when_sent(app):
    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(TypeError, match=r"add\(\) missing a required argument: 'y'"):
        add.delay(1)

    @app.task(typing=False)
    def loose(x):
        return x

    loose.check_arguments([1], {})


def _fits_by_binding(fn, bind, args, kwargs):
    try:
        inspect.signature(fn).bind(*((None, *args) if bind else args), **kwargs)
    except TypeError:
        return False
    return True


def _plain(x, y=1): ...
def _bound(self, x, /, y=2, z=3): ...
def _starred(x, *rest): ...
def _keyword_only(x, *, flag=False): ...
def _kwargs(x, **extra): ...
def _nothing(): ...


@pytest.mark.parametrize(
    ("fn", "bind"),
    [
        (_plain, False),
        (_bound, True),
        (_starred, False),
        (_keyword_only, False),
        (_kwargs, False),
        (_nothing, False),
    ],
)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([], {}),
        ([1], {}),
        ([1, 2], {}),
        ([1, 2, 3], {}),
        ([1, 2, 3, 4], {}),
        ([1], {"y": 2}),
        ([], {"x": 1}),
        ([1], {"flag": True}),
        ([1], {"nope": 1}),
    ],
)
def test_argument_check_agrees_with_binding(app, fn, bind, args, kwargs):
    # The worker checks every message; its shortcut must refuse exactly what binding refuses.
    task = app.task(bind=bind, name=f"fits.{fn.__name__}")(fn)
    fits = _fits_by_binding(fn, bind, args, kwargs)
    if fits:
        task.check_arguments(args, kwargs)
    else:
        with pytest.raises(TypeError, match=rf"fits\.{fn.__name__}\(\)"):
            task.check_arguments(args, kwargs)


def test_shared_task_registers_with_every_app():
    first = Celeriac("one", broker="memory://")

    @shared_task
    def ping():
        return "pong"

    second = Celeriac("two", broker="memory://")
    assert ping.name in first.tasks and ping.name in second.tasks


def test_apply_runs_locally_with_retries(app):
    calls = []

    @app.task(bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self):
        calls.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry()
        return "done"

    result = flaky.apply()
    assert result.get() == "done" and calls == [0, 1, 2]
    assert result.state == "SUCCESS"


def test_apply_failure_is_kept_or_raised(app):
    @app.task
    def boom():
        raise KeyError("k")

    result = boom.apply()
    assert result.state == "FAILURE"
    with pytest.raises(KeyError):
        result.get()
    with pytest.raises(KeyError):
        boom.apply(throw=True)


def test_always_eager(app):
    app.conf.task_always_eager = True

    @app.task
    async def double(x):
        return x * 2

    assert double.delay(21).get() == 42


def test_autoretry_with_backoff_gives_up_after_max_retries(app):
    attempts = []

    @app.task(
        autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=False, retry_kwargs={"countdown": 0}
    )
    def shaky():
        attempts.append(1)
        raise ConnectionError("down")

    result = shaky.apply()
    assert len(attempts) == 4
    assert isinstance(result.result, ConnectionError)


def test_backoff_countdown_follows_celery_formula(app):
    @app.task(retry_backoff=2, retry_backoff_max=30, retry_jitter=False)
    def t():
        pass

    assert [t.backoff_countdown(n) for n in range(5)] == [2, 4, 8, 16, 30]


def test_router_dicts_globs_regexes_and_functions():
    def by_function(name, args, kwargs, options, task=None):
        return "fn-queue" if name == "special" else None

    router = Router(
        [
            {
                "exact.task": "q-exact",
                "images.*": {"queue": "q-images", "priority": 3},
                re.compile(r"^video\..*"): "q-video",
            },
            by_function,
        ]
    )
    assert router.route("exact.task", [], {}, {}) == {"queue": "q-exact"}
    assert router.route("images.resize", [], {}, {}) == {"queue": "q-images", "priority": 3}
    assert router.route("video.encode", [], {}, {}) == {"queue": "q-video"}
    assert router.route("special", [], {}, {}) == {"queue": "fn-queue"}
    assert router.route("other", [], {}, {}) == {}
    with pytest.raises(ConfigurationError):
        Router([42])


def test_unknown_apply_async_option_is_refused(app):
    @app.task
    def t():
        pass

    with pytest.raises(TypeError, match="did you mean 'countdown'"):
        t.apply_async(countdwn=3)


class AutoRetried(Task):
    """A class-based task as Celery's own integration tasks write one."""

    name = "auto_retry_class_task"
    autoretry_for = (ValueError,)
    retry_kwargs = {"max_retries": 3, "countdown": 0}
    max_retries = 3

    def run(self, limit):
        if self.request.retries < limit:
            raise ValueError("not yet")
        return self.request.retries


def test_register_task_takes_a_class_based_task(app):
    from celeriac.testing import start_worker

    task = app.register_task(AutoRetried)
    assert app.tasks["auto_retry_class_task"] is task and isinstance(task, AutoRetried)
    assert task.autoretry_for == (ValueError,) and task.max_retries == 3
    assert app.register_task(task) is task
    with start_worker(app):
        assert task.delay(2).get(timeout=10) == 2
    with pytest.raises(TypeError, match="defines run"):
        app.register_task(Task)


def test_accept_content_may_be_a_set(app):
    app.conf.accept_content = {"json", "pickle"}
    assert app.conf.accept_content == ["json", "pickle"]


def test_pydantic_tasks_validate_arguments_and_dump_results(app):
    from pydantic import BaseModel, ValidationError

    from celeriac.testing import start_worker

    class Order(BaseModel):
        item: str
        quantity: int

    class Receipt(BaseModel):
        total: float

    @app.task(pydantic=True)
    def price(order: Order, discount: Order | None = None) -> Receipt:
        assert isinstance(order, Order)
        return Receipt(total=order.quantity * 2.5)

    @app.task(pydantic=True, bind=True)
    async def aprice(self, order: Order) -> Receipt:
        return Receipt(total=order.quantity * 1.0)

    with start_worker(app):
        assert price.delay({"item": "x", "quantity": "4"}).get(timeout=10) == {"total": 10.0}
        assert price.delay(Order(item="y", quantity=2)).get(timeout=10) == {"total": 5.0}  # sent as its dump
        assert aprice.delay(order={"item": "z", "quantity": 3}).get(timeout=10) == {"total": 3.0}
        with pytest.raises(Exception, match="quantity") as failed:
            price.delay({"item": "x"}).get(timeout=10)
        assert type(failed.value).__name__ == "ValidationError"  # rebuilt by name: pydantic's takes no args

    @app.task(pydantic=True, pydantic_strict=True)
    def strict(order: Order) -> int:
        return order.quantity

    with pytest.raises(ValidationError):
        strict({"item": "x", "quantity": "4"})  # strict: no str to int
    assert strict({"item": "x", "quantity": 4}) == 4

from celeriac import Celeriac, Signature, chain


def test_signature_is_celerys_embedded_dict():
    app = Celeriac("p", broker="memory://canvas-unit")

    @app.task
    def add(x, y):
        return x + y

    sig = add.s(2)
    assert dict(sig) == {
        "task": add.name,
        "args": [2],
        "kwargs": {},
        "options": {},
        "subtask_type": None,
        "immutable": False,
    }
    assert sig(3) == 5
    assert add.si(1, 1).clone((5,)).args == [1, 1]
    again = Signature.from_dict(dict(add.s(1).set(queue="q")), app=app)
    assert again.options == {"queue": "q"} and again.args == [1]


def test_chain_travels_reversed():
    app = Celeriac("p", broker="memory://canvas-unit")

    @app.task
    def t(x=0):
        return x

    flow = t.s(1) | t.s() | t.si(9)
    assert isinstance(flow, chain) and len(flow.tasks) == 3
    first, rest, result = flow._split()
    assert first.args == [1]
    assert [r["args"] for r in rest] == [[9], []]
    assert result.parent is not None and result.parent.parent is not None

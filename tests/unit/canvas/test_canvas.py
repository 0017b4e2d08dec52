import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac import Celeriac, Signature, chain, chord, chunks, group, maybe_signature, xmap
from celeriac.canvas import unsent_tasks
from celeriac.canvas._plan import Plan
from celeriac.exceptions import ChordError


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
    plan = Plan()
    result = flow._copy_for_send()._plan(plan, [], {}, {})
    [(_, first_args, _, options)] = plan.sends
    assert first_args == [1]
    assert [r["args"] for r in options["chain"]] == [[9], []]
    assert result.parent is not None and result.parent.parent is not None


# -- the algebra and the wire shape of every primitive ---------------------------------------------------

algebra = Celeriac("algebra", broker="memory://canvas-algebra")


@algebra.task(name="alg.t")
def t(*args, **kwargs):
    return args


def sigs() -> st.SearchStrategy:
    simple = st.builds(
        lambda args, immutable: algebra.signature("alg.t", args).set(immutable=immutable),
        st.lists(st.integers(), max_size=3),
        st.booleans(),
    )
    return st.recursive(
        simple,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda ts: chain(*ts, app=algebra)),
            st.lists(inner, min_size=1, max_size=3).map(lambda ts: group(*ts, app=algebra)),
            st.tuples(st.lists(inner, min_size=1, max_size=3), inner).map(
                lambda hb: chord(hb[0], hb[1], app=algebra)
            ),
        ),
        max_leaves=8,
    )


@settings(max_examples=150, deadline=None)
@given(sigs())
def test_every_signature_survives_the_wire(sig):
    # What a message carries: JSON, read back as the same primitive with the same content.
    again = maybe_signature(json.loads(json.dumps(sig)), algebra)
    assert type(again) is type(sig)
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(sig))


plain = st.lists(st.integers(), max_size=2).map(lambda a: algebra.signature("alg.t", a))


@settings(max_examples=100, deadline=None)
@given(plain, plain, plain)
def test_pipe_is_associative_on_tasks_and_chains(a, b, c):
    left, right = (a | b) | c, a | (b | c)
    assert isinstance(left, chain) and left == right
    assert [s.args for s in left.tasks] == [a.args, b.args, c.args]


def test_a_group_piped_into_a_task_is_a_chord_and_a_chain_upgrades_it():
    g = group(t.s(1), t.s(2))
    assert isinstance(g | t.s(), chord)
    flow = chain(t.s(0), g, t.s())
    steps = flow._steps()
    assert [type(s).__name__ for s in steps] == ["Signature", "chord"]


def _sent(sig, *args, **options):
    plan = Plan()
    result = sig._copy_for_send()._plan(plan, list(args), {}, options)
    return plan, result


def test_chain_messages_carry_the_rest_reversed_with_frozen_ids():
    plan, result = _sent(t.s(1) | t.s(2) | t.s(3))
    [(_, args, _, options)] = plan.sends
    assert args == [1]
    rest = options["chain"]
    assert [r["args"] for r in rest] == [[3], [2]]
    assert rest[0]["options"]["task_id"] == result.id
    assert result.parent.id == rest[1]["options"]["task_id"]


def test_chord_header_tasks_carry_membership_and_the_body_with_its_size():
    plan, result = _sent(chord([t.s(1), t.s(2) | t.s(3)], t.s()))
    gid = result.parent.id
    assert plan.chords == [(gid, 2)]
    first, chained = plan.sends
    assert (first[3]["group_id"], first[3]["group_index"]) == (gid, 0)
    assert first[3]["chord"]["options"]["task_id"] == result.id
    assert first[3]["chord"]["chord_size"] == 2
    # In a chain, membership rides on the chain's last task (as Celery sends it).
    assert "chord" not in chained[3] or chained[3]["chord"] is None
    last = chained[3]["chain"][0]["options"]
    assert (last["group_id"], last["group_index"]) == (gid, 1) and last["chord"]["chord_size"] == 2


def test_empty_chord_sends_the_body_with_an_empty_list():
    plan, result = _sent(chord([], t.s()))
    assert plan.chords == [] and [(s[1], s[3]["task_id"]) for s in plan.sends] == [([[]], result.id)]


def test_chunks_and_map_are_celerys_builtins():
    plan, result = _sent(chunks(t.s(), [(1, 2), (3, 4), (5, 6)], 2))
    assert [s[0] for s in plan.sends] == ["celery.starmap", "celery.starmap"]
    assert [s[2]["it"] for s in plan.sends] == [[[1, 2], [3, 4]], [[5, 6]]]
    assert len(result) == 2
    m = xmap(t.s(), [1, 2])
    assert m.name == "celery.map" and m.immutable
    assert set(algebra.tasks) >= {"celery.map", "celery.starmap", "celery.chunks", "celery.accumulate"}


def test_sending_twice_makes_new_ids_unless_frozen():
    sig = t.s(1)
    assert _sent(sig)[1].id != _sent(sig)[1].id
    frozen = sig.freeze()
    assert _sent(sig)[1].id == frozen.id


def test_options_partial_arguments_and_immutability():
    sig = t.s(1).set(countdown=5)
    assert sig.clone((0,), {"k": 1}).args == [0, 1] and sig.clone(k=2).options == {"countdown": 5, "k": 2}
    assert t.si(1).clone((0,)).args == [1]
    plan, _ = _sent(group(t.s(1), t.si(2)), 9)
    assert [s[1] for s in plan.sends] == [[9, 1], [2]]


def test_task_code_changes_a_signatures_parts_in_place_as_with_celery():
    sig = t.s(1)
    sig.args = (2,)
    sig.kwargs["x"] = 3
    sig.options["queue"] = "elsewhere"
    sig.options.update(countdown=1)
    sig.immutable = True
    assert dict(sig) == {
        "task": t.name,
        "args": [2],
        "kwargs": {"x": 3},
        "options": {"queue": "elsewhere", "countdown": 1},
        "subtask_type": None,
        "immutable": True,
    }
    sig.args.append(4)
    sig.kwargs = {"y": 5}
    plan, _ = _sent(sig, 0)  # immutable: the parent's argument is not added
    assert plan.sends[0][:3] == (t.name, [2, 4], {"y": 5})
    assert plan.sends[0][3]["queue"] == "elsewhere"


# -- reading a workflow does not change it ----------------------------------------------------------------


def _shape(sig):
    """A signature's content and the primitive of every signature in it, to compare before and after."""
    kinds = []

    def walk(value):
        if isinstance(value, Signature):
            kinds.append(type(value).__name__)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(sig)
    return json.loads(json.dumps(sig)), kinds


def _workflow():
    return chain(
        t.s(0),
        group(t.s(1), t.s(2)),
        t.s(3),
        chord([t.s(6), group(t.s(7), t.s(8))], t.s(9)),
        chunks(t.s(), [(4,), (5,)], 1).set(link_error=[t.si(-1)]),
    )


def test_a_chains_steps_are_read_without_rewriting_its_tasks():
    flow = _workflow()
    before = _shape(flow)
    steps = flow._steps()
    assert [type(s).__name__ for s in steps] == ["Signature", "chord", "chord", "group"]
    assert flow.tasks[0] is steps[0] and steps[1].header is flow.tasks[1]
    assert _shape(flow) == before


def test_listing_the_tasks_of_an_unsent_workflow_leaves_it_as_it_is():
    flow = _workflow()
    before = _shape(flow)
    found = [task.args for task, _, _ in unsent_tasks(flow, errbacks=True)]
    assert found == [[0], [1], [2], [3], [6], [7], [8], [9], [], []]
    assert _shape(flow) == before


def test_reading_a_chords_header_and_body_leaves_it_as_it_is():
    flow = chord([t.s(1), group(t.s(2), t.s(3))], t.s())
    before = _shape(flow)
    assert [s.args for s in flow.tasks] == [[1], []]
    assert flow.header.tasks[1].tasks[0].args == [2] and flow.body is not None
    assert _shape(flow) == before


def test_the_group_of_a_chunks_shares_nothing_that_changes_with_it():
    parts = chunks(t.s(), [(1,), (2,)], 1).set(link_error=[t.si(-1)])
    before = _shape(parts)
    made = parts.group()
    made.link_error(t.si(-2))
    made.set(queue="elsewhere")
    assert _shape(parts) == before


def test_freezing_a_chain_keeps_its_ids_in_the_chain_it_rewrote():
    flow = _workflow()
    result = flow.freeze()
    # Freezing gives every task its id (Celery's documented effect) and keeps the steps it gave them to.
    assert [type(s).__name__ for s in flow.tasks] == ["Signature", "chord", "chord", "group"]
    assert flow.freeze().id == result.id
    assert all(task.id for task, _, _ in unsent_tasks(flow, errbacks=True))


def test_the_errbacks_of_an_unsent_workflow_are_those_sending_would_have_given_its_tasks():
    app = Celeriac("p", broker="memory://canvas-unit")

    @app.task
    def t(x=0):
        return x

    first, second = t.si(-1), t.si(-2)
    # a chord's own errbacks are its body's (a chord's errbacks before those of a chord it is the body
    # of); a chain's its first step's; a group's each task's; header tasks run none; each runs once
    flow = chord([t.s(0)], chord([t.s(1)], t.s(2) | t.s(3)).set(link_error=[first, second]))
    flow.set(link_error=[second])
    found = {tuple(task.args): errbacks for task, errbacks, _ in unsent_tasks(flow, errbacks=True)}
    assert found == {(0,): [], (1,): [], (2,): [second, first], (3,): []}
    spread = group(t.s(4), t.s(5)).set(link_error=[first])
    assert [errbacks for _, errbacks, _ in unsent_tasks(spread, errbacks=True)] == [[first], [first]]
    # a chord's body in another chord's header leaves to the outer body the errbacks that body has too
    member = t.s(6).set(link_error=[first, second], group_id="g", chord=dict(t.s(7).set(link_error=[second])))
    assert [errbacks for _, errbacks, _ in unsent_tasks(member, errbacks=True)] == [[first]]


def test_eagerly_a_group_body_fails_with_the_header_tasks_error_and_the_chain_after_it_with_the_chord_error():
    app = Celeriac("p", broker="memory://canvas-unit")
    app.conf.task_always_eager = True

    @app.task
    def t(x=0):
        return x

    @app.task
    def boom(*_):
        raise KeyError("boom")

    result = chord([t.s(1), boom.s()], group(t.s(), t.s())).apply_async()
    with pytest.raises(KeyError, match="boom"):
        result.get(timeout=1)
    followed = chain(chord([boom.s()], group(t.s(), t.s())), chord([t.s()], t.s())).apply_async()
    with pytest.raises(ChordError, match="boom"):
        followed.get(timeout=1)

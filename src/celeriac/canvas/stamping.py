"""Stamping (Celery 5.3+): labels put on every task of a workflow, carried in its messages.

A stamp is a name and a value. Inside a signature it is an option of that name, listed in the option
``stamped_headers``; on the wire the message's ``stamped_headers`` header lists the names and its
``stamps`` header maps them to their values (``_plan.py`` moves them there when it sends). A running task
sees them as ``self.request.stamps``, and ``app.control.revoke_by_stamped_headers`` revokes tasks by them.

``sig.stamp(visitor, append_stamps=False, **stamps)`` stamps a signature and everything in it: the tasks of
a chain, group or chord, and their callbacks and errbacks. A ``StampingVisitor`` decides stamps per
signature; its hooks return dicts of stamps (with ``stamped_headers`` naming which keys are stamps, or
every key counts). With ``append_stamps`` a stamp given twice keeps both values, as a list; otherwise the
one given last wins, and a signature's own earlier stamps win over both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.canvas.signature import Signature

__all__ = ["StampingVisitor", "stamp"]


class StampingVisitor:
    """Decides the stamps of each signature a workflow holds; subclass it and override the hooks needed.

    Every ``on_*`` hook gets the signature and the stamps given so far and returns the stamps to add (a
    dict, or None); only ``on_signature`` must be written.
    """

    def on_signature(self, actual_sig: Signature, **headers: Any) -> dict[str, Any] | None:
        """The stamps of a task's signature."""
        raise NotImplementedError(f"{type(self).__name__} must define on_signature()")

    def on_group_start(self, group: Signature, **headers: Any) -> dict[str, Any] | None:
        """Stamps for every task of ``group``."""
        return {}

    def on_group_end(self, group: Signature, **headers: Any) -> None:
        """``group`` and its tasks are stamped."""

    def on_chain_start(self, chain: Signature, **headers: Any) -> dict[str, Any] | None:
        """Stamps for every step of ``chain``."""
        return {}

    def on_chain_end(self, chain: Signature, **headers: Any) -> None:
        """``chain`` and its steps are stamped."""

    def on_chord_header_start(self, sig: Signature, **headers: Any) -> dict[str, Any] | None:
        """Stamps for every task of the chord's header (by default, what ``on_group_start`` says of it)."""
        return self.on_group_start(sig.header, **headers)  # type: ignore[attr-defined]

    def on_chord_header_end(self, sig: Signature, **headers: Any) -> None:
        """The chord's header is stamped."""
        self.on_group_end(sig.header, **headers)  # type: ignore[attr-defined]

    def on_chord_body(self, sig: Signature, **headers: Any) -> dict[str, Any] | None:
        """Stamps for the chord's body."""
        return {}

    def on_callback(self, callback: Signature, **headers: Any) -> dict[str, Any] | None:
        """Stamps for a callback (``link``)."""
        return {}

    def on_errback(self, errback: Signature, **headers: Any) -> dict[str, Any] | None:
        """Stamps for an errback (``link_error``)."""
        return {}


def _names(stamps: dict[str, Any]) -> list[str]:
    """The stamp names in a hook's answer: its ``stamped_headers`` when it says, else every key."""
    named = stamps.get("stamped_headers")
    if named is None:
        return [k for k in stamps if k != "stamped_headers"]
    return [named] if isinstance(named, str) else list(named)


def _merge(layers: Iterable[dict[str, Any]], append: bool) -> dict[str, Any]:
    """Stamps from several sources, later ones winning (or, with ``append``, each value kept)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name in _names(layer):
            if name not in layer:
                continue
            value = layer[name]
            if append and name in merged and merged[name] != value:
                before = merged[name] if isinstance(merged[name], list) else [merged[name]]
                added = value if isinstance(value, list) else [value]
                merged[name] = before + [v for v in added if v not in before]
            else:
                merged[name] = value
    return merged


def _own(sig: Signature) -> dict[str, Any]:
    options = sig["options"]
    return {name: options[name] for name in options.get("stamped_headers") or () if name in options}


def _apply(sig: Signature, layers: list[dict[str, Any]], append: bool) -> None:
    stamps = _merge([*layers, _own(sig)], append)
    if stamps:
        options = sig["options"]
        options.update(stamps)
        options["stamped_headers"] = list(dict.fromkeys([*(options.get("stamped_headers") or ()), *stamps]))


def _links(sig: Signature, visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]) -> None:
    """Stamp a signature's callbacks and errbacks with what the visitor says of them and ``headers``."""
    for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
        found = sig["options"].get(key)
        if not found:
            continue
        linked = [_signature(item, sig) for item in (found if isinstance(found, list) else [found])]
        for link in linked:
            stamp(
                link,
                None,
                append,
                _with(headers, getattr(visitor, hook)(link, **headers) if visitor else None),
            )
        sig["options"][key] = linked


def _signature(value: Any, within: Signature) -> Signature:
    """``value`` (a signature, or a dict from a message) as a signature of ``within``'s app."""
    if hasattr(value, "app"):
        return value  # type: ignore[no-any-return]
    # from_dict picks the primitive by the dict's subtask_type, whichever class it is called on; the
    # signature module imports this one, so the class is reached through the signature at hand.
    return type(within).from_dict(value, app=within.app)


def stamp(sig: Signature, visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]) -> None:
    """Stamp ``sig`` and everything it holds (see the module's docstring), in place.

    The stamps of a chain, group or chord go to the tasks in it, which are what is sent; the primitive
    itself keeps none (its options are merged into its tasks' when it is sent).
    """
    _links(sig, visitor, append, headers)
    kind = sig.get("subtask_type")
    if kind == "chord":
        header = sig["kwargs"]["header"] = _signature(sig["kwargs"]["header"], sig)
        inner = _with(headers, visitor.on_chord_header_start(sig, **headers) if visitor is not None else None)
        for task in _members(header):
            stamp(task, visitor, append, inner)
        if visitor is not None:
            visitor.on_chord_header_end(sig, **headers)
        body = sig["kwargs"].get("body")
        if body is not None:
            body = sig["kwargs"]["body"] = _signature(body, sig)
            stamp(
                body,
                visitor,
                append,
                _with(headers, visitor.on_chord_body(sig, **headers) if visitor else None),
            )
    elif kind in ("chain", "group"):
        start, end = (
            ("on_chain_start", "on_chain_end") if kind == "chain" else ("on_group_start", "on_group_end")
        )
        inner = _with(headers, getattr(visitor, start)(sig, **headers) if visitor is not None else None)
        for task in _members(sig):
            stamp(task, visitor, append, inner)
        if visitor is not None:
            getattr(visitor, end)(sig, **headers)
    else:
        _apply(
            sig,
            [headers, (visitor.on_signature(sig, **headers) if visitor is not None else None) or {}],
            append,
        )


def _with(headers: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """``headers`` with the stamps a hook answered added."""
    extra = extra or {}
    return {**headers, **{name: extra[name] for name in _names(extra) if name in extra}}


def _members(sig: Signature) -> list[Signature]:
    """The tasks of a chain or group, as signatures kept in it (dicts from a message are rebuilt)."""
    tasks = sig["kwargs"]["tasks"] = [_signature(t, sig) for t in sig["kwargs"]["tasks"]]
    return tasks

"""Signatures and the workflows built from them: chain, group, chord, chunks, map and starmap."""

from celeriac.canvas.primitives import (
    MEMBERSHIP,
    Signature,
    chain,
    chord,
    chunks,
    group,
    listed,
    maybe_signature,
    signature,
    unsent_tasks,
    xmap,
    xstarmap,
)

__all__ = [
    "MEMBERSHIP",
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "listed",
    "maybe_signature",
    "signature",
    "unsent_tasks",
    "xmap",
    "xstarmap",
]

"""Periodic tasks: the beat that publishes them (``Beat``), their entries, and the schedule store that
keeps their state and elects one leader among any number of beats. Guide: docs/periodic-tasks.md."""

from celeriac.beat.entries import Entry, entries_of, tick_id
from celeriac.beat.scheduler import Beat
from celeriac.beat.store import EntryState, ScheduleStore, create_store, store_for

__all__ = [
    "Beat",
    "Entry",
    "EntryState",
    "ScheduleStore",
    "create_store",
    "entries_of",
    "store_for",
    "tick_id",
]

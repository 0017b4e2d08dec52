"""The ``celeriac`` command."""

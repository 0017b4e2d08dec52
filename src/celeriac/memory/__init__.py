"""The in-process broker (``memory.broker``) and result backend (``memory.backend``), for tests and
eager use: state lives in the process, shared by every app that names the same ``memory://`` URL.
"""

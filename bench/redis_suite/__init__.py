"""``python -m bench redis``: celeriac and its peers on one private Redis, measured in the same run.

The parts: ``run`` (command line, the order of the run, the table), ``server`` (the private
``redis-server``), ``procs`` (worker processes and their memory), ``systems`` (how each system's worker
is started and configured), ``client`` (the client side of every workload, run in the system's own
Python), ``marks`` (how tasks tell the bench when a drain started and ended), ``floor`` (bare redis-py),
``report`` (the table) and ``peers/`` (each system's app, tasks and client calls).
"""

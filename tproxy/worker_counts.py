# -*- test-case-name: tests.processes.test_workers -*-
"""
How many workers a configuration asks for (:func:`worker_count`), and how
soon the :class:`tproxy.supervisor.Supervisor` replaces one that died
(:func:`restart_delay`).
"""

import os

#: seconds before the replacement of a replacement that died within
#: :data:`STABLE_AFTER` seconds of its start (a worker dying for the first
#: time is replaced at once: a fork); doubles while they keep dying young
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 10.0


def restart_delay(young):
    """
    Seconds before a dead worker's replacement starts, ``young`` the
    replacements of this worker in a row that died within
    :data:`STABLE_AFTER` seconds of their start: none (a worker that served,
    or a replacement that lived): at once; then :data:`RESTART_DELAY`,
    doubling up to :data:`RESTART_DELAY_MAX`.
    """
    if young <= 0:
        return 0.0
    return min(RESTART_DELAY * 2 ** (young - 1), RESTART_DELAY_MAX)


def worker_count(config):
    """The number of workers ``config`` asks for (``"auto"``: the CPUs)."""
    workers = config.get("workers", 1)
    if workers == "auto":
        return max(1, os.cpu_count() or 1)
    return int(workers)

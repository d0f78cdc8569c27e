# -*- test-case-name: tests.test_log_levels -*-
"""
The ``log_level`` of the configuration (nginx's ``error_log ... level``):
the least level of the events twistd's log gets, in the single process, in
the parent of workers and in each worker.

twistd (and ``twist``) begin the log after ``makeService``, calling
``globalLogBeginner.beginLoggingTo`` with the observers that write it;
:func:`level_the_log` wraps those observers in a filter on
:data:`predicate`, whose level :func:`set_log_level` changes at any time (a
reload).  Other observers (a test's, one added with ``--logger`` later) still
get every event.

Per-client lines (a malformed request, a client timeout) are logged at
``debug``; with the default ``info`` they are not even built: the HTTP
listener reads its flag (``ProxyFactory.log_client_errors``) instead.
"""

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate

__all__ = ["LEVELS", "predicate", "level_filter", "level_the_log", "set_log_level",
           "wrap_the_log"]

#: the values of ``log_level``, least first
LEVELS = ("debug", "info", "warn", "error", "critical")

#: the filter of twistd's log in this process (``info``: all but ``debug``,
#: as twistd without tproxy)
predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


def set_log_level(name, filter_predicate=None):
    """Let events of level ``name`` (one of :data:`LEVELS`) and above through
    ``filter_predicate`` (default: :data:`predicate`)."""
    if filter_predicate is None:
        filter_predicate = predicate
    filter_predicate.setLogLevelForNamespace("", LogLevel.levelWithName(name))


def level_filter(observer, filter_predicate=None):
    """``observer`` behind ``filter_predicate`` (default :data:`predicate`)."""
    if filter_predicate is None:
        filter_predicate = predicate
    return FilteringLogObserver(observer, [filter_predicate])


def level_the_log(name, beginner=None):
    """
    Set the level (:func:`set_log_level`) and make the observers of the log
    the process is about to begin (``beginner``: default
    ``globalLogBeginner``) filter on it.  Idempotent: a second call only
    changes the level.
    """
    set_log_level(name)
    wrap_the_log(level_filter, beginner)


def wrap_the_log(wrap, beginner=None):
    """
    Have ``wrap(observer)`` stand for each observer the log the process is
    about to begin is given: twistd and ``twist`` call ``beginLoggingTo`` of
    ``beginner`` (default ``globalLogBeginner``) after ``makeService``, with
    the observers that write the log.  Every other observer (a test's, one
    added with ``--logger`` later) still gets every event.  Idempotent: each
    ``wrap`` is applied once, in the order given.
    """
    if beginner is None:
        from twisted.logger import globalLogBeginner as beginner
    begin = beginner.beginLoggingTo
    wraps = getattr(begin, "tproxy_wraps", None)
    if wraps is None:
        wraps = []

        def beginLoggingTo(observers, *args, **kwargs):
            for w in wraps:
                observers = [w(o) for o in observers]
            return begin(observers, *args, **kwargs)
        beginLoggingTo.tproxy_wraps = wraps
        beginner.beginLoggingTo = beginLoggingTo
    if wrap not in wraps:
        wraps.append(wrap)

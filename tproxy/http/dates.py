# -*- test-case-name: tests.test_dates -*-
"""
The ``Date`` field of the responses tproxy sends (RFC 9110 6.6.1): an
origin server with a clock sends one, and a proxy that forwards a response
without one appends the time it received it.  tproxy's own responses
(errors, a plugin's :class:`~tproxy.Response`, the admin API's answers)
carry the time they are made; an upstream's response keeps its own Date,
or gets the time tproxy received its head (nginx hides the upstream's and
sends its own: tproxy passes it through).  1xx responses carry none.

The line is made at most once a second (as nginx caches its time): a
request pays a call and two float comparisons.
"""

from time import gmtime

_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
           b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def imf_fixdate(second):
    """``second`` (seconds since the epoch) as an IMF-fixdate (``bytes``):
    ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = gmtime(second)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec)


#: the second of the line last made (its start and end, seconds since the
#: epoch), and the line
_last = [0.0, 0.0, b""]


def date_line(now):
    """
    The header line ``Date: <IMF-fixdate>`` with its CRLF, of ``now``
    (seconds since the epoch, a clock's ``seconds()``); made once per
    second, the same ``bytes`` returned within it.
    """
    last = _last
    if last[0] <= now < last[1]:   # (two float comparisons: no int() call)
        return last[2]
    second = int(now)
    line = b"Date: " + imf_fixdate(second) + b"\r\n"
    last[0] = float(second)   # (floats: the comparisons above specialise)
    last[1] = second + 1.0
    last[2] = line
    return line


def has_date(raw):
    """Whether ``(name, value)`` pairs (``bytes``) hold a Date field."""
    for n, _ in raw:
        if len(n) == 4 and n.lower() == b"date":
            return True
    return False

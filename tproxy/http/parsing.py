"""
The HTTP/1.1 parser in use: httptools (llhttp) on CPython, tproxy's own strict
pure-Python parser where httptools is missing (PyPy, where the JIT makes the
pure-Python one the faster) -- both with the same API.
"""

import os
import platform

_choice = os.environ.get("TPROXY_PARSER", "")
if _choice != "python" and platform.python_implementation() == "CPython":
    try:
        from httptools import (HttpParserError, HttpParserInvalidMethodError,
                               HttpParserUpgrade, HttpRequestParser, HttpResponseParser)
        NAME = "httptools"
    except ImportError:  # pragma: no cover - depends on the install
        _choice = "python"
else:
    _choice = "python"

if _choice == "python":
    from tproxy.http.pyparser import (  # noqa: F811
        HttpParserError, HttpParserInvalidMethodError, HttpParserUpgrade,
        HttpRequestParser, HttpResponseParser)
    NAME = "python"



def bare_cr_first(data):
    """
    Whether the CR and LF bytes that start ``data`` (read before a request
    line) hold a bare CR, one not followed by LF: invalid (RFC 9112 2.2),
    where empty lines (CRLF, or a bare LF) are skipped.  llhttp skips CRs
    there too, so a server checks the first bytes of a message with this
    before feeding them (tproxy's own parser refuses them itself).
    """
    rest = data.lstrip(b"\r\n")
    lead = data[:len(data) - len(rest)]
    if not rest and lead[-1:] == b"\r":
        lead = lead[:-1]    # its LF may come next
    return b"\r" in lead.replace(b"\r\n", b"")


__all__ = ["bare_cr_first", "HttpParserError", "HttpParserInvalidMethodError", "HttpParserUpgrade",
           "HttpRequestParser", "HttpResponseParser", "NAME"]

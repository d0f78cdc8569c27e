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

__all__ = ["HttpParserError", "HttpParserInvalidMethodError", "HttpParserUpgrade",
           "HttpRequestParser", "HttpResponseParser", "NAME"]

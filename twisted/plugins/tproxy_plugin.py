"""
The twistd drop-in: ``twistd tproxy`` (see :mod:`tproxy.tap`).

Kept import-light: no reactor, no tproxy import until the command is used.
"""

from twisted.application.service import ServiceMaker

tproxy = ServiceMaker(
    "tproxy",
    "tproxy.tap",
    "A programmable HTTP reverse proxy and API gateway (pluggy phases).",
    "tproxy",
)

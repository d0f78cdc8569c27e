# tproxy on CPython (see docs/operations.md; the PyPy variant: Dockerfile.pypy).
#
#   docker build -t tproxy .
#   docker run --rm -p 8080:8080 tproxy
#   docker run --rm -p 8080:8080 -p 9180:9180 -e TPROXY_TOKEN=<admin.token> \
#       -v "$PWD/conf.json:/etc/tproxy/conf.json:ro" tproxy
# (TPROXY_TOKEN is read by tproxyctl, the health check's client: give it the
# configuration's admin.token.)
#
# The access log (one JSON line per request) goes to standard output with
# twistd's own events: `docker logs`.  SIGTERM (docker stop) drains requests
# in flight for shutdown_timeout seconds (10): give `docker stop -t` more.

# -- build the wheel -----------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
# gcc for the compiled hot modules (setup.py, tproxy/compiled.py; the image
# has the Python headers): the wheel carries them, the image needs no compiler
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY tproxy ./tproxy
COPY twisted ./twisted
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- the image -----------------------------------------------------------------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
# install, write Twisted's plugin cache as root (the tproxy user could not), add the user
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && groupadd --system --gid 10001 tproxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tproxy
# the shipped configuration: proxy on 8080, admin API on the container's own
# loopback (the health check and `docker exec ... tproxyctl status` use it).
# For backends in other containers to register, mount a configuration whose
# admin.listen is "tcp:9180" and which sets admin.token, and publish 9180.
COPY etc/conf.json /etc/tproxy/conf.json
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["tproxyctl", "--timeout", "4", "health"]
CMD ["twistd", "-n", "--pidfile=", "-r", "tproxy", "tproxy", "-c", "/etc/tproxy/conf.json"]

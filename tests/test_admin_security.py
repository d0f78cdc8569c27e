"""
The admin API against web pages, careless callers and big requests: the
token first, ``Host`` names (DNS rebinding), browser requests
(``Sec-Fetch-Site``, ``Origin``), the JSON forms, the audit log, limits on
entries, unusable backend addresses, oversized requests, and the refusal of
an admin listener off loopback without a token.  Through
:class:`tproxy.testing.Harness` (over HTTP, in memory).
"""

import ipaddress
import socket
import sys

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tproxy import hookimpl
from tproxy.admin import MAX_LINE_SIZE, AdminRequest, AdminRoutes, DuplicateRoute
from tproxy.addresses import endpoint_is_local, own_listeners, parse_endpoint
from tproxy.config import ConfigError, validate_config
from tproxy.testing import Harness, echo

PLUGINS = ["registry", "routes", "router", "least_conn"]


def harness(config=None):
    return Harness(config=config, plugins=PLUGINS,
                   servers={"127.0.0.1:9001": echo, "127.0.0.1:9002": echo})


def machine_address():
    """
    An IPv4 address of this machine other than loopback (the source address
    of its route to a documentation address: a UDP socket's connect sends
    nothing), or the test is skipped (none, or the system lets a socket bind
    any address: whether one is local is then unknown).
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            host = s.getsockname()[0]
        with open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
            nonlocal_bind = f.read().strip() != "0"
    except OSError:
        raise SkipTest("no route to tell this machine's address by")
    if nonlocal_bind or ipaddress.ip_address(host).is_loopback:
        raise SkipTest("no address of this machine but loopback, or any address binds")
    return host


def audits(h):
    """The audit events logged so far."""
    return [e for e in h.events if e.get("log_namespace") == "tproxy.audit"]


def servers(h, token=None):
    headers = {"Authorization": "Bearer " + token} if token else None
    return h.admin("GET", "/upstream/status", headers=headers).obj["total_servers"]


class HostTests(SynchronousTestCase):
    """Only ``Host`` values naming the admin listener are served."""

    def test_loopbackNames(self):
        """Loopback literals with and without a port, and localhost."""
        h = harness()
        for host in ("127.0.0.1", "127.0.0.1:9180", "127.9.8.7:1", "[::1]", "[::1]:9180",
                     "localhost", "LocalHost:9180"):
            answer = h.admin("GET", "/upstream/status", headers={"Host": host})
            self.assertEqual(answer.status, 200, host)

    def test_rebinding(self):
        """A name that is not the listener's (a rebound DNS name, another
        address) is a 421, and registers nothing."""
        h = harness()
        for host in ("attacker.example:9180", "attacker.example", "localhost.attacker.example",
                     "10.0.0.1:9180", "0.0.0.0:9180", "[::]:9180"):
            answer = h.admin("GET", "/upstream/add?port=9001", headers={"Host": host})
            self.assertEqual(answer.status, 421, host)
            self.assertEqual(answer.obj["host"], host)
            self.assertIn("admin.hosts", answer.obj["error"])
        self.assertEqual(servers(h), 0)

    def test_probesAnyHost(self):
        """The public, read-only probes answer without the token whatever
        the Host (an orchestrator names the listener as it likes); nothing
        else does."""
        h = harness({"admin": {"token": "s3cret"}})
        answer = h.admin("GET", "/healthz", headers={"Host": "tproxy-admin.svc:9180",
                                                     "Sec-Fetch-Site": "cross-site"})
        self.assertEqual(answer.status, 200)
        answer = h.admin("GET", "/upstream/status", headers={"Host": "tproxy-admin.svc:9180"})
        self.assertEqual(answer.status, 401)

    def test_configuredNames(self):
        """``admin.hosts`` adds names."""
        h = harness({"admin": {"hosts": ["admin.internal", "10.1.2.3"]}})
        for host in ("admin.internal", "ADMIN.internal:9180", "10.1.2.3:9180"):
            answer = h.admin("GET", "/upstream/status", headers={"Host": host})
            self.assertEqual(answer.status, 200, host)
        self.assertEqual(h.admin("GET", "/upstream/status",
                                 headers={"Host": "other.internal"}).status, 421)

    def test_listenerAddress(self):
        """The address the connection came in on names the listener (an
        admin API on a private address, reached by it)."""
        routes = AdminRoutes()
        routes.route("GET", "/x", lambda request: (200, {}))

        def status(host, local):
            request = AdminRequest.from_uri("GET", "/x", {"Host": host},
                                            client_addr="10.0.0.9", local_addr=local)
            return self.successResultOf(routes.handle(request))[0]
        self.assertEqual(status("10.0.0.5:9180", "10.0.0.5"), 200)
        self.assertEqual(status("10.0.0.6:9180", "10.0.0.5"), 421)
        self.assertEqual(status("0.0.0.0:9180", "0.0.0.0"), 421)

    def test_badHost(self):
        """A ``Host`` that is not ``host[:port]`` is a 400."""
        h = harness()
        for host in ("127.0.0.1:http", "[::1", "[::1]x", "127.0.0.1:123456"):
            answer = h.admin("GET", "/upstream/status", headers={"Host": host})
            self.assertEqual(answer.status, 400, host)

    def test_hostRequired(self):
        """HTTP/1.1 needs exactly one Host; HTTP/1.0 may go without (no
        browser does)."""
        h = harness()
        response = h.admin_raw(b"GET /upstream/status HTTP/1.1\r\n\r\n")
        self.assertEqual(response.status, 400)
        response = h.admin_raw(b"GET /upstream/status HTTP/1.1\r\nHost: localhost\r\n"
                               b"Host: localhost\r\n\r\n")
        self.assertEqual(response.status, 400)
        response = h.admin_raw(b"GET /upstream/status HTTP/1.0\r\n\r\n")
        self.assertEqual(response.status, 200)


class BrowserTests(SynchronousTestCase):
    """Requests a web page makes are refused; scripts are served."""

    def test_crossSite(self):
        """A ``Sec-Fetch-Site`` other than same-origin / none is a 403 (an
        ``<img>`` or a ``fetch()`` from any page)."""
        h = harness()
        for site in ("cross-site", "same-site", "CROSS-SITE"):
            answer = h.admin("GET", "/upstream/add?port=9001",
                             headers={"Sec-Fetch-Site": site})
            self.assertEqual(answer.status, 403, site)
            self.assertEqual(answer.obj["sec_fetch_site"], site)
            answer = h.admin("POST", "/upstream/add", body=b"port=9001",
                             headers={"Sec-Fetch-Site": site, "Content-Type":
                                      "application/x-www-form-urlencoded"})
            self.assertEqual(answer.status, 403, site)
        self.assertEqual(servers(h), 0)

    def test_sameOrigin(self):
        """``same-origin`` and ``none`` (typed in the address bar) pass."""
        h = harness()
        for site in ("same-origin", "none"):
            answer = h.admin("GET", "/upstream/status", headers={"Sec-Fetch-Site": site})
            self.assertEqual(answer.status, 200, site)

    def test_foreignOrigin(self):
        """An ``Origin`` not configured is a 403, ``null`` included."""
        h = harness()
        for origin in ("http://attacker.example", "null", "http://localhost:8080",
                       "https://127.0.0.1:9180.attacker.example"):
            answer = h.admin("POST", "/upstream/servers", body={"port": 9001},
                             headers={"Origin": origin, "Host": "127.0.0.1:9180"})
            self.assertEqual(answer.status, 403, origin)
            self.assertEqual(answer.obj["origin"], origin)
        self.assertEqual(servers(h), 0)

    def test_ownOrigin(self):
        """The listener's own origin (its page) and ``admin.origins`` pass."""
        h = harness({"admin": {"origins": ["https://ops.example.com"]}})
        answer = h.admin("POST", "/upstream/servers", body={"port": 9001},
                         headers={"Origin": "http://127.0.0.1:9180", "Host": "127.0.0.1:9180"})
        self.assertEqual(answer.status, 201)
        answer = h.admin("POST", "/upstream/servers", body={"port": 9002},
                         headers={"Origin": "https://ops.example.com"})
        self.assertEqual(answer.status, 201)

    def test_foreignReferer(self):
        """Without ``Origin`` (an old browser's ``<img>``: no
        ``Sec-Fetch-Site`` either), a ``Referer`` naming a page of another
        origin is a 403, logged as the ``Origin`` check's."""
        h = harness()
        for referer in ("http://attacker.example/page.html", "http://localhost:8080/",
                        "https://127.0.0.1:9180.attacker.example/", "http://127.0.0.1:9181/"):
            answer = h.admin("GET", "/upstream/add?port=1237",
                             headers={"Referer": referer, "Host": "127.0.0.1:9180"})
            self.assertEqual(answer.status, 403, referer)
            self.assertEqual(answer.obj, {
                "error": "request from another origin refused (Referer names a page "
                         "outside the admin listener and admin.origins)",
                "referer": referer})
            answer = h.admin("POST", "/upstream/servers", body={"port": 9001},
                             headers={"Referer": referer, "Host": "127.0.0.1:9180"})
            self.assertEqual(answer.status, 403, referer)
        self.assertEqual(servers(h), 0)
        refused = [e for e in h.events if e.get("admin_refused")]
        self.assertEqual([e["status"] for e in refused], [403] * 8)
        self.assertIn("admin request refused (403 request from another origin refused "
                      "(Referer names a page outside the admin listener and admin.origins)): "
                      "POST /upstream/servers from 127.0.0.1", h.messages()[-1])

    def test_ownReferer(self):
        """A ``Referer`` on the listener's own origin, or of ``admin.origins``,
        passes; without one (curl, ``tproxyctl``), or one that names no page,
        too."""
        h = harness({"admin": {"origins": ["https://ops.example.com"]}})
        for port, referer in ((9001, "http://127.0.0.1:9180/status"),
                              (9002, "https://ops.example.com/dashboard")):
            answer = h.admin("GET", "/upstream/add?port={}".format(port),
                             headers={"Referer": referer, "Host": "127.0.0.1:9180"})
            self.assertEqual(answer.status, 200, referer)
        answer = h.admin("GET", "/upstream/status", headers={"Referer": "a note"})
        self.assertEqual(answer.status, 200)
        self.assertEqual(servers(h), 2)

    def test_configuredOriginCors(self):
        """A page of ``admin.origins`` (cross-site, as a dashboard elsewhere
        is) is served, with the CORS fields that let it read the answer; its
        preflight is answered without the token, which browsers never send
        with it."""
        h = harness({"admin": {"origins": ["https://ops.example.com"], "token": "s3cret"}})
        page = {"Origin": "https://ops.example.com", "Sec-Fetch-Site": "cross-site"}
        answer = h.admin("OPTIONS", "/upstream/servers", headers=dict(
            page, **{"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type",
                     "Access-Control-Request-Private-Network": "true"}))
        self.assertEqual((answer.status, answer.obj), (204, None))
        fields = dict(answer.headers)
        self.assertEqual(fields["Access-Control-Allow-Origin"], "https://ops.example.com")
        self.assertEqual(fields["Access-Control-Allow-Headers"], "Authorization, Content-Type")
        self.assertEqual(fields["Access-Control-Allow-Private-Network"], "true")
        self.assertNotIn("Content-Length", fields)
        answer = h.admin("POST", "/upstream/servers", body={"port": 9001},
                         headers=dict(page, Authorization="Bearer s3cret"))
        self.assertEqual(answer.status, 201)
        self.assertEqual(dict(answer.headers)["Access-Control-Allow-Origin"],
                         "https://ops.example.com")
        answer = h.admin("POST", "/upstream/servers", body={"port": 9002}, headers=page)
        self.assertEqual(answer.status, 401)
        self.assertEqual(servers(h, "s3cret"), 1)

    def test_otherPreflight(self):
        """A preflight from another origin gets no CORS answer."""
        h = harness({"admin": {"origins": ["https://ops.example.com"]}})
        answer = h.admin("OPTIONS", "/upstream/servers", headers={
            "Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site",
            "Access-Control-Request-Method": "POST"})
        self.assertEqual(answer.status, 403)
        self.assertNotIn("Access-Control-Allow-Origin", dict(answer.headers))

    def test_scripts(self):
        """curl and cron jobs send neither: the GET heartbeat works."""
        h = harness()
        answer = h.admin("GET", "/upstream/add?port=9001&prefix=api",
                         headers={"User-Agent": "curl/7.88.1", "Accept": "*/*"})
        self.assertEqual(answer.status, 200)
        self.assertEqual(h.request("GET", "/api/x").status, 200)


class TokenTests(SynchronousTestCase):
    """With ``admin.token``, the token comes before anything else."""

    def setUp(self):
        self.h = harness({"admin": {"token": "s3cret"}})

    def test_badEncodingWithoutToken(self):
        """Bad percent-encoding without the token is a 401, not a 400."""
        answer = self.h.admin("GET", "/upstream/add?port=%ff")
        self.assertEqual(answer.status, 401)
        answer = self.h.admin("POST", "/upstream/servers", body=b"{not json",
                              headers={"Content-Type": "application/json"})
        self.assertEqual(answer.status, 401)
        answer = self.h.admin("GET", "/upstream/add?port=%ff",
                              headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(answer.status, 400)
        self.assertEqual(answer.obj["error"], "query string is not valid UTF-8")

    def test_bodyNotReadWithoutToken(self):
        """A request with a body but without the token is answered 401 at
        once (no ``100 Continue``, the body unread), and the connection
        closes."""
        response = self.h.admin_raw(
            b"POST /upstream/servers HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1000\r\n\r\n")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers.get("www-authenticate"),
                         'Bearer realm="tproxy-admin"')
        self.assertEqual(response.headers.get("connection"), "close")
        pending = self.h.admin_raw(
            b"POST /upstream/servers HTTP/1.1\r\nHost: localhost\r\nAuthorization: "
            b"Bearer s3cret\r\nExpect: 100-continue\r\nContent-Length: 15\r\n\r\n",
            wait=False)
        self.assertFalse(pending.done)   # 100 Continue, then waits for the body

    def test_tokenBeforeHost(self):
        """Without the token, a foreign Host learns nothing but 401; with
        it, the caller may name the listener as its network does (a
        container's name, a published address): no rebinding page has the
        token.  The browser checks still apply."""
        answer = self.h.admin("GET", "/upstream/status",
                              headers={"Host": "attacker.example"})
        self.assertEqual(answer.status, 401)
        answer = self.h.admin("GET", "/upstream/add?port=9001", headers={
            "Host": "tproxy:9180", "Authorization": "Bearer s3cret"})
        self.assertEqual(answer.status, 200)
        answer = self.h.admin("GET", "/upstream/add?port=9002", headers={
            "Host": "tproxy:9180", "Authorization": "Bearer s3cret",
            "Sec-Fetch-Site": "cross-site"})
        self.assertEqual(answer.status, 403)

    def test_auditWho(self):
        """The audit line says the change came with the token."""
        self.h.admin("GET", "/upstream/add?port=9001",
                     headers={"Authorization": "Bearer s3cret"})
        event, = audits(self.h)
        self.assertEqual(event["who"], "token")


class JsonFormTests(SynchronousTestCase):
    """``POST``/``PUT``/``DELETE /upstream/servers`` and ``POST /routes``."""

    def setUp(self):
        self.h = harness()

    def test_nestedTooDeeply(self):
        """A JSON body nested past the interpreter's recursion limit (a few
        KiB: ``{"a":{"a":...}}`` 5000 deep) is a ``400`` saying so, on
        ``/upstream/servers`` and ``/routes`` alike, not a request left
        without an answer; nothing changes."""
        for path, body in (("/upstream/servers", b'{"a":' * 5000 + b"1" + b"}" * 5000),
                           ("/routes", b"[" * 5000 + b"]" * 5000)):
            answer = self.h.admin("POST", path, body=body,
                                  headers={"Content-Type": "application/json"})
            self.assertEqual((answer.status, answer.obj["error"]),
                             (400, "body is not valid JSON (arrays and objects nested "
                                   "too deeply)"), path)
        self.assertEqual(servers(self.h), 0)
        self.assertEqual(self.h.admin("GET", "/routes").obj["total"], 0)

    def test_checkRaises(self):
        """An exception before the handler (a defect in a check) is a
        ``500`` with the traceback logged, and the connection serves on:
        not a request left without an answer or a log line."""
        import tproxy.admin

        def broken(request, origins):
            raise RuntimeError("broken check")
        self.patch(tproxy.admin, "browser_refused", broken)
        answer = self.h.admin("GET", "/upstream/status")
        self.assertEqual((answer.status, answer.obj["error"]), (500, "internal error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_expectContinue(self):
        """``Expect: 100-continue`` gets its ``100 Continue`` for a chunked
        body as for one with a Content-Length (a client waiting for it would
        otherwise wait until the idle timeout), then the answer."""
        for framing, body in ((b"Content-Length: 14", b'{"port": 9001}'),
                              (b"Transfer-Encoding: chunked", b'e\r\n{"port": 9002}\r\n0\r\n\r\n')):
            transport = StringTransport()
            conn = self.h.admin_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            conn.makeConnection(transport)
            conn.dataReceived(b"POST /upstream/servers HTTP/1.1\r\nHost: localhost\r\n"
                              b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                              + framing + b"\r\n\r\n")
            self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n", framing)
            conn.dataReceived(body)
            self.assertIn(b"HTTP/1.1 201 Created\r\n", transport.value(), framing)
            conn.connectionLost(None)
        self.assertEqual(servers(self.h), 2)

    def test_register(self):
        """POST registers (201), again heartbeats (200); GET is the status."""
        body = {"port": 9001, "host": "127.0.0.1", "prefix": "api", "weight": 3}
        answer = self.h.admin("POST", "/upstream/servers", body=body)
        self.assertEqual(answer.status, 201)
        self.assertEqual((answer.obj["server"], answer.obj["weight"], answer.obj["created"]),
                         ("api:127.0.0.1:9001", 3, True))
        answer = self.h.admin("PUT", "/upstream/servers", body=body)
        self.assertEqual((answer.status, answer.obj["created"]), (200, False))
        status = self.h.admin("GET", "/upstream/servers").obj
        self.assertEqual(status["total_servers"], 1)
        self.assertEqual(self.h.request("GET", "/api/x").status, 200)

    def test_remove(self):
        """DELETE with a JSON body or a query removes."""
        for prefix in ("a", "b"):
            self.h.admin("POST", "/upstream/servers", body={"port": 9001, "prefix": prefix})
        answer = self.h.admin("DELETE", "/upstream/servers",
                              body={"port": 9001, "prefix": "a"})
        self.assertEqual((answer.status, answer.obj["removed"]), (200, "a:127.0.0.1:9001"))
        answer = self.h.admin("DELETE", "/upstream/servers?port=9001&prefix=b")
        self.assertEqual((answer.status, answer.obj["removed"]), (200, "b:127.0.0.1:9001"))
        self.assertEqual(servers(self.h), 0)

    def test_badBodies(self):
        """Not JSON, not an object, a member that is not a scalar: 400."""
        answer = self.h.admin("POST", "/upstream/servers", body=b"{nope",
                              headers={"Content-Type": "application/json"})
        self.assertEqual(answer.status, 400)
        self.assertIn("not valid JSON", answer.obj["error"])
        # (PyPy's decoder gives no usable message at a character past ASCII)
        answer = self.h.admin("POST", "/upstream/servers", body=b"[\xc3\xa9]",
                              headers={"Content-Type": "application/json"})
        self.assertEqual((answer.status, answer.obj["error"]), (400, (
            "body is not valid JSON (unexpected '\xe9': line 1 column 2 (char 1))")))
        answer = self.h.admin("POST", "/upstream/servers", body=[9001])
        self.assertEqual((answer.status, answer.obj["field"]), (400, "body"))
        answer = self.h.admin("POST", "/upstream/servers", body={"port": [9001]})
        self.assertEqual((answer.status, answer.obj["field"]), (400, "port"))
        answer = self.h.admin("POST", "/upstream/servers", body={"port": 90.5})
        self.assertEqual((answer.status, answer.obj["field"]), (400, "port"))
        self.assertEqual(servers(self.h), 0)

    def test_duplicateKeys(self):
        """A key given twice in a JSON body is a 400 naming it, nothing
        changed, as in the configuration file: Python's reader would keep
        the last one without a word (``{"port": 9001, "port": 9002}``)."""
        json_type = {"Content-Type": "application/json"}
        answer = self.h.admin("POST", "/upstream/servers", headers=json_type,
                              body=b'{"port": 9001, "port": 9002}')
        self.assertEqual((answer.status, answer.obj["error"]), (
            400, 'body is not valid JSON (duplicate key "port")'))
        self.assertEqual(servers(self.h), 0)
        h = Harness(plugins=["routes"])
        for method, uri, headers, error in (
                ("PUT", "/routes/x", {}, 'the body is not JSON: duplicate key "group"'),
                ("POST", "/routes", {}, 'the body is not JSON: duplicate key "group"'),
                ("PUT", "/routes/x", json_type,
                 'body is not valid JSON (duplicate key "group")')):
            answer = h.admin(method, uri, headers=headers, body=(
                b'{"name": "x", "group": "api", "group": "web", "match": {"path": "/x"}}'))
            self.assertEqual((answer.status, answer.obj["error"]), (400, error), method)
        self.assertEqual(h.admin("GET", "/routes").obj["total"], 0)

    def test_repeatedParameters(self):
        """A parameter given twice in the query, in a form body, or in both
        is a 400 naming it, nothing changed, as a key given twice in a JSON
        body: which one was meant cannot be told.  Read-only endpoints too
        (``?prefix=a&prefix=b`` is not a status of ``a``)."""
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for method, uri, headers, body, error in (
                ("GET", "/upstream/add?port=9001&port=9002", None, b"",
                 'parameter "port" given twice in the query'),
                ("POST", "/upstream/add?port=9001&weight=2&port=9001", None, b"",
                 'parameter "port" given twice in the query'),
                ("POST", "/upstream/add", form, b"port=9001&port=9002",
                 'parameter "port" given twice in the form body'),
                ("POST", "/upstream/add?port=9001", form, b"port=9002",
                 'parameter "port" given twice (in the query and in the form body)'),
                ("DELETE", "/upstream/servers?port=9001&prefix=a&prefix=b", None, b"",
                 'parameter "prefix" given twice in the query'),
                ("GET", "/upstream/status?prefix=a&prefix=", None, b"",
                 'parameter "prefix" given twice in the query')):
            answer = self.h.admin(method, uri, headers=headers, body=body)
            self.assertEqual((answer.status, answer.obj), (400, {"error": error}), uri)
        self.assertEqual(servers(self.h), 0)
        self.h.admin("GET", "/upstream/add?port=9001&prefix=a")
        answer = self.h.admin("GET", "/upstream/remove?port=9001&prefix=a&prefix=b")
        self.assertEqual(answer.status, 400)
        self.assertEqual(servers(self.h), 1)
        answer = self.h.admin("POST", "/upstream/add?port=9002", headers=form,
                              body=b"weight=3")
        self.assertEqual((answer.status, answer.obj["weight"]), (200, 3))

    def test_longParameterName(self):
        """A parameter name longer than any the API reads (a JSON document
        sent as a form) is a 400 that does not echo it back, nothing
        changed."""
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        document = b"[" * 5000 + b"]" * 5000
        for method, uri in (("POST", "/routes"), ("POST", "/upstream/add?port=9001")):
            answer = self.h.admin(method, uri, headers=form, body=document)
            self.assertEqual(answer.status, 400, uri)
            self.assertEqual(answer.obj, {"error": (
                "a parameter name of 10000 characters in the form body (at most 100: is a "
                "JSON body sent without Content-Type: application/json?)")})
        self.assertEqual(servers(self.h), 0)

    def test_queryAndJsonBody(self):
        """A parameter given in the query and in a JSON body is a 400 naming
        it, nothing changed, whether the two agree or not; the JSON body's
        ``null`` is no value."""
        json_type = {"Content-Type": "application/json"}
        for method, uri, body in (
                ("POST", "/upstream/servers?port=9001", {"port": 9002}),
                ("POST", "/upstream/servers?port=9001", {"port": "9001"}),
                ("POST", "/upstream/add?port=9001&prefix=a", {"prefix": "b"}),
                ("DELETE", "/upstream/servers?port=9001", {"port": 9001})):
            answer = self.h.admin(method, uri, headers=json_type, body=body)
            name = sorted(body)[0]
            self.assertEqual((answer.status, answer.obj["field"], answer.obj["error"]),
                             (400, name, 'parameter "{}" given twice (in the query and '
                              'in the JSON body)'.format(name)), (uri, body))
        self.assertEqual(servers(self.h), 0)
        answer = self.h.admin("POST", "/upstream/servers?port=9001",
                              headers=json_type, body={"port": None, "weight": 2})
        self.assertEqual((answer.status, answer.obj["weight"]), (201, 2))

    def test_getFormsKeepWorking(self):
        """The GET forms a backend's script calls still work beside the JSON ones."""
        self.assertEqual(self.h.admin("GET", "/upstream/add?port=9001").status, 200)
        self.assertEqual(self.h.admin("GET", "/upstream/remove?port=9001").status, 200)

    def test_postRoute(self):
        """POST /routes adds a route named in the body; a taken name is 409."""
        route = {"name": "users", "group": "api", "match": {"path": "/users"}}
        answer = self.h.admin("POST", "/routes", body=route)
        self.assertEqual(answer.status, 201)
        answer = self.h.admin("POST", "/routes", body=route)
        self.assertEqual(answer.status, 409)
        answer = self.h.admin("POST", "/routes", body={"group": "api"})
        self.assertEqual((answer.status, answer.obj["field"]), (400, "name"))
        self.assertEqual(self.h.admin("GET", "/routes").obj["total"], 1)


class AuditTests(SynchronousTestCase):
    """Every change is one audit event: who, what, from where."""

    def setUp(self):
        self.h = harness()

    def test_registry(self):
        """Add, change, remove are audited; a plain heartbeat is not."""
        h = self.h
        h.admin("GET", "/upstream/add?port=9001&prefix=api&host=127.0.0.1",
                client="10.0.0.7", headers={"User-Agent": "cron"})
        h.admin("GET", "/upstream/add?port=9001&prefix=api&host=127.0.0.1")
        h.admin("GET", "/upstream/add?port=9001&prefix=api&host=127.0.0.1&weight=5")
        h.admin("GET", "/upstream/remove?port=9001&prefix=api&host=127.0.0.1")
        h.admin("GET", "/upstream/remove?port=9001&prefix=api&host=127.0.0.1")  # 404
        events = audits(h)
        self.assertEqual([e["action"] for e in events],
                         ["upstream.add", "upstream.change", "upstream.remove"])
        first = events[0]
        self.assertEqual((first["who"], first["client"], first["user_agent"],
                          first["server"], first["method"], first["path"]),
                         ("anonymous", "10.0.0.7", "cron", "api:127.0.0.1:9001", "GET",
                          "/upstream/add"))
        self.assertEqual(events[1]["weight"], 5)
        self.assertTrue(h.messages()[0].startswith(
            "admin change upstream.add by anonymous from 10.0.0.7: host=127.0.0.1, "
            "max_conns=0, port=9001, prefix=api"), h.messages()[0])

    def test_routes(self):
        """Route changes are audited."""
        h = self.h
        route = {"group": "api", "match": {"path": "/users"}}
        h.admin("PUT", "/routes/users", body=route)
        h.admin("PUT", "/routes/users", body=route)
        h.admin("DELETE", "/routes/users")
        self.assertEqual([(e["action"], e["route"]) for e in audits(h)],
                         [("route.add", "users"), ("route.replace", "users"),
                          ("route.delete", "users")])

    def test_refusalsLogged(self):
        """A request the token, Host or browser check refuses (a page trying
        the API, a script without the token) is one warning of
        ``tproxy.admin`` saying why, what and from where; the audit log
        keeps only the changes, and an accepted request logs no warning."""
        h = harness({"admin": {"token": "s3cret"}})
        h.admin("GET", "/upstream/add?port=9001", client="10.0.0.7",
                headers={"User-Agent": "curl/8"})
        h.admin("GET", "/upstream/status", headers={
            "Authorization": "Bearer s3cret", "Sec-Fetch-Site": "cross-site"})
        h.admin("GET", "/upstream/status", headers={"Authorization": "Bearer s3cret"})
        plain = harness()
        plain.admin("POST", "/upstream/add?port=9001", headers={"Host": "evil.example"})
        refused = [e for e in h.events + plain.events if e.get("admin_refused")]
        self.assertEqual(
            [(e["log_namespace"], e["log_level"].name, e["status"], e["client"])
             for e in refused],
            [("tproxy.admin", "warn", 401, "10.0.0.7"),
             ("tproxy.admin", "warn", 403, "127.0.0.1"),
             ("tproxy.admin", "warn", 421, "127.0.0.1")])
        self.assertIn("admin request refused (401 missing or invalid bearer token): "
                      "GET /upstream/add from 10.0.0.7, user agent \"curl/8\"",
                      h.messages())
        self.assertIn("admin request refused (421 Host does not name the admin",
                      plain.messages()[-1])
        self.assertEqual(audits(h) + audits(plain), [])

    def test_refusedNotAudited(self):
        """A refused request changes nothing and audits nothing."""
        self.h.admin("GET", "/upstream/add?port=9001", headers={"Host": "x.example"})
        self.h.admin("GET", "/upstream/add?port=0")
        self.assertEqual(audits(self.h), [])


class LimitTests(SynchronousTestCase):
    """``registry.max_*`` and ``routes``' ``max_routes``: 409, state unchanged."""

    def add(self, h, prefix, port, host="127.0.0.1"):
        return h.admin("GET", "/upstream/add?prefix={}&port={}&host={}".format(
            prefix, port, host))

    def test_serversPerGroup(self):
        h = harness({"registry": {"max_servers_per_group": 2}})
        self.assertEqual(self.add(h, "api", 1).status, 200)
        self.assertEqual(self.add(h, "api", 2).status, 200)
        answer = self.add(h, "api", 3)
        self.assertEqual(answer.status, 409)
        self.assertEqual((answer.obj["limit"], answer.obj["value"]),
                         ("registry.max_servers_per_group", 2))
        self.assertEqual(self.add(h, "api", 2).status, 200)     # a heartbeat
        self.assertEqual(self.add(h, "web", 3).status, 200)     # another group
        self.assertEqual(servers(h), 3)

    def test_staticCount(self):
        """Configured servers count towards the limits."""
        h = harness({"registry": {"max_servers_per_group": 1},
                     "upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}})
        self.assertEqual(self.add(h, "api", 2).status, 409)

    def test_groups(self):
        h = harness({"registry": {"max_groups": 2}})
        self.assertEqual(self.add(h, "a", 1).status, 200)
        self.assertEqual(self.add(h, "b", 1).status, 200)
        answer = self.add(h, "c", 1)
        self.assertEqual((answer.status, answer.obj["limit"]), (409, "registry.max_groups"))
        self.assertEqual(self.add(h, "a", 2).status, 200)
        groups = h.admin("GET", "/upstream/status").obj["groups"]
        self.assertEqual([g["prefix"] for g in groups], ["a", "b"])

    def test_servers(self):
        h = harness({"registry": {"max_servers": 2}})
        self.add(h, "a", 1)
        self.add(h, "b", 1)
        answer = self.add(h, "a", 2)
        self.assertEqual((answer.status, answer.obj["limit"]), (409, "registry.max_servers"))

    def test_countsFollowChanges(self):
        """Removed and expired servers (and their groups) free their places."""
        h = harness({"registry": {"max_servers": 2, "max_groups": 2, "ttl": 10,
                                  "cleanup_interval": 5}})
        self.add(h, "a", 1)
        self.add(h, "b", 1)
        self.assertEqual(self.add(h, "c", 1).status, 409)
        h.admin("GET", "/upstream/remove?prefix=a&port=1&host=127.0.0.1")
        self.assertEqual(self.add(h, "c", 1).status, 200)
        h.advance(15)    # b and c expire and are cleaned up
        self.assertEqual(servers(h), 0)
        self.assertEqual(self.add(h, "d", 1).status, 200)
        self.assertEqual(self.add(h, "e", 1).status, 200)
        self.assertEqual(self.add(h, "e", 2).status, 409)

    def test_expiredPlaceTaken(self):
        """An expired registration not cleaned up yet is replaced in place."""
        h = harness({"registry": {"max_servers_per_group": 1, "ttl": 10,
                                  "cleanup_interval": 1000}})
        self.add(h, "api", 1)
        h.advance(20)
        self.assertEqual(self.add(h, "api", 1).status, 200)

    def test_routeSentAsForm(self):
        """``curl -X PUT /routes/NAME -d '{...}'`` (docs/routing.md) sends
        the route with a form's Content-Type: it is read as JSON, a percent
        sign in it included (it was a 400 "form body is not valid UTF-8")."""
        h = Harness(plugins=["routes"])
        body = b'{"group": "api", "match": {"path": "/caf%ff"}}'
        answer = h.admin("PUT", "/routes/a", body=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(answer.status, 201, answer.obj)
        self.assertEqual(h.admin("GET", "/routes/a").obj["match"]["path"], "/caf%ff")

    def test_routes(self):
        h = Harness(plugins=[{"name": "routes", "settings": {"max_routes": 1}}])
        route = {"group": "api", "match": {"path": "/users"}}
        self.assertEqual(h.admin("PUT", "/routes/a", body=route).status, 201)
        self.assertEqual(h.admin("PUT", "/routes/a", body=route).status, 200)
        answer = h.admin("PUT", "/routes/b", body=route)
        self.assertEqual((answer.status, answer.obj["limit"]), (409, "max_routes"))
        self.assertEqual(h.admin("GET", "/routes").obj["total"], 1)


class BackendAddressTests(SynchronousTestCase):
    """Addresses that name no one server are not backends."""

    BAD = ("0.0.0.0", "0.1.2.3", "::", "[::]", "255.255.255.255", "224.0.0.1",
           "239.255.255.250", "ff02::1", "::ffff:0.0.0.0", "::ffff:224.0.0.1")

    def test_admin(self):
        h = harness()
        for host in self.BAD:
            answer = h.admin("GET", "/upstream/add?port=9001&host=" + host)
            self.assertEqual(answer.status, 400, host)
            self.assertEqual((answer.obj["field"], answer.obj["value"]), ("host", host))
            self.assertIn("not a server", answer.obj["error"])
        self.assertEqual(servers(h), 0)

    def test_forwardedAddress(self):
        """Nor as the caller's address a trusted proxy forwards."""
        h = Harness(config={"trusted_proxies": ["127.0.0.1"]}, plugins=PLUGINS)
        answer = h.admin("GET", "/upstream/add?port=9001", headers={"X-Real-IP": "0.0.0.0"})
        self.assertEqual((answer.status, answer.obj["field"]), (400, "host"))

    def test_config(self):
        """Nor in the configuration: the error names the peer."""
        for peer, path in (("0.0.0.0:80", "upstreams.api.peers[0]"),
                           ("[::]:80", "upstreams.api.peers[0]"),
                           ({"host": "255.255.255.255", "port": 80},
                            "upstreams.api.peers[0].host")):
            with self.assertRaises(ConfigError) as caught:
                validate_config({"upstreams": {"api": {"peers": [peer]}}})
            self.assertEqual(caught.exception.path, path)
            self.assertIn("not a server", caught.exception.problem)

    def test_pinnedRoute(self):
        """Nor as a route's pinned peer."""
        h = Harness(plugins=["routes"])
        answer = h.admin("PUT", "/routes/x", body={"group": "api", "peer": "0.0.0.0:80",
                                                   "match": {"path": "/x"}})
        self.assertEqual((answer.status, answer.obj["field"]), (400, "peer"))
        self.assertEqual(answer.obj["error"], "bad host:port '0.0.0.0:80': 0.0.0.0 is an "
                         "unspecified address, not a server")

    def test_numericNames(self):
        """A name whose last label is a number (decimal or ``0x`` hex) is an
        IPv4 address as the resolver reads it (``0x7f000001`` is 127.0.0.1,
        ``0x0`` is 0.0.0.0): it must be one in dotted decimal, else it would
        pass the checks for unspecified addresses and tproxy's own listeners."""
        h = harness()
        for host in ("0x7f000001", "0x0", "0XFFFFFFFF", "127.0.0.0x1", "10.0x1", "a.0x"):
            answer = h.admin("GET", "/upstream/add?port=9001&host=" + host)
            self.assertEqual((answer.status, answer.obj["field"], answer.obj["error"]),
                             (400, "host", "host must be a host name or an IP address"),
                             host)
        self.assertEqual(h.admin("GET", "/upstream/status").obj["total_servers"], 0)
        for host in ("0x7f.example", "a0x1", "x0"):
            self.assertEqual(h.admin("GET", "/upstream/add?port=9001&host=" + host).status,
                             200, host)

    def test_numericNamesInConfig(self):
        """Nor in the configuration (peers, a route's pinned peer)."""
        for peer, path in (("0x7f000001:80", "upstreams.api.peers[0]"),
                           ({"host": "0x0", "port": 80}, "upstreams.api.peers[0].host")):
            with self.assertRaises(ConfigError) as caught:
                validate_config({"upstreams": {"api": {"peers": [peer]}}})
            self.assertEqual(caught.exception.path, path)
            self.assertIn("a host name or an IP address", str(caught.exception))
        h = Harness(plugins=["routes"])
        answer = h.admin("PUT", "/routes/x", body={"group": "api", "peer": "0x0:80",
                                                   "match": {"path": "/x"}})
        self.assertEqual((answer.status, answer.obj["field"]), (400, "peer"))

    def test_machineAddress(self):
        """This machine's own address (its ``eth0`` one, say) at the port of
        the proxy listening on every address (``tcp:8080``) is tproxy
        itself, as loopback is: 400, nothing registered; at another port, a
        backend."""
        host = machine_address()
        h = harness()
        answer = h.admin("GET", "/upstream/add?port=8080&host=" + host)
        self.assertEqual((answer.status, answer.obj["field"], answer.obj["error"]),
                         (400, "port", "{} is tproxy's own proxy listener: requests "
                          "sent there would come back to it".format(host + ":8080")))
        self.assertEqual(servers(h), 0)
        answer = h.admin("GET", "/upstream/add?port=8081&host=" + host)
        self.assertEqual(answer.status, 200)

    def test_machineAddressInConfig(self):
        """Nor as a static peer: the error names it."""
        host = machine_address()
        with self.assertRaises(ConfigError) as caught:
            validate_config({"listen": "tcp:8080", "upstreams": {"api": {"peers": [
                {"host": host, "port": 8080}]}}})
        self.assertEqual(caught.exception.path, "upstreams.api.peers[0]")
        self.assertIn("is tproxy's own proxy listener", caught.exception.problem)

    def test_good(self):
        """Ordinary unicast addresses and names are fine."""
        h = harness()
        for host in ("10.0.0.1", "127.0.0.1", "::1", "2001:db8::1", "backend.local"):
            self.assertEqual(h.admin("GET", "/upstream/add?port=9001&host=" + host).status,
                             200, host)


class OversizeTests(SynchronousTestCase):
    """The admin listener answers oversized requests, as the proxy does."""

    def setUp(self):
        self.h = harness()

    def test_longRequestLine(self):
        target = b"/upstream/status?x=" + b"a" * (20 * 1024)
        response = self.h.admin_raw(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(response.status, 414)
        self.assertEqual(response.json(), {"error": "request line too long"})
        self.assertEqual(response.headers.get("connection"), "close")

    def test_unendedRequestLine(self):
        """A request line that never ends is answered once it is too long."""
        response = self.h.admin_raw(b"GET /" + b"a" * (MAX_LINE_SIZE + 100))
        self.assertEqual(response.status, 414)

    def test_longHeaderLine(self):
        response = self.h.admin_raw(b"GET /upstream/status HTTP/1.1\r\nHost: localhost\r\n"
                                    b"X-Big: " + b"b" * (20 * 1024) + b"\r\n\r\n")
        self.assertEqual(response.status, 431)
        self.assertEqual(response.json(), {"error": "request header line too long"})

    def test_unendedHeaderLine(self):
        response = self.h.admin_raw(b"GET /upstream/status HTTP/1.1\r\nHost: localhost\r\n"
                                    b"X-Big: " + b"b" * (MAX_LINE_SIZE + 100))
        self.assertEqual(response.status, 431)

    def test_manyHeaders(self):
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
        response = self.h.admin_raw(b"GET /upstream/status HTTP/1.1\r\nHost: localhost\r\n"
                                    + fields + b"\r\n")
        self.assertEqual(response.status, 431)
        self.assertEqual(response.json(), {"error": "request header fields too large"})

    def test_bodyTooLarge(self):
        response = self.h.admin_raw(b"POST /upstream/add HTTP/1.1\r\nHost: localhost\r\n"
                                    b"Content-Length: 2000000\r\n\r\n")
        self.assertEqual(response.status, 413)
        response = self.h.admin_raw(b"POST /upstream/add HTTP/1.1\r\nHost: localhost\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n"
                                    b"200000\r\n" + b"x" * 0x200000)
        self.assertEqual(response.status, 413)
        self.assertEqual(servers(self.h), 0)

    def test_hugeChunk(self):
        """A chunk announcing more than the limit is a 413 at once, before
        its bytes come (as nginx); a size past 2**63 - 1 a 400 (as the
        proxy's listener), with either parser."""
        head = (b"POST /upstream/add HTTP/1.1\r\nHost: localhost\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        for size, status in ((b"100001", 413), (b"0000100001;a=b", 413),
                             (b"ffffffffffffffff", 400), (b"8000000000000000", 400)):
            response = self.h.admin_raw(head + size + b"\r\nabc")
            self.assertEqual(response.status, status, size)
        # (a small chunk is read: the body then has no type the API reads)
        self.assertEqual(self.h.admin_raw(head + b"3\r\nabc\r\n0\r\n\r\n").status, 415)
        self.assertEqual(servers(self.h), 0)

    def test_hugeChunkSizeLineSplit(self):
        """The same when the size line comes a byte at a time."""
        head = (b"POST /upstream/add HTTP/1.1\r\nHost: localhost\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        for size, status in ((b"100001", 413), (b"ffffffffffffffff", 400)):
            transport = StringTransport()
            conn = self.h.admin_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            conn.makeConnection(transport)
            conn.dataReceived(head + b"3\r\nabc\r\n")
            for byte in size + b"\r":
                conn.dataReceived(bytes([byte]))
            self.assertEqual(transport.value(), b"", size)
            conn.dataReceived(b"\nabc")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 %d " % status),
                            transport.value())
            conn.connectionLost(None)

    def test_malformed(self):
        """Bytes that are not HTTP get a JSON 400."""
        response = self.h.admin_raw(b"GET /\x00 HTTP/1.1\r\n\r\n")
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json(), {"error": "malformed request"})

    def test_slowRequest(self):
        """A request left unfinished is a 408 after the idle timeout."""
        pending = self.h.admin_raw(b"GET /upstream/status HTTP/1.1\r\nHost: loc",
                                   wait=False)
        self.h.advance(59)
        self.assertFalse(pending.done)
        self.h.advance(1)
        self.assertEqual(pending.result().status, 408)

    def test_pipelinedBurst(self):
        """Requests pipelined in one read are all answered, in order (a
        burst deeper than the interpreter's recursion limit included: the
        limit lowered to 200 frames above this test's, so that the burst is
        300 requests, not 1,100)."""
        depth, frame = 0, sys._getframe()
        while frame is not None:
            depth, frame = depth + 1, frame.f_back
        self.addCleanup(sys.setrecursionlimit, sys.getrecursionlimit())
        sys.setrecursionlimit(depth + 200)
        n = sys.getrecursionlimit() + 100
        burst = b"".join(b"GET /upstream/add?port=%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
                         % (10000 + i) for i in range(n))
        response = self.h.admin_raw(burst)
        self.assertEqual(response.json()["port"], 10000)
        self.assertEqual(servers(self.h), n)

    def test_head(self):
        response = self.h.admin_raw(
            b"HEAD /upstream/status HTTP/1.1\r\nHost: localhost\r\n\r\n", method="HEAD")
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual(response.headers.get("x-content-type-options"), "nosniff")


class InsecureListenerTests(SynchronousTestCase):
    """An admin listener off loopback needs a token, or an explicit yes."""

    def test_refused(self):
        for listen in ("tcp:9180", "tcp:9180:interface=0.0.0.0",
                       "tcp:9180:interface=10.0.0.5", "tcp6:9180:interface=\\:\\:"):
            with self.assertRaises(ConfigError) as caught:
                validate_config({"admin": {"listen": listen}})
            self.assertEqual(caught.exception.path, "admin.listen")
            self.assertIn("admin.allow_remote_without_token", caught.exception.problem)

    def test_allowed(self):
        """With a token, or with the explicit yes: the listener is kept."""
        for admin in ({"listen": "tcp:9180", "token": "s3cret"},
                      {"listen": "tcp:9180", "allow_remote_without_token": True}):
            config = validate_config({"admin": admin})
            self.assertEqual({k: config["admin"][k] for k in admin}, admin)

    def test_warned(self):
        """Allowed, it is a warning at start, naming the listener and the key."""
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import globalLogPublisher
        from tproxy.tap import Options, makeService
        from tests.test_tap import write_json
        options = Options()
        options.parseOptions(["-c", write_json(self, {
            "listen": "tcp:0:interface=127.0.0.1",
            "admin": {"listen": "tcp:0", "allow_remote_without_token": True}})])
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        makeService(options, reactor=MemoryReactorClock())
        warned = [e for e in events if e.get("log_namespace") == "tproxy.tap"
                  and e["log_level"].name == "warn" and "admin" in e["log_format"]]
        self.assertEqual([e["listen"] for e in warned], ["tcp:0"])
        self.assertIn("allow_remote_without_token", warned[0]["log_format"])

    def test_local(self):
        for listen in ("tcp:9180:interface=127.0.0.1", "tcp:0:interface=127.0.0.2",
                       "tcp6:9180:interface=\\:\\:1", "unix:/run/tproxy-admin.sock",
                       "tcp:9180:interface=localhost"):
            self.assertTrue(endpoint_is_local(listen), listen)
        self.assertFalse(endpoint_is_local("systemd:domain=INET:index=0"))

    def test_ownListeners(self):
        """Which of its own listeners a peer's address would reach: the
        listener's interface, or loopback for one on every address (IPv4's
        for ``0.0.0.0``, both for ``::``); an ``ssl:`` one by its port and
        interface alone (its files are not read), a UNIX one never."""
        reached = own_listeners([
            ("proxy", "tcp:8080"), ("admin", "tcp:9180:interface=127.0.0.1"),
            ("tls", "ssl:8443:privateKey=/nonexistent.pem:interface=10.0.0.5"),
            ("v6", "tcp6:9000:interface=\\:\\:"), ("unix", "unix:/run/x.sock")])
        cases = {("127.0.0.1", 8080): "proxy", ("127.0.0.9", 8080): "proxy",
                 ("localhost", 8080): "proxy", ("::1", 8080): None,
                 ("10.0.0.7", 8080): None, ("127.0.0.1", 9180): "admin",
                 ("localhost", 9180): "admin", ("127.0.0.2", 9180): None,
                 ("10.0.0.5", 8443): "tls", ("127.0.0.1", 8443): None,
                 ("::1", 9000): "v6", ("127.0.0.1", 9000): "v6", ("127.0.0.1", 9001): None}
        self.assertEqual({k: reached(*k) for k in cases}, cases)

    def test_parsedAgain(self):
        """A description parsed again gives the same answer, in a new dict."""
        first = parse_endpoint("tcp:9180:interface=127.0.0.1")
        first[2]["interface"] = "0.0.0.0"
        self.assertEqual(parse_endpoint("tcp:9180:interface=127.0.0.1")[:1] +
                         parse_endpoint("tcp:9180:interface=127.0.0.1")[2:],
                         ("TCP", {"interface": "127.0.0.1", "backlog": 50}))
        self.assertTrue(endpoint_is_local("tcp:9180:interface=127.0.0.1"))
        self.assertRaises(ValueError, parse_endpoint, "tcp:notaport")
        self.assertRaises(ValueError, parse_endpoint, "tcp:notaport")


class _Registers(object):
    """A plugin adding ``GET /upstream/status`` (the registry's)."""

    def __init__(self, settings=None):
        pass

    @hookimpl
    def init_worker(self, gateway):
        gateway.admin.route("GET", "/upstream/status", lambda request: (200, {}))


class DuplicateRouteTests(SynchronousTestCase):
    """Two plugins on one admin method and path: refused at start."""

    def test_refused(self):
        with self.assertRaises(DuplicateRoute) as caught:
            Harness(plugins=["registry", {"name": _Registers, "settings": {}}])
        message = str(caught.exception)
        self.assertIn("GET /upstream/status", message)
        self.assertIn("'registry'", message)
        self.assertIn("_Registers", message)

    def test_probesTaken(self):
        """tproxy's own probe paths are taken."""
        class Health(_Registers):
            @hookimpl
            def init_worker(self, gateway):
                gateway.admin.route("GET", "/healthz", lambda request: (200, {}))
        with self.assertRaises(DuplicateRoute) as caught:
            Harness(plugins=[{"name": Health, "settings": {}}])
        self.assertIn("GET /healthz", str(caught.exception))
        self.assertIn("tproxy itself", str(caught.exception))

    def test_samePluginReplaces(self):
        """A plugin may register its own route again; code outside
        init_worker may replace its own."""
        routes = AdminRoutes()
        routes.registering = "p"
        routes.route("GET", "/x", lambda r: (200, {"v": 1}))
        routes.route("GET", "/x", lambda r: (200, {"v": 2}))
        routes.registering = None
        with self.assertRaises(DuplicateRoute):
            routes.route("GET", "/x", lambda r: (200, {"v": 3}))
        self.assertEqual(self.successResultOf(routes.handle(AdminRequest("GET", "/x"))),
                         (200, {"v": 2}))


class GatherTests(SynchronousTestCase):
    """``route(..., gather=)``: for a GET route without parameters."""

    def test_getOnly(self):
        routes = AdminRoutes()
        combine = lambda request, answer, workers: answer  # noqa: E731
        for method, path in (("PUT", "/x"), ("GET", "/x/{name}")):
            with self.assertRaises(ValueError):
                routes.route(method, path, lambda r: (200, {}), gather=combine)
        routes.route("GET", "/x", lambda r: (200, {}), gather=combine)
        self.assertIs(routes.gathers[("GET", "/x")], combine)
        routes.route("GET", "/x", lambda r: (200, {}))
        self.assertNotIn(("GET", "/x"), routes.gathers)


class RemoveHintTests(SynchronousTestCase):
    """``remove`` without the right prefix says where the server is."""

    def test_hint(self):
        h = harness()
        h.admin("GET", "/upstream/add?port=9001&prefix=api")
        h.admin("GET", "/upstream/add?port=9001&prefix=web")
        answer = h.admin("GET", "/upstream/remove?port=9001")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.obj["registered_under"], ["api", "web"])
        self.assertIn("registered under 'api', 'web'", answer.obj["error"])
        self.assertEqual(servers(h), 2)


class _Canary(object):
    """A balancer sending requests with ``X-Canary`` to the ``canary`` group."""

    def __init__(self, settings=None):
        pass

    @hookimpl
    def balancer(self, ctx, tried):
        if ctx.request.headers.get("x-canary") is None:
            return None
        group = ctx.gateway.registry.group("canary")
        for peer in group.peers.values():
            if peer not in tried:
                return peer
        return None


class RoutableTests(SynchronousTestCase):
    """A group marked not routable is never chosen by a request's path."""

    def harness(self, config=None, mode="group"):
        config = dict(config or {})
        config.setdefault("upstreams", {})["default"] = {"peers": ["127.0.0.1:9001"]}
        return Harness(config=config,
                       plugins=["registry", {"name": "router", "settings": {"mode": mode}},
                                {"name": _Canary, "settings": {}}, "least_conn"],
                       servers={"127.0.0.1:9001": echo, "127.0.0.1:9002": echo})

    def assertHidden(self, h):
        seen = h.request("GET", "/canary/x").json()
        self.assertEqual((seen["server"], seen["uri"]), ("127.0.0.1:9001", "/canary/x"))
        seen = h.request("GET", "/canary/x", headers={"X-Canary": "1"}).json()
        self.assertEqual(seen["server"], "127.0.0.1:9002")

    def test_static(self):
        h = self.harness({"upstreams": {"canary": {"peers": ["127.0.0.1:9002"],
                                                   "routable": False}}})
        self.assertHidden(h)
        group, = [g for g in h.admin("GET", "/upstream/status").obj["groups"]
                  if g["prefix"] == "canary"]
        self.assertFalse(group["routable"])

    def test_pathPrefixMode(self):
        h = self.harness({"upstreams": {"canary": {"peers": ["127.0.0.1:9002"],
                                                   "routable": False}}}, mode="path_prefix")
        for _ in range(4):
            self.assertEqual(h.request("GET", "/canary/x").json()["server"], "127.0.0.1:9001")

    def test_registered(self):
        """``routable=false`` on add marks the group; a heartbeat without it
        leaves the mark; ``routable=true`` lifts it."""
        h = self.harness()
        answer = h.admin("GET", "/upstream/add?prefix=canary&port=9002&routable=false")
        self.assertFalse(answer.obj["routable"])
        self.assertHidden(h)
        self.assertFalse(h.admin("GET", "/upstream/add?prefix=canary&port=9002")
                         .obj["routable"])
        self.assertHidden(h)
        answer = h.admin("POST", "/upstream/servers",
                         body={"prefix": "canary", "port": 9002, "routable": True})
        self.assertTrue(answer.obj["routable"])
        self.assertEqual(h.request("GET", "/canary/x").json()["server"], "127.0.0.1:9002")
        self.assertEqual([(e["action"], e["routable"]) for e in audits(h)],
                         [("upstream.add", False), ("upstream.change", True)])

    def test_badValue(self):
        h = self.harness()
        answer = h.admin("GET", "/upstream/add?prefix=canary&port=9002&routable=maybe")
        self.assertEqual((answer.status, answer.obj["field"]), (400, "routable"))

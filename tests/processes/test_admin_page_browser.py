"""
The status page in a real browser: headless Chromium (Debian's ``chromium``
and ``chromium-driver``, driven by Selenium) against a tproxy running on the
real reactor, with real backends and real sockets (the browser is the
subject here).

The test starts tproxy with an admin token, registers peers through the
admin API over HTTP, loads ``/``, enters the token in the page's form, reads
the rendered tables, registers another peer and sees the page update at its
next poll (the page's timers run on a clock the test moves: :data:`PAGE_TIMERS`),
and saves screenshots: ``status-page-login.png`` and
``status-page.png`` in ``$TPROXY_SCREENSHOT_DIR`` if set, else in trial's
working directory (``_trial_temp/``).

Without Selenium or Chromium the test is skipped, except on CPython under CI
(``CI=true``), where it fails: ``.ci/run`` installs Chromium and the ``test``
extra installs Selenium, so a missing one is a broken CI, not a reason to
skip.  ``TPROXY_CHROMIUM`` and ``TPROXY_CHROMEDRIVER`` override the paths.
"""

import json
import os
import platform
import shutil
import tempfile
from urllib.request import Request, urlopen

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tproxy.tap import Options, makeService

#: selenium's names, imported when the test runs (importing selenium costs
#: every run of the suite ~0.15 s of CPU at its start otherwise)
webdriver = TimeoutException = Service = By = Keys = WebDriverWait = None


def _import_selenium():
    """Import selenium's names into this module; why it cannot, or ``None``."""
    global webdriver, TimeoutException, Service, By, Keys, WebDriverWait
    try:
        from selenium import webdriver
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError as e:  # pragma: no cover - depends on the environment
        return "selenium is not installed ({})".format(e)
    return None


CHROMIUM = os.environ.get("TPROXY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("TPROXY_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")
TOKEN = "page-test-token"
#: Seconds the browser may take to show what the test waits for; only a
#: bound for a failure, never asserted on.
WAIT = 30
#: The page's timers, on a clock the test moves: ``setTimeout`` and
#: ``clearTimeout`` keep the calls, ``__pageTimers.fire()`` runs the ones
#: pending and returns their delays.  The page's only timer is its next poll
#: (every 2 s), which the test runs when it looks for an update, instead of
#: the page polling all along (re-rendering its tables while nobody looks).
PAGE_TIMERS = (
    "(function () {"
    " var timers = {}, next = 1;"
    " window.setTimeout = function (f, ms) {"
    "  var id = next++;"
    "  timers[id] = {f: f, ms: ms || 0, args: Array.prototype.slice.call(arguments, 2)};"
    "  return id; };"
    " window.clearTimeout = function (id) { delete timers[id]; };"
    " window.__pageTimers = {"
    "  pending: function () { return Object.keys(timers).length; },"
    "  fire: function () {"
    "   var due = timers; timers = {};"
    "   return Object.keys(due).map(function (id) {"
    "    due[id].f.apply(window, due[id].args); return due[id].ms; }); } };"
    "})();")


def _missing():
    """Why the browser test cannot run here, or ``None``."""
    missing = _import_selenium()
    if missing is not None:
        return missing
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return "{} not found (apt-get install {})".format(path, package)
    return None


def _must_run():
    return (os.environ.get("CI", "").lower() == "true"
            and platform.python_implementation() == "CPython")


class _ReportedHealth(object):
    """
    What a health state reports, for a gateway that has none
    (``gateway.health.as_dict(peer)``): the peer on ``bad_port`` failing.
    """

    def __init__(self, clock, bad_port):
        self.clock = clock
        self.bad_port = bad_port

    def as_dict(self, peer):
        if peer.port != self.bad_port:
            return {"healthy": True, "fails": 0, "ejected_for": 0, "last_error": None}
        return {"healthy": False, "fails": 3, "ejected_for": 12.5, "last_error": {
            "time": self.clock.seconds() - 4, "kind": "connect",
            "detail": "connection refused"}}


class _Hello(Resource):
    """A backend: answers every request with its own name."""

    isLeaf = True

    def __init__(self, name):
        Resource.__init__(self)
        self.name = name

    def render_GET(self, request):
        return self.name.encode("ascii")


def _screenshot_path(name):
    directory = os.environ.get("TPROXY_SCREENSHOT_DIR") or os.getcwd()
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, name)


class StatusPageBrowserTests(TestCase):
    """``GET /`` of the admin listener in headless Chromium."""

    timeout = 180

    def setUp(self):
        missing = _missing()
        if missing:
            if _must_run():
                self.fail("the browser test must run on CPython in CI: " + missing)
            raise SkipTest(missing)

    @inlineCallbacks
    def _start(self):
        """tproxy with a token and two backends, on loopback ports."""
        self.backends = []
        for name in ("b1", "b2", "b3"):
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                Site(_Hello(name)))
            self.addCleanup(port.stopListening)
            self.backends.append(port.getHost().port)
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            json.dump({"listen": "tcp:0:interface=127.0.0.1",
                       "admin": {"listen": "tcp:0:interface=127.0.0.1", "token": TOKEN},
                       "shutdown_timeout": 0,
                       "plugins": ["registry", "router", "least_conn"]}, f)
        options = Options()
        options.parseOptions(["-c", config])
        service = makeService(options, reactor=reactor)
        self.reported_health = not hasattr(service.gateway, "health")
        if self.reported_health:
            service.gateway.health = _ReportedHealth(reactor, self.backends[1])
        service.startService()
        self.addCleanup(service.stopService)
        self.registry = service.gateway.registry
        self.assertEqual(len(service.ports), 2)
        self.proxy_port = service.ports[0].getHost().port
        self.admin_port = service.ports[1].getHost().port

    # -- run in a thread (blocking HTTP and WebDriver calls) ------------------------

    def call(self, method, path, token=TOKEN, port=None):
        request = Request("http://127.0.0.1:{}{}".format(port or self.admin_port, path),
                          method=method)
        if token:
            request.add_header("Authorization", "Bearer " + token)
        with urlopen(request, timeout=WAIT) as response:
            return response.read()

    def register(self, port, prefix="api", weight=1):
        body = json.loads(self.call("POST", "/upstream/add?host=127.0.0.1&port={}&prefix={}"
                                            "&weight={}".format(port, prefix, weight)))
        self.assertTrue(body["success"])

    def browser(self):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp(prefix="tproxy-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        # (the omnibox's popup is a web page of its own that headless
        # Chromium loads at start, in a renderer of its own: ~0.5 s of CPU;
        # no zygote, whose processes the renderer would fork from.  Not
        # --single-process, ~0.5 s of CPU cheaper but unsupported by
        # Chromium: a session failed to start once in a fresh clone's CI,
        # "Unable to receive message from renderer")
        for flag in ("--headless", "--no-sandbox", "--no-zygote",
                     "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup,"
                     "WebUIOmniboxFullPopup",
                     "--user-data-dir=" + profile):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_TIMERS})
        return driver

    def next_poll(self, driver):
        """The page's next poll, now: once the page has scheduled it (a poll
        schedules the next when it is done), 2 s later by its clock."""
        self.wait(driver, lambda: driver.execute_script("return window.__pageTimers.pending();"),
                  "the page's next poll to be scheduled")
        self.assertEqual(driver.execute_script("return window.__pageTimers.fire();"), [2000])

    def wait(self, driver, condition, what):
        try:
            return WebDriverWait(driver, WAIT, poll_frequency=0.02).until(
                lambda d: condition())
        except TimeoutException:
            path = _screenshot_path("status-page-failed.png")
            driver.save_screenshot(path)
            self.fail("the page never showed {} (screenshot: {})".format(what, path))

    def scenario(self):
        """What a person does with the page; runs in a thread."""
        with urlopen("http://127.0.0.1:{}/".format(self.admin_port), timeout=WAIT) as page:
            self.assertEqual(page.headers.get_all("Content-Type"), ["text/html; charset=utf-8"])
            self.assertEqual(page.headers["X-Frame-Options"], "DENY")
            self.assertIn("frame-ancestors 'none'", page.headers["Content-Security-Policy"])
        self.register(self.backends[0], weight=3)
        self.register(self.backends[1])
        for _ in range(5):
            self.assertIn(self.call("GET", "/api/x", token=None, port=self.proxy_port),
                          (b"b1", b"b2"))
        driver = self.browser()
        try:
            self.drive(driver)
        finally:
            driver.quit()

    def drive(self, driver):
        find = driver.find_elements
        visible = lambda css: [e for e in find(By.CSS_SELECTOR, css) if e.is_displayed()]
        driver.get("http://127.0.0.1:{}/".format(self.admin_port))

        # the data needs the token: the page asks for it
        self.wait(driver, lambda: visible("#login"), "the token form")
        self.assertEqual(visible("#content"), [])
        token = driver.find_element(By.ID, "token")
        token.send_keys("wrong")
        token.submit()
        self.wait(driver, lambda: "refused" in driver.find_element(By.ID, "login-why").text,
                  "that the token was refused")
        driver.save_screenshot(_screenshot_path("status-page-login.png"))
        token = driver.find_element(By.ID, "token")
        token.send_keys(TOKEN)
        token.submit()
        self.wait(driver, lambda: visible("#content"), "the status once the token was given")
        self.assertNotIn(TOKEN, driver.current_url)

        # the page re-renders its tables at every poll: read a table's cells
        # in one script, not element by element (an element may be replaced
        # between two WebDriver calls)
        def cells(css):
            return driver.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0])).map("
                "function (tr) { return Array.from(tr.cells).map("
                "function (td) { return td.innerText.trim(); }); });", css)

        # the groups table
        def group_cells(name):
            rows = cells('tr.group[data-group="{}"]'.format(name))
            return rows[0] if rows else None
        self.wait(driver, lambda: group_cells("api"), "the group api")
        # one process: no workers' table (a box with "workers" lists them)
        self.assertEqual(visible("#workers-section"), [])
        self.assertEqual(group_cells("api")[1:], ["api", "2 / 2", "2", "0", "0", "5", "4"])

        # open it: its peers
        def peers():
            return cells('tr.panel[data-group="api"] tr[data-peer]')
        driver.find_element(By.CSS_SELECTOR, 'tr.group[data-group="api"]').click()
        self.wait(driver, lambda: len(peers()) == 2, "the peers of api")
        rows = peers()
        addresses = ["127.0.0.1:{}".format(p) for p in self.backends]
        self.assertEqual([r[0] for r in rows], sorted(addresses[:2]))
        by_address = dict((r[0], r) for r in rows)
        first = by_address[addresses[0]]
        self.assertEqual(first[1:3], ["live", "3"])       # state, weight
        self.assertEqual(first[3], "0")                   # in flight
        self.assertTrue(first[5].endswith(" ago"), first)  # last heartbeat
        self.assertRegex(first[6], r"^[0-9.]+ s$")         # expires in
        self.assertEqual(sum(int(r[4]) for r in rows), 5)  # requests sent
        self.assertEqual(first[7:9], ["healthy", "–"])     # health, recent error
        if self.reported_health:
            second = by_address[addresses[1]]
            self.assertEqual(second[7], "unhealthy ejected 12.5 s · 3 fail(s)")
            self.assertRegex(second[8], r"^connect: connection refused · [0-9.]+ s ago$")

        cards = dict(driver.execute_script(
            "return Array.from(document.querySelectorAll('#cards .card')).map("
            "function (c) { return [c.querySelector('.k').innerText,"
            " c.querySelector('.v').innerText]; });"))
        self.assertEqual((cards["requests"], cards["live / peers"], cards["groups"]),
                         ("5", "2 / 2", "1"))
        plugins = dict(cells("#plugins tbody tr"))
        self.assertEqual(plugins["balancer"], "least_conn")

        # a registration shows up without a reload
        self.register(self.backends[2])
        self.register(self.backends[0], prefix="web")
        self.next_poll(driver)
        self.wait(driver, lambda: len(peers()) == 3, "the third peer of api")
        self.wait(driver, lambda: group_cells("web"), "the new group web")
        self.assertEqual(group_cells("api")[2], "3 / 3")
        driver.save_screenshot(_screenshot_path("status-page.png"))

        # a large group, opened from the keyboard, is shown 50 peers at a time
        # (registered through the registry itself, in the reactor's thread:
        # 120 admin requests would test the admin API again, not the page)
        blockingCallFromThread(reactor, lambda: [
            self.registry.register("many", "127.0.0.1", 20000 + i) for i in range(120)])
        self.next_poll(driver)
        self.wait(driver, lambda: group_cells("many"), "the group many")
        driver.find_element(By.CSS_SELECTOR, 'tr.group[data-group="many"]').send_keys(Keys.ENTER)
        many = 'tr.panel[data-group="many"] '

        def page():
            return ([r[0] for r in cells(many + "tr[data-peer]")],
                    driver.execute_script("var e = document.querySelector(arguments[0]);"
                                          "return e && e.innerText;", many + ".info"))
        first_page = (["127.0.0.1:{}".format(20000 + i) for i in range(50)], "1–50 of 120")
        self.wait(driver, lambda: page() == first_page, "the first 50 peers of many")
        driver.find_element(By.CSS_SELECTOR, many + "button:nth-of-type(2)").click()
        second_page = (["127.0.0.1:{}".format(20050 + i) for i in range(50)], "51–100 of 120")
        self.wait(driver, lambda: page() == second_page, "the next 50 peers of many")

        # the page's script and style ran under its CSP: no violation reported
        messages = [entry["message"] for entry in driver.get_log("browser")]
        self.assertEqual([m for m in messages if "Content Security Policy" in m], [])

    @inlineCallbacks
    def test_page(self):
        """Token form, tables, a live update, a screenshot."""
        yield self._start()
        yield deferToThread(self.scenario)
        self.assertTrue(os.path.exists(_screenshot_path("status-page.png")))

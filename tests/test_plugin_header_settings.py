"""
Settings of the gateway plugins that name a header the plugin writes, or an
admin path it serves: a name the proxy frames or routes by
(``Content-Length``, ``Transfer-Encoding``, ``Host``, ...), or a path no
request can reach, is a config error naming its JSON path, never a
corrupted message on the wire.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError
from tproxy.testing import Harness

SECRET = "0123456789abcdef-secret"


def start(name, settings):
    return Harness(config={"upstreams": {"default": {"peers": ["127.0.0.1:9001"]}}},
                   plugins=["router", {"name": name, "settings": settings}, "least_conn"],
                   servers={"127.0.0.1:9001": lambda request: (200, {}, b"ok")})


class HeaderSettingsTests(SynchronousTestCase):

    def assertRefused(self, name, settings, path, words):
        e = self.assertRaises(ConfigError, start, name, settings)
        self.assertEqual(e.path, "plugins[1].settings." + path, (name, settings))
        self.assertIn(words, e.problem)

    def test_framingHeadersRefused(self):
        """``request_id``'s ``header`` of ``Content-Length`` sent the id as the
        response's length (a response no client could read)."""
        for header in ["Content-Length", "transfer-encoding", "Connection", "Host",
                       "Keep-Alive", "TE", "Trailer", "Upgrade", "X Bad", "X-Id\n"]:
            self.assertRefused("request_id", {"header": header}, "header",
                               "bad header name {!r}".format(header))
        self.assertRefused("cache", {"header": "Content-Length"}, "header",
                           "bad header name")
        self.assertRefused("hmac_auth", {"consumers": {"a": {"secret": SECRET}},
                                         "consumer_header": "Transfer-Encoding"},
                           "consumer_header", "bad header name")
        self.assertRefused("key_auth", {"consumers": [{"username": "a", "keys": [SECRET]}],
                                        "consumer_header": "Content-Length"},
                           "consumer_header", "bad header name")
        self.assertRefused("jwt_auth", {"keys": [{"algorithm": "HS256", "secret": SECRET * 2}],
                                        "claims_to_headers": {"sub": "Host"}},
                           'claims_to_headers.sub', "bad header name")
        # a header merely starting so is fine
        h = start("request_id", {"header": "Content-Length-Id"})
        response = h.request("GET", "/x")
        self.assertEqual((response.status, response.body), (200, b"ok"))
        self.assertEqual(response.headers.get("Content-Length-Id"), h.contexts[0].request_id)

    def test_adminPaths(self):
        """An admin path with a space, a query or a ``{`` could never be
        reached as written."""
        for path in ["/a b", "/cache?x", "/{x}", "/", "cache", "/a//b", "/cache\n"]:
            self.assertRefused("cache", {"admin_path": path}, "admin_path",
                               "bad admin path")
            self.assertRefused("prometheus", {"path": path}, "path", "bad admin path")
        h = start("cache", {"admin_path": "/ops/cache-v2"})
        self.assertEqual(h.admin("GET", "/ops/cache-v2").status, 200)

    def test_signedNames(self):
        """``hmac_auth``'s ``enforce_headers`` holds names a client can list
        in ``headers``: ``"Date "`` (never listed so) refused every request."""
        self.assertRefused("hmac_auth", {"consumers": {"a": {"secret": SECRET}},
                                         "enforce_headers": ["@request-target", "Date "]},
                           "enforce_headers[1]", "bad name 'Date '")
        self.assertRefused("hmac_auth", {"consumers": {"a": {"secret": SECRET}},
                                         "enforce_headers": ["date\n"]},
                           "enforce_headers[0]", "bad name")
        start("hmac_auth", {"consumers": {"a": {"secret": SECRET}},
                            "enforce_headers": ["(request-target)", "request-line", "X-Date"]})

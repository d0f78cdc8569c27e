"""
Tests for :class:`tproxy.Headers` (:mod:`tproxy.http.headers`): the header
list plugins read and edit in ``ctx.request.headers`` and
``response.headers``.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy import Headers


def sample():
    return Headers([(b"Host", b"example.com"), (b"Accept", b"text/html"),
                    (b"X-Tag", b"a"), (b"x-tag", b"b")])


class HeadersTests(SynchronousTestCase):
    """Ordered, case-insensitive, ``str`` out, ``str`` or ``bytes`` in."""

    def test_get(self):
        """The first value, whatever the case of the name; a default else."""
        h = sample()
        self.assertEqual(h.get("x-TAG"), "a")
        self.assertEqual(h.get(b"host"), "example.com")
        self.assertIsNone(h.get("missing"))
        self.assertEqual(h.get("missing", "-"), "-")

    def test_getAll(self):
        self.assertEqual(sample().get_all("X-Tag"), ["a", "b"])
        self.assertEqual(sample().get_all("missing"), [])

    def test_set(self):
        """``set`` replaces every field of the name with one, at the end."""
        h = sample()
        h.set("X-TAG", "c")
        self.assertEqual(h.items(), [("Host", "example.com"), ("Accept", "text/html"),
                                     ("X-TAG", "c")])

    def test_add(self):
        """``add`` keeps the fields already there."""
        h = sample()
        h.add("X-Tag", "c")
        self.assertEqual(h.get_all("x-tag"), ["a", "b", "c"])

    def test_remove(self):
        """``remove`` drops every field of the name and says how many."""
        h = sample()
        self.assertEqual(h.remove("x-tag"), 2)
        self.assertEqual(h.remove("x-tag"), 0)
        self.assertNotIn("X-Tag", h)
        self.assertIn("ACCEPT", h)
        self.assertEqual(len(h), 2)

    def test_latin1(self):
        """Values are latin-1 both ways; ``raw`` keeps the bytes."""
        h = Headers()
        h.set("X-Name", "caf\xe9")
        self.assertEqual(h.raw, [(b"X-Name", b"caf\xe9")])
        self.assertEqual(h.get("x-name"), "caf\xe9")
        self.assertEqual(list(h), [("X-Name", "caf\xe9")])

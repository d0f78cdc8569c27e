"""
Tests for :mod:`tproxy.routing.linear_re`, the regex engine of regex routes
where google-re2 is missing (PyPy): the same matches as ``re`` (and RE2,
where installed) on random texts, the same refusals as RE2, in linear time.
"""

import random
import re

from twisted.trial.unittest import SynchronousTestCase

from tproxy.routing import linear_re

try:
    import re2
except ImportError:  # PyPy
    re2 = None

#: Patterns on which re, RE2 and linear_re agree, covering each construct.
PATTERNS = [
    r"^/item/([0-9]+)$", r"\.(png|jpe?g|gif)$", r"a*", r"(a|ab)(c|bcd)(d*)",
    r"(a+?)(a*)", r"^/(?P<v>v[0-9])/(.*)$", r"x{2,4}?y", r"(?i)AbC", r"[^/]+/(\w+)\b",
    r"(a|b)*?c", r"\bfoo\B", r"(?:ab){2}", r"^$", r"(a?){3}a{3}", r"[a-c-]+", r"(?s).+",
    r".+$", r"[\d\s]+", r"(x)?y", r"^/api(/.*)?$", r"(?m)^b$", r"[A-Z]+(?i:x)", r"a{0}b",
    r"(?i)[a-c]+", r"\Aab", r"[^a-c]x", r"a{2,}", r"(ab|a)(bc|c)?",
]
ALPHABET = "abcdxy/.0129 \nABCpngjpgXY_"


def outcome(match):
    return None if match is None else (match.span(), match.groups())


class AgreementTests(SynchronousTestCase):
    """linear_re finds what a backtracking engine finds, on random texts."""

    def compare(self, references):
        """linear_re's answer on each random text against each reference's
        (``[(name, compile, final_newline)]``; ``final_newline=False``: not
        on texts that end with a newline), our engine run once a text."""
        rng = random.Random(7)
        for pattern in PATTERNS:
            ours = linear_re.compile(pattern)
            theirs = [(name, compile(pattern), final_newline)
                      for name, compile, final_newline in references]
            for name, reference, _ in theirs:
                self.assertEqual((ours.groups, ours.groupindex),
                                 (reference.groups, dict(reference.groupindex)),
                                 (name, pattern))
            for _ in range(150):
                text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
                found = outcome(ours.search(text))
                for name, reference, final_newline in theirs:
                    if final_newline or not text.endswith("\n"):
                        self.assertEqual(found, outcome(reference.search(text)),
                                         (name, pattern, text))

    def test_agreement(self):
        """The same as ``re`` (whose ``$`` also matches before a final
        newline: RE2's does not, nor does this engine's) and as RE2 (when
        google-re2 is installed: ``test_re2`` is skipped otherwise)."""
        references = [("re", re.compile, False)]
        if re2 is not None:
            references.append(("re2", re2.compile, True))
        self.compare(references)
        self.assertIsNone(linear_re.compile("a$").search("a\n"))

    def test_re2(self):
        """RE2's ``$`` before a final newline, as this engine's (the texts
        of ``test_agreement`` that ``re`` answers otherwise)."""
        if re2 is None:
            raise self.skipTest("google-re2 is not installed")
        for pattern, text in (("a$", "a\n"), ("(a|b)+$", "ab\n"), ("^$", "\n")):
            self.assertEqual(outcome(linear_re.compile(pattern).search(text)),
                             outcome(re2.compile(pattern).search(text)), (pattern, text))
            self.assertIsNone(linear_re.compile(pattern).search(text))

    def test_emptyIterations(self):
        """A repeated group that matched empty keeps its empty capture, as
        in RE2 (``re`` differs on the second)."""
        self.assertEqual(linear_re.compile(r"(a*)*b").search("b").groups(), ("",))
        self.assertEqual(linear_re.compile(r"(a|)+b").search("ab").groups(), ("a",))


class MatchTests(SynchronousTestCase):
    """The match object the router uses."""

    def test_expand(self):
        m = linear_re.compile(r"^/item/(?P<id>[0-9]+)(x)?$").search("/item/42")
        self.assertEqual(m.expand(r"/items/\1/\g<id>/\2."), "/items/42/42/.")
        self.assertEqual((m.group(), m.group("id"), m.group(2)), ("/item/42", "42", None))
        self.assertEqual((m.span(1), m.start(2), m.end()), ((6, 8), -1, 8))
        self.assertRaises(IndexError, m.group, 3)
        self.assertRaises(IndexError, m.group, "nope")

    def test_anchoredMatch(self):
        p = linear_re.compile(r"b+")
        self.assertIsNone(p.match("abb"))
        self.assertEqual(p.match("abb", 1).span(), (1, 3))
        self.assertEqual(p.search("abb").span(), (1, 3))


class RefusalTests(SynchronousTestCase):
    """What would need backtracking is refused, as RE2 refuses it."""

    def test_refused(self):
        for pattern in (r"(a)\1", r"a(?=b)", r"a(?!b)", r"(?<=a)b", r"(?<!a)b",
                        r"(a)(?(1)b|c)", "(unclosed", "a{3,2}"):
            self.assertRaises(linear_re.error, linear_re.compile, pattern)

    def test_posixClassesRefused(self):
        """
        RE2's POSIX classes (``[[:alpha:]]``) are not Python's syntax, where
        ``[[:alpha:]]+`` is a set of ``[:alph`` then ``]+``: a route written
        for RE2 would match other paths here.  Refused, saying what to write;
        brackets that are no such class keep their Python meaning.
        """
        for pattern in (r"^/[[:alpha:]]+$", r"[^[:digit:]]", r"[a-f[:space:]]", r"[[:^alpha:]]"):
            e = self.assertRaises(linear_re.error, linear_re.compile, pattern)
            self.assertIn("POSIX class", str(e))
            self.assertIn("write its characters out", str(e))
        self.assertEqual(linear_re.compile(r"[]:a:]+").search("x:a]").span(), (1, 4))
        self.assertEqual(linear_re.compile(r"\[:alpha:\]").search("[:alpha:]").span(), (0, 9))
        self.assertEqual(linear_re.compile(r"[\[:a:]]").search("x:]").span(), (1, 3))

    def test_re2EscapesNamed(self):
        """RE2's ``\\pL``, ``\\z``: refused as Python refuses them, saying
        they are RE2's (a route written for CPython's RE2)."""
        for pattern in (r"^/\pL+$", r"\PL", r"^/a\z", r"\p{Greek}", r"\Qa.b\E"):
            e = self.assertRaises(linear_re.error, linear_re.compile, pattern)
            self.assertIn("bad escape", str(e))
            self.assertIn("RE2 syntax", str(e))
        e = self.assertRaises(linear_re.error, linear_re.compile, r"^/(?<id>[0-9]+)$")
        self.assertIn("write (?P<name>...)", str(e))

    def test_openRepeatRefused(self):
        """
        ``x{,2}`` is the text ``x{,2}`` to RE2 and ``x{0,2}`` to Python's
        parser: refused, saying how to write the text; ``{0,2}`` and an
        escaped or bracketed ``{,2}`` are the same to both.
        """
        for pattern in (r"^/x{,2}$", r"a{,}"):
            e = self.assertRaises(linear_re.error, linear_re.compile, pattern)
            self.assertIn("is text to RE2 but a repeat", str(e))
        self.assertEqual(linear_re.compile(r"^/x{0,2}$").search("/xx").span(), (0, 3))
        self.assertEqual(linear_re.compile(r"^/x\{,2}$").search("/x{,2}").span(), (0, 6))
        self.assertEqual(linear_re.compile(r"^/x[{,2}]$").search("/x,").span(), (0, 3))

    def test_tooLarge(self):
        """Counted repeats are copies: a program past the limit is refused."""
        linear_re.compile("(?:ab){1000}")
        e = self.assertRaises(linear_re.error, linear_re.compile, "(?:(?:ab){100}){300}")
        self.assertIn("too large", str(e))

    def test_linearTime(self):
        """
        Patterns that take a backtracking engine 2**n steps: a backtracking
        implementation would never finish this test.
        """
        self.assertIsNone(linear_re.compile(r"(a|aa)*c").search("a" * 3000))
        self.assertIsNone(linear_re.compile(r"(a+)+$").search("a" * 3000 + "b"))
        self.assertEqual(linear_re.compile(r"(a*)*$").search("a" * 3000).span(), (0, 3000))

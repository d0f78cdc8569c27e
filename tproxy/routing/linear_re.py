# -*- test-case-name: tests.test_linear_re -*-
"""
A linear-time regular expression engine in pure Python, for the regex
routes where RE2 (``google-re2``) is not installed: PyPy, which has no wheel
of it.

Patterns are parsed by Python's own ``re`` parser, so the syntax is Python's;
what makes a backtracking engine exponential is refused (backreferences,
lookahead and lookbehind, conditionals, atomic groups and possessive
repeats), as RE2 refuses them, and so is what RE2 reads as another pattern
than Python does (a POSIX class ``[[:alpha:]]``, ``x{,2}``), so that a
route written for RE2 never matches other paths here.  The rest is compiled
to a program for a Pike VM (Russ Cox, "Regular Expression Matching: the
Virtual Machine Approach"): all the threads of the match advance together,
one character at a time, so a search costs at most ``len(text) *
len(program)`` steps, whatever the input.  The leftmost match is found with Perl's (and RE2's, and ``re``'s)
preferences: earlier alternatives first, greedy repeats as long and lazy ones
as short as they may be.  Where RE2 and ``re`` differ, this engine does as RE2
(which the same routes use on CPython): ``$`` without the ``m`` flag is the
end of the text only, and a repeated group whose last iteration matched
empty keeps the capture RE2 keeps.

Only what the router uses is offered: :func:`compile`, ``Pattern.search``,
``.groups``, ``.groupindex``, and the match's ``group``, ``groups``,
``span`` and ``expand`` (capture references ``\\1`` and ``\\g<name>``).
"""

import re

from tproxy.routing._linear_re_program import (
    ASSERT, JMP, MATCH, MAX_PROGRAM, SAVE, SPLIT, compile_program)

__all__ = ["compile", "error", "Pattern", "Match", "MAX_PROGRAM"]

#: The error for a pattern that is invalid, or that this engine refuses.
error = re.error


def compile(pattern, flags=0):  # noqa: A001 - the name ``re`` users know
    """
    Compile ``pattern`` (a ``str``) with the ``re`` flags ``IGNORECASE``,
    ``MULTILINE``, ``DOTALL`` and ``ASCII``.

    :raises error: for an invalid pattern, one using a construct that needs
        backtracking, or one larger than :data:`MAX_PROGRAM` instructions.
    """
    program, flags, groups, groupindex = compile_program(pattern, flags)
    return Pattern(pattern, flags, program, groups, groupindex)


class Pattern(object):
    """A compiled pattern: :meth:`search` it in a string."""

    __slots__ = ("pattern", "flags", "groups", "groupindex", "_program")

    def __init__(self, pattern, flags, program, groups, groupindex):
        self.pattern = pattern
        self.flags = flags
        self.groups = groups
        self.groupindex = groupindex
        self._program = program

    def search(self, string, pos=0):
        """The leftmost match of the pattern in ``string`` from ``pos``, or
        ``None``."""
        return self._run(string, pos, True)

    def match(self, string, pos=0):
        """A match starting at ``pos``, or ``None``."""
        return self._run(string, pos, False)

    def _run(self, s, pos, unanchored):
        program = self._program
        n = len(s)
        start = (None,) * (2 * self.groups + 2)
        threads = []
        _add(program, s, threads, set(), 0, pos, start)
        found = None
        i = pos
        while True:
            c = s[i] if i < n else None
            following = []
            visited = set()
            for pc, caps in threads:
                op, test, _ = program[pc]
                if op == MATCH:
                    found = caps  # the threads after it have lower priority
                    break
                if c is not None and test(c):
                    _add(program, s, following, visited, pc + 1, i + 1, caps)
            if i >= n:
                break
            i += 1
            if unanchored and found is None:
                _add(program, s, following, visited, 0, i, start)
            elif not following:
                break
            threads = following
        return None if found is None else Match(self, s, found)

    def __repr__(self):
        return "linear_re.compile(%r)" % (self.pattern,)


def _add(program, s, threads, visited, pc, i, caps):
    """Follow the empty transitions from ``pc`` at position ``i``, in
    priority order, adding the threads that wait for a character (or
    match) to ``threads``."""
    stack = [(pc, caps)]
    pop, push = stack.pop, stack.append
    while stack:
        pc, caps = pop()
        if pc in visited:
            continue
        visited.add(pc)
        op, a, b = program[pc]
        if op == JMP:
            push((a, caps))
        elif op == SPLIT:
            push((b, caps))
            push((a, caps))
        elif op == SAVE:
            push((pc + 1, caps[:a] + (i,) + caps[a + 1:]))
        elif op == ASSERT:
            if a(s, i):
                push((pc + 1, caps))
        else:
            threads.append((pc, caps))


class Match(object):
    """A successful :meth:`Pattern.search`."""

    __slots__ = ("re", "string", "_caps")

    def __init__(self, pattern, string, caps):
        self.re = pattern
        self.string = string
        self._caps = caps

    def _index(self, group):
        if not isinstance(group, int):
            try:
                group = self.re.groupindex[group]
            except KeyError:
                raise IndexError("no such group")
        if not 0 <= group <= self.re.groups:
            raise IndexError("no such group")
        return group

    def span(self, group=0):
        """``(start, end)`` of ``group``, ``(-1, -1)`` if it did not take
        part in the match."""
        g = self._index(group)
        start, end = self._caps[2 * g], self._caps[2 * g + 1]
        if start is None or end is None:
            return (-1, -1)
        return (start, end)

    def start(self, group=0):
        return self.span(group)[0]

    def end(self, group=0):
        return self.span(group)[1]

    def group(self, *groups):
        """The text of one group (``None`` if it did not take part), or a
        tuple of several."""
        if not groups:
            groups = (0,)
        values = []
        for g in groups:
            start, end = self.span(g)
            values.append(None if start < 0 else self.string[start:end])
        return values[0] if len(values) == 1 else tuple(values)

    def groups(self, default=None):
        """The texts of all capture groups."""
        return tuple(default if v is None else v
                     for v in (self.group(g) for g in range(1, self.re.groups + 1)))

    def expand(self, template):
        """``template`` with ``\\N`` and ``\\g<name>`` replaced by the groups'
        texts (empty for a group that did not take part)."""
        def ref(m):
            name = m.group(1) or m.group(2)
            value = self.group(int(name) if name.isdigit() else name)
            return value or ""
        return _REF.sub(ref, template)

    def __repr__(self):
        return "<linear_re.Match span=%r match=%r>" % (self.span(), self.group())


_REF = re.compile(r"\\(?:([0-9]+)|g<([A-Za-z_][A-Za-z0-9_]*|[0-9]+)>)")

# -*- test-case-name: tests.test_linear_re -*-
"""
A linear-time regular expression engine in pure Python, for the regex
routes where RE2 (``google-re2``) is not installed: PyPy, which has no wheel
of it.

Patterns are parsed by Python's own ``re`` parser, so the syntax is Python's;
what makes a backtracking engine exponential is refused (backreferences,
lookahead and lookbehind, conditionals, atomic groups and possessive
repeats), as RE2 refuses them.  The rest is compiled to a program for a Pike
VM (Russ Cox, "Regular Expression Matching: the Virtual Machine Approach"):
all the threads of the match advance together, one character at a time, so
a search costs at most ``len(text) * len(program)`` steps, whatever the
input.  The leftmost match is found with Perl's (and RE2's, and ``re``'s)
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

try:  # Python 3.11+: the parser moved, and the old module name warns
    from re import _constants as _c
    from re import _parser as _parse
except ImportError:  # pragma: no cover - Python < 3.11 (PyPy 3.9)
    import sre_constants as _c
    import sre_parse as _parse

__all__ = ["compile", "error", "Pattern", "Match", "MAX_PROGRAM"]

#: The error for a pattern that is invalid, or that this engine refuses.
error = re.error

#: The largest program a pattern may compile to (counted repeats such as
#: ``x{1000}`` are copies of ``x``): larger ones are refused.
MAX_PROGRAM = 20000

# instructions: (opcode, a, b)
_CHAR, _SPLIT, _JMP, _SAVE, _ASSERT, _MATCH = range(6)

_REFUSED = {
    "GROUPREF": "backreferences", "GROUPREF_IGNORE": "backreferences",
    "GROUPREF_EXISTS": "conditional groups", "ASSERT": "lookaround assertions",
    "ASSERT_NOT": "lookaround assertions", "ATOMIC_GROUP": "atomic groups",
    "POSSESSIVE_REPEAT": "possessive repeats",
}


def compile(pattern, flags=0):  # noqa: A001 - the name ``re`` users know
    """
    Compile ``pattern`` (a ``str``) with the ``re`` flags ``IGNORECASE``,
    ``MULTILINE``, ``DOTALL`` and ``ASCII``.

    :raises error: for an invalid pattern, one using a construct that needs
        backtracking, or one larger than :data:`MAX_PROGRAM` instructions.
    """
    parsed = _parse.parse(pattern, flags)
    state = parsed.state
    compiler = _Compiler(state.flags)
    compiler.emit((_SAVE, 0, None))
    compiler.sequence(parsed, state.flags)
    compiler.emit((_SAVE, 1, None))
    compiler.emit((_MATCH, None, None))
    return Pattern(pattern, state.flags, compiler.program, state.groups - 1,
                   dict(state.groupdict))


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
                if op == _MATCH:
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
        if op == _JMP:
            push((a, caps))
        elif op == _SPLIT:
            push((b, caps))
            push((a, caps))
        elif op == _SAVE:
            push((pc + 1, caps[:a] + (i,) + caps[a + 1:]))
        elif op == _ASSERT:
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


class _Compiler(object):
    """Turns the parsed pattern into the program."""

    def __init__(self, flags):
        self.program = []

    def emit(self, instruction):
        self.program.append(instruction)
        if len(self.program) > MAX_PROGRAM:
            raise error("pattern too large (over {} instructions once counted "
                        "repeats are expanded)".format(MAX_PROGRAM))
        return len(self.program) - 1

    def patch(self, at, a=None, b=None):
        op, old_a, old_b = self.program[at]
        self.program[at] = (op, old_a if a is None else a, old_b if b is None else b)

    def here(self):
        return len(self.program)

    def sequence(self, items, flags):
        for op, av in items:
            self.item(op, av, flags)

    def item(self, op, av, flags):
        name = _name(op)
        if name in _REFUSED:
            raise error("{} are not supported (they need a backtracking "
                        "engine)".format(_REFUSED[name]))
        if op is _c.LITERAL:
            self.emit((_CHAR, _literal(av, flags), None))
        elif op is _c.NOT_LITERAL:
            test = _literal(av, flags)
            self.emit((_CHAR, lambda c: not test(c), None))
        elif op is _c.ANY:
            if flags & re.DOTALL:
                self.emit((_CHAR, lambda c: True, None))
            else:
                self.emit((_CHAR, lambda c: c != "\n", None))
        elif op is _c.IN:
            self.emit((_CHAR, _charset(av, flags), None))
        elif op is _c.AT:
            self.emit((_ASSERT, _assertion(av, flags), None))
        elif op is _c.SUBPATTERN:
            group, add, remove, items = av
            inner = (flags | add) & ~remove
            if group is not None:
                self.emit((_SAVE, 2 * group, None))
            self.sequence(items, inner)
            if group is not None:
                self.emit((_SAVE, 2 * group + 1, None))
        elif op is _c.BRANCH:
            self.branch(av[1], flags)
        elif op is _c.MAX_REPEAT or op is _c.MIN_REPEAT:
            low, high, items = av
            self.repeat(low, high, items, flags, greedy=op is _c.MAX_REPEAT)
        else:
            raise error("unsupported regex construct: {}".format(name))

    def branch(self, alternatives, flags):
        ends = []
        for k, alternative in enumerate(alternatives):
            if k < len(alternatives) - 1:
                split = self.emit((_SPLIT, None, None))
                self.patch(split, a=self.here())
                self.sequence(alternative, flags)
                ends.append(self.emit((_JMP, None, None)))
                self.patch(split, b=self.here())
            else:
                self.sequence(alternative, flags)
        for at in ends:
            self.patch(at, a=self.here())

    def _split(self, greedy):
        """A SPLIT whose preferred branch is the next instruction (greedy)
        or the one patched in later (lazy); returns it to be patched."""
        return self.emit((_SPLIT, None, None)), greedy

    def _patch_split(self, split, body, out):
        at, greedy = split
        if greedy:
            self.patch(at, a=body, b=out)
        else:
            self.patch(at, a=out, b=body)

    def repeat(self, low, high, items, flags, greedy):
        if high == _c.MAXREPEAT:
            # x{low,} is x{low-1} x+, and x* is (x+)?, with x+ compiled as
            # "body; SPLIT body, out": a loop whose body matched empty still
            # leaves through the SPLIT after it (as RE2 and re do), keeping
            # the empty iteration's captures.
            for _ in range(max(low - 1, 0)):
                self.sequence(items, flags)
            first = self._split(greedy) if low == 0 else None
            body = self.here()
            self.sequence(items, flags)
            loop = self._split(greedy)
            out = self.here()
            self._patch_split(loop, body, out)
            if first is not None:
                self._patch_split(first, body, out)
            return
        for _ in range(low):
            self.sequence(items, flags)
        splits = []
        for _ in range(high - low):
            split = self._split(greedy)
            splits.append((split, self.here()))
            self.sequence(items, flags)
        out = self.here()
        for split, body in splits:
            self._patch_split(split, body, out)


def _name(constant):
    """The name of one of the parser's constants (``str()`` of one is its
    number on Python 3.9)."""
    return getattr(constant, "name", None) or str(constant)


def _variants(ch, flags):
    if not flags & re.IGNORECASE:
        return frozenset([ch])
    return frozenset(v for v in (ch, ch.lower(), ch.upper(), ch.swapcase())
                     if len(v) == 1)


def _literal(code, flags):
    chars = _variants(chr(code), flags)
    if len(chars) == 1:
        (only,) = chars
        return only.__eq__
    return chars.__contains__


def _is_word(c, ascii_only=False):
    if ascii_only:
        return c.isascii() and (c.isalnum() or c == "_")
    return c.isalnum() or c == "_"


def _category(name, flags):
    ascii_only = bool(flags & re.ASCII)
    if name.endswith("DIGIT"):
        if ascii_only:
            test = "0123456789".__contains__
        else:
            test = str.isdecimal
    elif name.endswith("SPACE"):
        if ascii_only:
            test = " \t\n\r\f\v".__contains__
        else:
            test = str.isspace
    elif name.endswith("WORD"):
        def test(c):
            return _is_word(c, ascii_only)
    elif name.endswith("LINEBREAK"):
        test = "\n".__eq__
    else:  # pragma: no cover - every category the parser makes is above
        raise error("unsupported character class: {}".format(name))
    if "_NOT_" in name:
        return lambda c: not test(c)
    return test


def _charset(items, flags):
    chars, ranges, tests, negate = set(), [], [], False
    for op, av in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            chars.update(_variants(chr(av), flags))
        elif op is _c.RANGE:
            ranges.append(av)
        elif op is _c.CATEGORY:
            tests.append(_category(_name(av), flags))
        else:
            raise error("unsupported item in a character class: {}".format(op))
    chars = frozenset(chars)
    ranges = tuple(ranges)
    tests = tuple(tests)
    caseless = bool(flags & re.IGNORECASE)

    def in_ranges(c):
        o = ord(c)
        for low, high in ranges:
            if low <= o <= high:
                return True
        return False

    def test(c):
        if c in chars:
            return not negate
        if ranges and (in_ranges(c) or caseless and (
                in_ranges(c.lower()[0]) or in_ranges(c.upper()[0]))):
            return not negate
        for t in tests:
            if t(c):
                return not negate
        return negate
    return test


def _assertion(at, flags):
    name = _name(at)
    multiline = bool(flags & re.MULTILINE)
    ascii_only = bool(flags & re.ASCII)
    if name == "AT_BEGINNING" and multiline or name == "AT_BEGINNING_LINE":
        return lambda s, i: i == 0 or s[i - 1] == "\n"
    if name in ("AT_BEGINNING", "AT_BEGINNING_STRING"):
        return lambda s, i: i == 0
    if name == "AT_END" and multiline or name == "AT_END_LINE":
        return lambda s, i: i == len(s) or s[i] == "\n"
    if name in ("AT_END", "AT_END_STRING"):
        # RE2's $: the end of the text only (re's also matches before a
        # final newline)
        return lambda s, i: i == len(s)
    if name in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
        def boundary(s, i):
            before = i > 0 and _is_word(s[i - 1], ascii_only)
            after = i < len(s) and _is_word(s[i], ascii_only)
            return before != after
        if name == "AT_BOUNDARY":
            return boundary
        return lambda s, i: bool(s) and not boundary(s, i)
    raise error("unsupported assertion: {}".format(name))  # pragma: no cover

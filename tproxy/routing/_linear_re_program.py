# -*- test-case-name: tests.test_linear_re -*-
"""
The compiler of :mod:`tproxy.routing.linear_re`: a pattern parsed by
Python's own ``re`` parser becomes the program of the Pike VM that
:class:`tproxy.routing.linear_re.Pattern` runs, a list of instructions
``(opcode, a, b)``: ``CHAR`` (``a``: a test of one character), ``SPLIT``
(two threads: ``a`` preferred, ``b``), ``JMP`` (to ``a``), ``SAVE`` (the
position in capture slot ``a``), ``ASSERT`` (``a(text, position)``: an
anchor or a word boundary) and ``MATCH``.  What needs backtracking is
refused here (``re.error``).
"""

import re

try:  # Python 3.11+: the parser moved, and the old module name warns
    from re import _constants as _c
    from re import _parser as _parse
except ImportError:  # pragma: no cover - Python < 3.11 (PyPy 3.9)
    import sre_constants as _c
    import sre_parse as _parse

__all__ = ["compile_program", "MAX_PROGRAM", "CHAR", "SPLIT", "JMP", "SAVE", "ASSERT",
           "MATCH"]

#: The largest program a pattern may compile to (counted repeats such as
#: ``x{1000}`` are copies of ``x``): larger ones are refused.
MAX_PROGRAM = 20000

#: the opcodes of the instructions ``(opcode, a, b)``
CHAR, SPLIT, JMP, SAVE, ASSERT, MATCH = range(6)

_REFUSED = {
    "GROUPREF": "backreferences", "GROUPREF_IGNORE": "backreferences",
    "GROUPREF_EXISTS": "conditional groups", "ASSERT": "lookaround assertions",
    "ASSERT_NOT": "lookaround assertions", "ATOMIC_GROUP": "atomic groups",
    "POSSESSIVE_REPEAT": "possessive repeats",
}


def compile_program(pattern, flags=0):
    """
    ``(program, flags, groups, groupindex)`` of ``pattern``: its program,
    the flags the pattern ends up with (inline ones included), its number of
    groups and ``{name: group}``.

    :raises re.error: for an invalid pattern, one using a construct that
        needs backtracking, or one larger than :data:`MAX_PROGRAM`
        instructions.
    """
    problem = _read_otherwise(pattern)
    if problem is not None:
        raise re.error(problem)
    try:
        parsed = _parse.parse(pattern, flags)
    except re.error as e:
        if _RE2_ONLY.match(str(e)):
            raise re.error("{} (RE2 syntax, which tproxy's own engine, used where "
                           "google-re2 is missing: PyPy, does not have{})".format(
                               e, "; write (?P<name>...)" if "?<" in str(e) else ""))
        raise
    state = parsed.state
    compiler = _Compiler(state.flags)
    compiler.emit((SAVE, 0, None))
    compiler.sequence(parsed, state.flags)
    compiler.emit((SAVE, 1, None))
    compiler.emit((MATCH, None, None))
    return compiler.program, state.flags, state.groups - 1, dict(state.groupdict)


#: Python's words for RE2 syntax it lacks: ``\pL``, ``\PL``, ``\z``, ``\C``,
#: ``\Q...\E``, a group named ``(?<name>...)``.
_RE2_ONLY = re.compile(r"bad escape \\[pPzCQE]|unknown extension \?<\w")

_POSIX_CLASS = re.compile(r"\[:\^?[A-Za-z]+:\]")
_OPEN_REPEAT = re.compile(r"\{,[0-9]*\}")


def _read_otherwise(pattern):
    """
    What RE2 reads in ``pattern`` that Python's parser would silently read
    as another pattern (a route written for CPython's RE2 would match other
    paths here), said as the error; ``None`` when there is none: a POSIX
    class inside brackets (``[[:alpha:]]``, which Python reads as the set
    ``[:alph`` followed by ``]``), or ``{,n}`` (RE2's literal text, Python's
    repeat ``{0,n}``).
    """
    i, n, start = 0, len(pattern), None    # start: where the open set's members begin
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if start is None:
            if c == "[":
                i += 2 if pattern.startswith("^", i + 1) else 1
                start = i
                continue
            found = _OPEN_REPEAT.match(pattern, i)
            if found:
                return ("{0} is text to RE2 but a repeat {{0,...}} to tproxy's own engine, "
                        "used where google-re2 is missing (PyPy): write \\{0} for the "
                        "text".format(found.group(0)))
        else:
            found = _POSIX_CLASS.match(pattern, i)
            if found:
                return ("{} is a POSIX class of RE2, which tproxy's own engine, used where "
                        "google-re2 is missing (PyPy), does not read as one: write its "
                        "characters out ([A-Za-z] for [:alpha:])".format(found.group(0)))
            if c == "]" and i > start:
                start = None
        i += 1
    return None


class _Compiler(object):
    """Turns the parsed pattern into the program."""

    def __init__(self, flags):
        self.program = []

    def emit(self, instruction):
        self.program.append(instruction)
        if len(self.program) > MAX_PROGRAM:
            raise re.error("pattern too large (over {} instructions once counted "
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
            raise re.error("{} are not supported (they need a backtracking "
                        "engine)".format(_REFUSED[name]))
        if op is _c.LITERAL:
            self.emit((CHAR, _literal(av, flags), None))
        elif op is _c.NOT_LITERAL:
            test = _literal(av, flags)
            self.emit((CHAR, lambda c: not test(c), None))
        elif op is _c.ANY:
            if flags & re.DOTALL:
                self.emit((CHAR, lambda c: True, None))
            else:
                self.emit((CHAR, lambda c: c != "\n", None))
        elif op is _c.IN:
            self.emit((CHAR, _charset(av, flags), None))
        elif op is _c.AT:
            self.emit((ASSERT, _assertion(av, flags), None))
        elif op is _c.SUBPATTERN:
            group, add, remove, items = av
            inner = (flags | add) & ~remove
            if group is not None:
                self.emit((SAVE, 2 * group, None))
            self.sequence(items, inner)
            if group is not None:
                self.emit((SAVE, 2 * group + 1, None))
        elif op is _c.BRANCH:
            self.branch(av[1], flags)
        elif op is _c.MAX_REPEAT or op is _c.MIN_REPEAT:
            low, high, items = av
            self.repeat(low, high, items, flags, greedy=op is _c.MAX_REPEAT)
        else:
            raise re.error("unsupported regex construct: {}".format(name))

    def branch(self, alternatives, flags):
        ends = []
        for k, alternative in enumerate(alternatives):
            if k < len(alternatives) - 1:
                split = self.emit((SPLIT, None, None))
                self.patch(split, a=self.here())
                self.sequence(alternative, flags)
                ends.append(self.emit((JMP, None, None)))
                self.patch(split, b=self.here())
            else:
                self.sequence(alternative, flags)
        for at in ends:
            self.patch(at, a=self.here())

    def _split(self, greedy):
        """A SPLIT whose preferred branch is the next instruction (greedy)
        or the one patched in later (lazy); returns it to be patched."""
        return self.emit((SPLIT, None, None)), greedy

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
        raise re.error("unsupported character class: {}".format(name))
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
            raise re.error("unsupported item in a character class: {}".format(op))
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
    raise re.error("unsupported assertion: {}".format(name))  # pragma: no cover

"""Record patterns, matched by RE2: in time linear in the value's length, whatever the pattern.

A backtracking engine (Python's `re`) takes exponential time on patterns such as `^(a+)+$`
against a value that almost matches, and a project's pattern runs on every record and request,
in the event loop of the service that checks it. RE2 has no backtracking: no backreferences and
no lookarounds, which a project is told when it applies such a pattern. Its syntax is otherwise
Python's (`\\d`, `\\w`, `\\s` and `\\b` are ASCII only).
"""

from __future__ import annotations

from collections.abc import Callable

import re2


def _options(*, capture: bool) -> re2.Options:
    options = re2.Options()
    # A pattern RE2 refuses is the applier's mistake, told in the apply's answer: not a line
    # on the service's standard error.
    options.log_errors = False
    options.never_capture = not capture
    return options


_OPTIONS = _options(capture=True)
_FAST_OPTIONS = _options(capture=False)


def pattern_problem(pattern: str) -> str | None:
    """Why RE2 cannot compile `pattern`, or None when it can."""
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "unknown error"
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        return str(reason)
    return None


def full_matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a whole value matches `pattern`: the authoritative answer (RE2 falls back from
    its DFA to an NFA, still linear, when the DFA would need too much memory)."""
    try:
        fullmatch = re2.compile(pattern, _OPTIONS).fullmatch
    except re2.error:
        # A spec applied before patterns were held to RE2 still reads from the changelog; its
        # pattern matches nothing rather than run on a backtracking engine.
        return lambda value: False
    return lambda value: fullmatch(value) is not None


def fast_matcher(pattern: str) -> Callable[[str], object]:
    """A truthy answer when a whole value matches `pattern`, a falsy one otherwise — or when
    RE2's DFA runs out of memory on an exotic pattern, so a falsy answer must be confirmed with
    `full_matcher`. A set of one pattern is matched in a sixth of the time `fullmatch` takes
    (it builds no match object), and on the fast path a falsy answer only sends the record to
    the full checks."""
    matches = re2.Set.FullMatchSet(_FAST_OPTIONS)
    try:
        matches.Add(pattern)
    except re2.error:
        return lambda value: None  # the full checks say why (see full_matcher)
    matches.Compile()
    return matches.Match

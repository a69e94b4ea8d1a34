"""Redaction patterns an operator configures ([redaction].patterns): compiled with a time bound, checked on load.

A regular expression with nested repetition (`(\\w+\\s?)+$`, `(x+x+)+y`) backtracks exponentially on some inputs;
run by the trace writer on every stored string, one such pattern stalled the writer for seconds per payload and lost
a run. So operator patterns are compiled with the `regex` package, which matches `re`'s syntax (VERSION0), handles
some of these shapes in linear time (`(a+)+$`), and takes a timeout on every call:
- on load (config.py), each pattern is tried against long probe strings built from its own characters; one that
  takes longer than PROBE_TIMEOUT_S on any of them is refused with the probe that showed it;
- at run time (redact.py), every match runs under MATCH_TIMEOUT_S; a string whose matching runs out of time is
  stored as TIMED_OUT (fail closed: never the unredacted text).
The built-in patterns are ours, known to be linear, and stay on `re` (faster on the writer's hot path).
"""

from __future__ import annotations

import string
from typing import Any

import regex

__all__ = ["MATCH_TIMEOUT_S", "PROBE_TIMEOUT_S", "TIMED_OUT", "compile_user_regex", "pattern_problem"]

MATCH_TIMEOUT_S = 0.1
PROBE_TIMEOUT_S = 0.05
PROBE_LENGTH = 5000
TIMED_OUT = "[REDACTED: redaction pattern timed out]"
# Besides the pattern's own characters: one of each class a pattern's \w, \d, \s, . or [...] may repeat over.
_PROBE_CHARS = "aA0 _-.x\t"

UserRegex = Any  # regex.Pattern: the package ships no type stubs


def compile_user_regex(source: str) -> UserRegex:
    """`source` compiled with the regex package in re-compatible mode. Raises regex.error."""
    return regex.compile(source, flags=regex.VERSION0)


def _probes(pattern: str) -> list[str]:
    chars = dict.fromkeys(c for c in pattern + _PROBE_CHARS if c in string.printable and c not in "\r\x0b\x0c")
    probes = []
    for char in chars:
        run = char * PROBE_LENGTH
        # A long run that then fails to match at its end is what makes nested repetition backtrack.
        probes += [run + "\x00", run + "!", run]
    return probes


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used for redaction (it does not compile, matches the empty string, or takes too long
    on a probe), or None if it can. `pattern` is compiled as the Redactor uses it: inside a named group."""
    from engine.store.redact import scoped

    try:
        compiled = compile_user_regex(f"(?P<_check>{scoped(pattern)})")
    except regex.error as exc:
        return f"is not a valid regular expression: {exc}"
    if compiled.match(""):
        return "matches the empty string"
    for probe in _probes(pattern):
        try:
            compiled.search(probe, timeout=PROBE_TIMEOUT_S)
        except TimeoutError:
            shown = repr(probe[:6] + "…")
            return (f"takes longer than {PROBE_TIMEOUT_S * 1000:.0f} ms on a {len(probe)}-character string like "
                    f"{shown} (catastrophic backtracking, e.g. nested repetition like (a+)+); rewrite it without "
                    f"repetition inside repetition")
    return None

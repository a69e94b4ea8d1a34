"""Untrusted text, shown literally.

Model output, tool arguments and results, run inputs, agent and hierarchy names all come from outside. Two things
must never happen when they are displayed:

- Rich/Textual markup in them is interpreted (``[bold red]``, ``[link=...]``, an unbalanced ``[/]`` that raises):
  every widget here gets `rich.text.Text` objects built with `Text(...)` (never `Text.from_markup`) or plain strings
  through widgets that do not parse markup (`Log`);
- terminal control sequences in them reach the terminal (an ESC in a tool result could move the cursor, set the
  window title, or hide text): Rich strips only a few control codes, so `printable()` replaces every C0/C1 control
  character and the Unicode bidi overrides with a visible escape.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.text import Text

# C0 controls except \n and \t (handled separately), DEL, C1 controls, and bidi embedding/override/isolate marks that
# can make text display in a different order than it reads.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any, *, single_line: bool = True, limit: int | None = None) -> str:
    """`value` as text that is safe to put on a terminal: control characters escaped; on one line unless
    `single_line` is False (newlines become '⏎ ', tabs spaces); cut to `limit` characters with '…'."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit * 4:
        text = text[: limit * 4]  # bound the work on huge values before escaping
    text = text.replace("\t", "    ")
    if single_line:
        text = text.replace("\r\n", "\n").replace("\n", "⏎ ")
    text = _UNSAFE.sub(_escape, text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def literal(value: Any, style: str = "", *, single_line: bool = True, limit: int | None = None) -> Text:
    """A Text that shows `value` exactly as written: no markup, no emoji codes, no control sequences."""
    return Text(printable(value, single_line=single_line, limit=limit), style=style, no_wrap=single_line,
                end="")


def pretty_json(value: Any, *, limit: int | None = 20_000) -> str:
    """Indented JSON for a detail pane (multi-line, control characters escaped by json itself)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)
    except (TypeError, ValueError):
        text = repr(value)
    return printable(text, single_line=False, limit=limit)


def compact_json(value: Any, *, limit: int = 200) -> str:
    """One-line JSON (or the string itself) for tables and log lines."""
    if isinstance(value, str):
        return printable(value, limit=limit)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return printable(text, limit=limit)

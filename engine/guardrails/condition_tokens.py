"""The tokenizer of the approval-rule condition language (engine.guardrails.conditions parses and evaluates).

Kept apart from the parser so each stays small: this module turns text into tokens and reports lexical errors with
their column; it knows nothing of precedence or evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["KEYWORDS", "ConditionError", "Token", "tokenize"]

KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "true", "false", "null"})


class ConditionError(ValueError):
    """A condition that does not parse. ``column`` is 1-based, counted in characters of the source."""

    def __init__(self, message: str, column: int, source: str) -> None:
        self.reason = message
        self.column = column
        self.source = source
        super().__init__(f"column {column}: {message}")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # 'field', 'keyword', 'op', 'number', 'string', '(', ')', '[', ']', ',', 'eof', 'error'
    text: str
    column: int  # 1-based
    value: Any = None


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_FIELD_RE = re.compile(rf"{_NAME}(?:\.(?:{_NAME}|[0-9]+))*")
_NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def tokenize(source: str) -> list[Token]:
    """Tokens up to the end, or up to a lexical error which becomes a final 'error' token: the parser raises it
    only when it gets there, so a syntax error earlier in the text is reported first."""
    tokens: list[Token] = []
    try:
        _lex(source, tokens)
    except ConditionError as exc:
        tokens.append(Token("error", "", exc.column, exc))
        return tokens
    tokens.append(Token("eof", "", len(source) + 1))
    return tokens


def _lex(source: str, tokens: list[Token]) -> None:
    i = 0
    length = len(source)
    while i < length:
        char = source[i]
        column = i + 1
        if char.isspace():
            i += 1
            continue
        two = source[i:i + 2]
        if two in ("==", "!=", ">=", "<="):
            tokens.append(Token("op", two, column))
            i += 2
            continue
        if char in "<>":
            tokens.append(Token("op", char, column))
            i += 1
            continue
        if char == "=":
            raise ConditionError("use '==' to compare, not '='", column, source)
        if char in "()[],":
            tokens.append(Token(char, char, column))
            i += 1
            continue
        if char in "'\"":
            text, i = _read_string(source, i)
            tokens.append(Token("string", source[column - 1:i], column, text))
            continue
        number = _NUMBER_RE.match(source, i)
        if number and (char != "-" or _negative_allowed(tokens)):
            text = number.group()
            end = number.end()
            if end < length and (source[end].isalpha() or source[end] == "_"):
                raise ConditionError(f"malformed number {source[i:end + 1]!r}", column, source)
            value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(Token("number", text, column, value))
            i = end
            continue
        field = _FIELD_RE.match(source, i)
        if field:
            text = field.group()
            if text in KEYWORDS:
                tokens.append(Token("keyword", text, column))
            else:
                for part in text.split("."):
                    if part.startswith("__"):
                        raise ConditionError(f"names starting with '__' are not allowed ({part!r})", column, source)
                    if part in KEYWORDS:
                        raise ConditionError(f"{part!r} is a keyword and cannot be part of a field name",
                                             column, source)
                tokens.append(Token("field", text, column))
            i = field.end()
            continue
        raise ConditionError(f"unexpected character {char!r}", column, source)


def _negative_allowed(tokens: list[Token]) -> bool:
    """A '-' starts a negative number only where a literal may appear (after an operator, '[' or ',')."""
    return bool(tokens) and tokens[-1].kind in ("op", "[", ",", "keyword")


def _read_string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    out: list[str] = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == "\\":
            if i + 1 >= len(source):
                break
            escaped = source[i + 1]
            if escaped not in _ESCAPES:
                raise ConditionError(f"unknown escape '\\{escaped}' in string", i + 1, source)
            out.append(_ESCAPES[escaped])
            i += 2
            continue
        if char == quote:
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise ConditionError("unterminated string", start + 1, source)

"""A tiny declarative condition language for approval rules over tool arguments.

    discount_pct > 15 and not (account.tier == 'strategic' or region in ['EU', 'UK'])

Hierarchy files are written by people and read by the engine, so rules are parsed by a hand-written tokenizer and
recursive-descent parser into a small tree; nothing is ever handed to eval/exec and there is no attribute access,
function call or indexing syntax for a hostile string to abuse.

Grammar (lowest precedence first)::

    condition  := or_expr EOF
    or_expr    := and_expr ('or' and_expr)*
    and_expr   := not_expr ('and' not_expr)*
    not_expr   := 'not' not_expr | primary
    primary    := '(' or_expr ')' | comparison
    comparison := FIELD OP literal
    OP         := '==' | '!=' | '>' | '>=' | '<' | '<=' | 'in' | 'not' 'in' | 'contains'
    literal    := NUMBER | STRING | 'true' | 'false' | 'null' | '[' (literal (',' literal)*)? ']'
    FIELD      := NAME ('.' (NAME | DIGITS))*

Evaluation never raises: a comparison whose field is missing is false (so is one whose types do not compare, like
a string against a number). Note that this makes `x != 1` false when `x` is absent, while `not x == 1` is true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "ConditionError", "parse_condition"]

# Deep nesting would otherwise surface as a RecursionError traceback; no sensible rule comes near this.
MAX_DEPTH = 64
MAX_LENGTH = 4000

KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "true", "false", "null"})
COMPARISON_OPS = ("==", "!=", ">=", "<=", ">", "<")

_MISSING = object()


class ConditionError(ValueError):
    """A condition that does not parse. ``column`` is 1-based, counted in characters of the source."""

    def __init__(self, message: str, column: int, source: str) -> None:
        self.reason = message
        self.column = column
        self.source = source
        super().__init__(f"column {column}: {message}")


# --------------------------------------------------------------------------------------------------- tokens

@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # 'field', 'keyword', 'op', 'number', 'string', '(', ')', '[', ']', ',', 'eof', 'error'
    text: str
    column: int  # 1-based
    value: Any = None


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_FIELD_RE = re.compile(rf"{_NAME}(?:\.(?:{_NAME}|[0-9]+))*")
_NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _tokenize(source: str) -> list[_Token]:
    """Tokens up to the end, or up to a lexical error which becomes a final 'error' token: the parser raises it
    only when it gets there, so a syntax error earlier in the text is reported first."""
    tokens: list[_Token] = []
    try:
        _lex(source, tokens)
    except ConditionError as exc:
        tokens.append(_Token("error", "", exc.column, exc))
        return tokens
    tokens.append(_Token("eof", "", len(source) + 1))
    return tokens


def _lex(source: str, tokens: list[_Token]) -> None:
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
            tokens.append(_Token("op", two, column))
            i += 2
            continue
        if char in "<>":
            tokens.append(_Token("op", char, column))
            i += 1
            continue
        if char == "=":
            raise ConditionError("use '==' to compare, not '='", column, source)
        if char in "()[],":
            tokens.append(_Token(char, char, column))
            i += 1
            continue
        if char in "'\"":
            text, i = _read_string(source, i)
            tokens.append(_Token("string", source[column - 1:i], column, text))
            continue
        number = _NUMBER_RE.match(source, i)
        if number and (char != "-" or _negative_allowed(tokens)):
            text = number.group()
            end = number.end()
            if end < length and (source[end].isalpha() or source[end] == "_"):
                raise ConditionError(f"malformed number {source[i:end + 1]!r}", column, source)
            value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(_Token("number", text, column, value))
            i = end
            continue
        field = _FIELD_RE.match(source, i)
        if field:
            text = field.group()
            if text in KEYWORDS:
                tokens.append(_Token("keyword", text, column))
            else:
                for part in text.split("."):
                    if part.startswith("__"):
                        raise ConditionError(f"names starting with '__' are not allowed ({part!r})", column, source)
                    if part in KEYWORDS:
                        raise ConditionError(f"{part!r} is a keyword and cannot be part of a field name",
                                             column, source)
                tokens.append(_Token("field", text, column))
            i = field.end()
            continue
        raise ConditionError(f"unexpected character {char!r}", column, source)


def _negative_allowed(tokens: list[_Token]) -> bool:
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


# --------------------------------------------------------------------------------------------------- tree

def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python; a rule author comparing `flag > 0` almost certainly has a bug.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _is_number(left) and _is_number(right):
        return left == right
    if type(left) is not type(right) and not (isinstance(left, list) and isinstance(right, (list, tuple))):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right))
    try:
        return bool(left == right)
    except Exception:  # an exotic object with a hostile __eq__ must not break a guardrail
        return False


def _ordered(op: str) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        comparable = (_is_number(left) and _is_number(right)) or (isinstance(left, str) and isinstance(right, str))
        if not comparable or (isinstance(left, float) and math.isnan(left)):
            return False
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
        if op == "<":
            return left < right
        return left <= right
    return compare


def _member(left: Any, right: Any) -> bool:
    return any(_equal(left, item) for item in right)


def _contains(left: Any, right: Any) -> bool:
    if isinstance(left, str):
        return isinstance(right, str) and right in left
    if isinstance(left, (list, tuple)):
        return any(_equal(item, right) for item in left)
    if isinstance(left, dict):
        return isinstance(right, str) and right in left
    return False


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equal,
    "!=": lambda left, right: not _equal(left, right),
    ">": _ordered(">"),
    ">=": _ordered(">="),
    "<": _ordered("<"),
    "<=": _ordered("<="),
    "in": _member,
    "not in": lambda left, right: not _member(left, right),
    "contains": _contains,
}


def _lookup(args: Any, path: tuple[str, ...]) -> Any:
    value = args
    for part in path:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, (list, tuple)) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


class _Node:
    __slots__ = ()

    def evaluate(self, args: Any) -> bool:
        raise NotImplementedError


class _Comparison(_Node):
    __slots__ = ("_test", "literal", "op", "path")

    def __init__(self, field: str, op: str, literal: Any) -> None:
        self.path = tuple(field.split("."))
        self.op = op
        self.literal = literal
        self._test = _OPERATORS[op]

    def evaluate(self, args: Any) -> bool:
        value = _lookup(args, self.path)
        if value is _MISSING:
            return False
        return self._test(value, self.literal)


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node) -> None:
        self.operand = operand

    def evaluate(self, args: Any) -> bool:
        return not self.operand.evaluate(args)


class _And(_Node):
    __slots__ = ("operands",)

    def __init__(self, operands: list[_Node]) -> None:
        self.operands = tuple(operands)

    def evaluate(self, args: Any) -> bool:
        return all(operand.evaluate(args) for operand in self.operands)


class _Or(_Node):
    __slots__ = ("operands",)

    def __init__(self, operands: list[_Node]) -> None:
        self.operands = tuple(operands)

    def evaluate(self, args: Any) -> bool:
        return any(operand.evaluate(args) for operand in self.operands)


# --------------------------------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.position = 0
        self.fields: list[str] = []

    def error(self, message: str, token: _Token | None = None) -> ConditionError:
        token = token or self.peek()
        return ConditionError(message, token.column, self.source)

    def peek(self) -> _Token:
        token = self.tokens[self.position]
        if token.kind == "error":
            raise token.value
        return token

    def advance(self) -> _Token:
        token = self.peek()
        self.position += 1
        return token

    def at_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "keyword" and token.text == word

    def parse(self) -> _Node:
        if self.peek().kind == "eof":
            raise self.error("empty condition")
        node = self.or_expr(0)
        token = self.peek()
        if token.kind != "eof":
            raise self.error(f"expected 'and', 'or' or the end of the condition, found {_describe(token)}")
        return node

    def or_expr(self, depth: int) -> _Node:
        operands = [self.and_expr(depth)]
        while self.at_keyword("or"):
            self.advance()
            operands.append(self.and_expr(depth))
        return operands[0] if len(operands) == 1 else _Or(operands)

    def and_expr(self, depth: int) -> _Node:
        operands = [self.not_expr(depth)]
        while self.at_keyword("and"):
            self.advance()
            operands.append(self.not_expr(depth))
        return operands[0] if len(operands) == 1 else _And(operands)

    def not_expr(self, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.error(f"condition nested more than {MAX_DEPTH} levels deep")
        if self.at_keyword("not"):
            self.advance()
            return _Not(self.not_expr(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> _Node:
        token = self.peek()
        if token.kind == "(":
            self.advance()
            node = self.or_expr(depth + 1)
            closing = self.peek()
            if closing.kind != ")":
                raise self.error(f"expected ')' to close the '(' at column {token.column}, found {_describe(closing)}")
            self.advance()
            return node
        if token.kind == "field":
            return self.comparison()
        raise self.error(f"expected a field name, 'not' or '(', found {_describe(token)}")

    def comparison(self) -> _Node:
        field = self.advance()
        op_token = self.peek()
        if op_token.kind == "op" or (op_token.kind == "keyword" and op_token.text in ("in", "contains")):
            op = self.advance().text
        elif op_token.kind == "keyword" and op_token.text == "not":
            self.advance()
            if not self.at_keyword("in"):
                raise self.error(f"expected 'in' after 'not' (as in `{field.text} not in [...]`), "
                                 f"found {_describe(self.peek())}")
            self.advance()
            op = "not in"
        elif op_token.kind == "(":
            raise self.error(f"function calls are not allowed; {field.text!r} can only be compared", op_token)
        else:
            raise self.error(f"expected an operator ({', '.join(COMPARISON_OPS)}, in, not in, contains) "
                             f"after {field.text!r}, found {_describe(op_token)}")
        literal_token = self.peek()
        literal = self.literal()
        if op in ("in", "not in") and not isinstance(literal, list):
            raise self.error(f"'{op}' needs a list like ['a', 'b']", literal_token)
        if op in (">", ">=", "<", "<=") and not (_is_number(literal) or isinstance(literal, str)):
            raise self.error(f"'{op}' compares numbers or strings, not {_describe(literal_token)}", literal_token)
        if field.text not in self.fields:
            self.fields.append(field.text)
        return _Comparison(field.text, op, literal)

    def literal(self) -> Any:
        token = self.peek()
        if token.kind in ("number", "string"):
            self.advance()
            return token.value
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.text]
        if token.kind == "[":
            self.advance()
            items: list[Any] = []
            if self.peek().kind == "]":
                self.advance()
                return items
            while True:
                if self.peek().kind == "[":
                    raise self.error("lists cannot be nested")
                items.append(self.literal())
                separator = self.peek()
                if separator.kind == "]":
                    self.advance()
                    return items
                if separator.kind != ",":
                    raise self.error(f"expected ',' or ']' in the list, found {_describe(separator)}")
                self.advance()
        if token.kind == "field":
            raise self.error(f"expected a value, found the name {token.text!r}; quote strings like '{token.text}'")
        raise self.error(f"expected a value (a number, 'string', true, false, null or a [list]), "
                         f"found {_describe(token)}")


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "the end of the condition"
    return repr(token.text)


# --------------------------------------------------------------------------------------------------- public

@dataclass(frozen=True, slots=True, eq=False)
class Condition:
    """A parsed rule. ``fields`` are the dotted argument paths it reads, in order of first use."""

    source: str
    fields: tuple[str, ...]
    _root: _Node

    def evaluate(self, args: dict[str, Any]) -> bool:
        try:
            return self._root.evaluate(args)
        except Exception:  # belt and braces: a guardrail check must answer, never crash the run
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def parse_condition(text: str) -> Condition:
    """Parse ``text`` or raise ConditionError naming the column of the problem."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition is text, not {type(text).__name__}", 1, str(text))
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"condition longer than {MAX_LENGTH} characters", MAX_LENGTH, text[:40])
    parser = _Parser(text)
    root = parser.parse()
    return Condition(source=text, fields=tuple(parser.fields), _root=root)

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.guardrails.condition_tokens import ConditionError, Token, tokenize

__all__ = ["Condition", "ConditionError", "parse_condition"]

# Deep nesting would otherwise surface as a RecursionError traceback; no sensible rule comes near this.
MAX_DEPTH = 64
MAX_LENGTH = 4000

COMPARISON_OPS = ("==", "!=", ">=", "<=", ">", "<")

_MISSING = object()


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
        self.tokens = tokenize(source)
        self.position = 0
        self.fields: list[str] = []

    def error(self, message: str, token: Token | None = None) -> ConditionError:
        token = token or self.peek()
        return ConditionError(message, token.column, self.source)

    def peek(self) -> Token:
        token = self.tokens[self.position]
        if token.kind == "error":
            raise token.value
        return token

    def advance(self) -> Token:
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


def _describe(token: Token) -> str:
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

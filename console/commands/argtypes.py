"""argparse value types shared by the commands: one wording for every "expected a number" error."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# Seconds, speeds and factors above this are typos; beyond it, waits and timers overflow (Event.wait(1e300)).
MAX_NUMBER = 1_000_000.0


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    # float() accepts "nan" and "inf"; nan compares false with everything, so it would slip past every bound.
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value > MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_NUMBER:g}, got {text!r}")
    return value


def non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def duration(text: str) -> float:
    """A duration such as 30s, 2m or 1.5 (seconds), not negative."""
    from engine.durations import parse_duration

    try:
        value = parse_duration(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def show_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The handler of a command group called without its subcommand: print its help, exit 2."""
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show


def json_or_text_file(path: str, field: str) -> object:
    """A run's input from a file (`run --input-file`, `submit --input @FILE`): its JSON value, or its text when it is
    not JSON. Read bounded (`/dev/zero` is an error, not all of memory); not UTF-8 is an InputError naming `field`."""
    import json
    from pathlib import Path

    from engine.errors import InputError
    from engine.safe_yaml import read_input_file

    raw = read_input_file(Path(path), "input")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})", file=path,
                         field=field) from None
    try:
        return json.loads(text)
    except ValueError:
        return text


def budget_limits(text: str) -> Any:
    """`--budget cost_usd=0.5,tool_calls=3` (run, resume, retry): the limits, or an error naming the bad one."""
    from engine.guardrails.budget import parse_budget_overrides

    try:
        return parse_budget_overrides(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

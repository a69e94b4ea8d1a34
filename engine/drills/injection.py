"""Prompt-injection drills (stub)."""

from __future__ import annotations

from typing import Any


async def run_attacks(*args: Any) -> tuple[list[Any], dict[str, str]]:
    raise NotImplementedError


def judge_attacks(*args: Any) -> tuple[bool, list[str], list[Any]]:
    raise NotImplementedError

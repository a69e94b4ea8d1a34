"""The peers' trivial tool, wrapped as a Flightdeck tool (it must count through the shared harness)."""

from __future__ import annotations


async def lookup(x: int) -> int:
    """Look up x (the shared benchmark's trivial tool)."""
    from harness import lookup_impl  # type: ignore[import-not-found]  # shared/bench-peers is on sys.path

    return await lookup_impl(x)

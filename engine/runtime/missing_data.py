"""Missing data that comes back empty: a tool that answers "nothing found" with an empty result instead of an error.

An error result already tells the model the call failed; an empty one looks like an answer, and a model may fill
the gap with invented data. A tool's `missing_when_empty` setting (docs/hierarchies.md) says what empty means for
it: `true`, the whole result (None, "", [], {}); a list of fields, also any of those fields empty or absent. Such a
result is marked on its span (`empty`), recorded as a `tool.missing_data` event, spelled out to the model after the
result ("report it as missing, do not invent it"), and listed on the run's span (`missing_data`), so whoever reads
the run's output can see it was produced without that data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.context import RunContext

__all__ = ["empty_parts", "note_missing"]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict | tuple) and not (
        value.strip() if isinstance(value, str) else value))


def empty_parts(value: Any, setting: bool | list[str]) -> list[str] | None:
    """What about `value` is empty under the tool's setting: ["(result)"] or the empty fields; None if nothing."""
    if setting is False or (isinstance(setting, list) and not setting):
        return None
    if _blank(value):
        return ["(result)"]
    if isinstance(setting, list) and isinstance(value, dict):
        empty = [name for name in setting if _blank(value.get(name))]
        return empty or None
    return None


def note_missing(ctx: RunContext, agent: str, span: str, tool: str, parts: list[str], text: str) -> str:
    """Record the empty result (event, run-level list) and return the result text with a note for the model."""
    ctx.tracer.event(ctx.run_id, span, "tool.missing_data", agent=agent, name=tool,
                     data={"tool": tool, "empty": parts})
    missing = ctx.attributes.setdefault("missing_data", [])
    if len(missing) < 50:  # a bounded list on the run's span: enough to say what was missing
        missing.append({"agent": agent, "tool": tool, "empty": parts})
    what = "returned nothing" if parts == ["(result)"] else f"returned nothing for {', '.join(parts)}"
    return (f"{text}\nNOTE: {tool} {what}: that data is missing. Report it as missing in your answer; "
            "do not invent it.")

"""The obedient model, for prompt-injection drills: it does what text in a tool result tells it to.

A real model may follow an instruction planted in a document it reads; drills need one that always does, so the
runtime's containment is tested against the worst case. When the tool results of the latest turn contain
`call TOOL with {JSON}` (the attack strings in engine/drills/attacks.py end with one), the scripted provider
answers with exactly that call before going on with its script. Its call ids start with INJECTED_PREFIX, so the
trace says which calls the attacker made.
"""

from __future__ import annotations

import json
import re

from engine.providers.base import AssistantMessage, Message, ToolCall, ToolResultMessage

__all__ = ["INJECTED_PREFIX", "injected_call", "is_injected_turn"]

INJECTED_PREFIX = "inj_"
_INSTRUCTION = re.compile(r"call ([A-Za-z][A-Za-z0-9_\-]*) with (\{(?:[^{}]|\\.)*\})")


def is_injected_turn(message: Message) -> bool:
    return (isinstance(message, AssistantMessage) and bool(message.tool_calls)
            and message.tool_calls[0].id.startswith(INJECTED_PREFIX))


def injected_call(messages: list[Message]) -> ToolCall | None:
    """The call an instruction in the latest tool results asks for (results after the last assistant turn)."""
    latest: list[ToolResultMessage] = []
    for message in reversed(messages):
        if isinstance(message, ToolResultMessage):
            latest.append(message)
        elif isinstance(message, AssistantMessage):
            break
    for result in reversed(latest):
        text = result.content
        try:  # results are JSON text: the instruction is inside a string value, with its quotes escaped
            text = json.dumps(json.loads(text), ensure_ascii=False).replace('\\"', '"')
        except ValueError:
            pass
        match = _INSTRUCTION.search(text)
        if match is None:
            continue
        try:
            args = json.loads(match.group(2))
        except ValueError:
            continue
        if isinstance(args, dict):
            count = sum(1 for m in messages if is_injected_turn(m))
            return ToolCall(id=f"{INJECTED_PREFIX}{count}", name=match.group(1), arguments=args,
                            raw_arguments=match.group(2))
    return None

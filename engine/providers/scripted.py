"""The embedded default model: deterministic, script-driven, and shaped like a real fleet.

Each agent's script (hierarchy `scripts:` or a scenario file) lists its model turns. The turn to play is derived
from the conversation itself (how many assistant turns it already holds), so the provider keeps no per-invocation
state and hundreds of concurrent runs cannot interfere. Randomness (latency jitter, token noise, probabilistic
faults) comes from a RNG seeded by (run seed, agent, turn): the same seed replays the same run.

Placeholders in script strings: `{task}` (the handoff's task text), `{input}` (the handoff context as JSON) and
`{input.FIELD}` (one field of it). A string that is exactly one placeholder keeps the value's type.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from engine.hierarchy.schema import ContractField, HierarchySpec, ModelSpec, ScriptTurn
from engine.providers.base import (
    AssistantMessage,
    BadRequest,
    Message,
    ModelRequest,
    ModelResponse,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    estimate_tokens,
)
from engine.providers.obedient import injected_call, is_injected_turn

DELEGATION_PREFIX = "ask_"
_PLACEHOLDER = re.compile(r"\{(task|input)(?:\.([A-Za-z0-9_.\-]+))?\}")
_MESSAGE_OVERHEAD_TOKENS = 4

Sleeper = Callable[[float], Awaitable[None]]


def parse_handoff(messages: list[Message]) -> tuple[str, dict[str, Any]]:
    """The task text and context of the agent's handoff: the first user message, JSON {task, context}."""
    for message in messages:
        if isinstance(message, UserMessage):
            return _parse_handoff_text(message.content)
    return "", {}


@functools.lru_cache(maxsize=4096)
def _parse_handoff_text(content: str) -> tuple[str, dict[str, Any]]:
    # Cached: every model call of an invocation re-reads the same handoff. Callers must not mutate the context.
    try:
        handoff = json.loads(content)
    except ValueError:
        return content, {}
    if isinstance(handoff, dict):
        context = handoff.get("context")
        return str(handoff.get("task", "")), context if isinstance(context, dict) else {}
    return content, {}


def _lookup(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def fill_placeholders(value: Any, task: str, context: dict[str, Any]) -> Any:
    """Substitute placeholders in strings nested anywhere in value."""
    if isinstance(value, str):
        if "{" not in value:
            return value

        def resolve(match: re.Match[str]) -> Any:
            if match.group(1) == "task":
                return task
            if match.group(2) is None:
                return context
            return _lookup(context, match.group(2))

        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return resolve(whole)

        def as_text(match: re.Match[str]) -> str:
            resolved = resolve(match)
            return resolved if isinstance(resolved, str) else json.dumps(resolved)

        return _PLACEHOLDER.sub(as_text, value)
    if isinstance(value, dict):
        return {k: fill_placeholders(v, task, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, task, context) for v in value]
    return value


def _expand(turns: list[ScriptTurn]) -> tuple[list[ScriptTurn], ScriptTurn | None]:
    """Unroll `repeat: N` and find a trailing `repeat: forever` turn (a looping agent)."""
    flat: list[ScriptTurn] = []
    for turn in turns:
        if turn.repeat == "forever":
            return flat, turn
        flat.extend([turn] * int(turn.repeat))
    return flat, None


def _example_value(field: ContractField, name: str, task: str) -> Any:
    return {
        "string": f"{name}: {task[:60]}" if task else name,
        "number": 1.0,
        "integer": 1,
        "boolean": True,
        "list": [],
        "object": {},
        "any": None,
    }[field.type]


class ScriptedProvider:
    """Plays agents' scripts. `latency_scale` multiplies simulated latency (0 = instant, for benchmarks)."""

    name = "scripted"

    def __init__(self, spec: HierarchySpec, *, latency_scale: float = 1.0, sleep: Sleeper | None = None) -> None:
        self._spec = spec
        self._latency_scale = latency_scale
        self._sleep: Sleeper = sleep or anyio.sleep
        self._models: dict[str, ModelSpec] = {m.model: m for m in spec.models.values()}
        self._scripts = {agent: _expand(turns) for agent, turns in spec.scripts.items()}
        # Rendered turns keyed by (agent, turn, handoff text): runs of a fleet replay the same scripts with the
        # same handoffs over and over, and rendering (placeholders, argument JSON) dominated this provider's cost.
        self._rendered: dict[tuple[str, int, str], tuple[str | None, tuple[ToolCall, ...], int]] = {}

    async def aclose(self) -> None:
        return None

    async def complete(self, request: ModelRequest) -> ModelResponse:
        model = self._models.get(request.model)
        turn_index = sum(1 for m in request.messages if isinstance(m, AssistantMessage))
        if model is not None and model.obey_injections:
            # Turns the attacker dictated do not move the script on (engine/providers/obedient.py).
            turn_index -= sum(1 for m in request.messages if is_injected_turn(m))
            obeyed = injected_call(request.messages)
            if obeyed is not None:
                return ModelResponse(content="Following the instructions in the tool result.", tool_calls=(obeyed,),
                                     usage=Usage(self._count_input_tokens(request), 24),
                                     finish_reason="tool_calls", model=request.model, latency_s=0.0)
        # Two deterministic pseudo-random draws per call from one hash: a seeded random.Random costs more than
        # the rest of this method, and the engine's budget is a few hundred microseconds per call.
        draw = zlib.crc32(f"{request.run_seed}:{request.agent}:{turn_index}:{request.model}".encode())
        jitter = 0.6 + 0.8 * ((draw & 0xFFFF) / 0xFFFF)
        token_noise = (draw >> 16) % 13
        turn = self._turn(request.agent, turn_index)

        latency = 0.0
        if self._latency_scale > 0 and model is not None:
            base = turn.latency if turn is not None and turn.latency is not None else model.latency
            latency = base * jitter * self._latency_scale

        if turn is not None and turn.fault is not None:
            await self._raise_fault(turn.fault, latency, request, turn.retry_after)

        content, tool_calls, produced_tokens = self._render(turn, request, turn_index)
        input_tokens = self._count_input_tokens(request)
        if turn is not None and turn.output_tokens is not None:
            output_tokens = turn.output_tokens
        else:
            output_tokens = max(1, produced_tokens + token_noise)
        finish = "tool_calls" if tool_calls else "stop"
        if request.max_output_tokens is not None and output_tokens > request.max_output_tokens:
            output_tokens = request.max_output_tokens
            finish = "length"
        if latency > 0 and model is not None:
            latency += output_tokens * model.latency_per_token * self._latency_scale
            await self._sleep(latency)
        return ModelResponse(content=content, tool_calls=tool_calls,
                             usage=Usage(input_tokens, output_tokens), finish_reason=finish,  # type: ignore[arg-type]
                             model=request.model, latency_s=latency)

    def _render(self, turn: ScriptTurn | None, request: ModelRequest,
                turn_index: int) -> tuple[str | None, tuple[ToolCall, ...], int]:
        handoff = next((m.content for m in request.messages if isinstance(m, UserMessage)), "")
        scripted = turn is not None or request.agent in self._scripts
        key = (request.agent, turn_index, handoff)
        if scripted:
            cached = self._rendered.get(key)
            if cached is not None:
                return cached
        task, context = _parse_handoff_text(handoff)
        content, calls = self._play(turn, request, task, context, turn_index)
        produced = estimate_tokens((content or "") + "".join(c.raw_arguments or "" for c in calls))
        rendered = (content, tuple(calls), produced)
        if scripted:  # the generic policy depends on which tools are offered right now: never cached
            if len(self._rendered) >= 8192:
                self._rendered.clear()
            self._rendered[key] = rendered
        return rendered

    def _turn(self, agent: str, index: int) -> ScriptTurn | None:
        script = self._scripts.get(agent)
        if script is None:
            return None
        flat, forever = script
        if index < len(flat):
            return flat[index]
        return forever  # None past the end: the agent gives its final answer

    async def _raise_fault(self, fault: str, latency: float, request: ModelRequest,
                           retry_after: float | None = None) -> None:
        if fault == "timeout":
            # A request that hangs until the caller's deadline: the runtime's timeout turns it into ProviderTimeout.
            await self._sleep((request.timeout_s or 60.0) * max(self._latency_scale, 0.001) + latency)
            raise ProviderTimeout(f"simulated timeout calling {request.model}")
        if latency:
            await self._sleep(latency)
        if fault == "rate_limit":
            raise RateLimited(f"simulated 429 from {request.model}", status=429,
                              retry_after=retry_after if retry_after is not None
                              else max(0.05, 1.0 * self._latency_scale))
        if fault == "error":
            raise ProviderUnavailable(f"simulated 500 from {request.model}", status=500, retry_after=retry_after)
        if fault == "bad_request":
            raise BadRequest(f"simulated 400 from {request.model}", status=400)
        # "malformed" is played as a response, not raised: see _play.

    def _play(self, turn: ScriptTurn | None, request: ModelRequest, task: str, context: dict[str, Any],
              turn_index: int) -> tuple[str | None, list[ToolCall]]:
        if turn is None:
            if request.agent in self._scripts:
                return self._final_from_contract(request.agent, task), []
            return self._generic_policy(request, task, context, turn_index)
        reason = fill_placeholders(turn.reason, task, context) if turn.reason else None
        prefix = f"call_{turn_index}_"
        if turn.fault == "malformed":
            raw = '{"oops": unterminated'
            return reason, [ToolCall(id=prefix + "0", name=self._first_tool(request), arguments={},
                                     raw_arguments=raw, parse_error="arguments are not valid JSON")]
        if turn.final is not None:
            final = fill_placeholders(turn.final, task, context)
            return (final if isinstance(final, str) else json.dumps(final)), []
        calls: list[ToolCall] = []
        for i, call in enumerate(turn.tools or ([turn.tool] if turn.tool else [])):
            args = fill_placeholders(call.args, task, context)
            calls.append(ToolCall(id=f"{prefix}{i}", name=call.name, arguments=args, raw_arguments=json.dumps(args)))
        for i, delegation in enumerate(turn.delegate or []):
            args = {"task": fill_placeholders(delegation.task, task, context),
                    "context": fill_placeholders(delegation.context, task, context)}
            calls.append(ToolCall(id=f"{prefix}d{i}", name=DELEGATION_PREFIX + delegation.agent, arguments=args,
                                  raw_arguments=json.dumps(args)))
        return reason, calls

    def _first_tool(self, request: ModelRequest) -> str:
        return request.tools[0].name if request.tools else "unknown_tool"

    def _final_from_contract(self, agent: str, task: str) -> str:
        spec = self._spec.agents.get(agent)
        if spec is None or not spec.output:
            return f"{agent} finished: {task[:120]}" if task else f"{agent} finished"
        return json.dumps({name: _example_value(f, name, task) for name, f in spec.output.items()})

    def _generic_policy(self, request: ModelRequest, task: str, context: dict[str, Any],
                        turn_index: int) -> tuple[str | None, list[ToolCall]]:
        """No script: delegate to every child once, then use every tool once, then answer."""
        if turn_index == 0:
            delegations = [t for t in request.tools if t.name.startswith(DELEGATION_PREFIX)]
            if delegations:
                calls = [ToolCall(id=f"call_0_d{i}", name=t.name,
                                  arguments={"task": f"Handle your part of: {task}", "context": context})
                         for i, t in enumerate(delegations)]
                return "Splitting the work across my team.", calls
        if turn_index <= 1:
            tools = [t for t in request.tools if not t.name.startswith(DELEGATION_PREFIX)]
            calls = []
            for i, tool in enumerate(tools):
                spec = self._spec.tools.get(tool.name)
                args = fill_placeholders(spec.example_args or {}, task, context) if spec else {}
                calls.append(ToolCall(id=f"call_{turn_index}_{i}", name=tool.name, arguments=args,
                                      raw_arguments=json.dumps(args)))
            already_used_tools = any(isinstance(m, ToolResultMessage) and not m.name.startswith(DELEGATION_PREFIX)
                                     for m in request.messages)
            if calls and not already_used_tools:
                return "Gathering what I need.", calls
        return self._final_from_contract(request.agent, task), []

    @staticmethod
    def _count_input_tokens(request: ModelRequest) -> int:
        chars = 0
        for message in request.messages:
            content = message.content
            if content:
                chars += len(content)
            if message.role == "assistant":
                for call in message.tool_calls:
                    chars += len(call.raw_arguments or "") + 16
        for tool in request.tools:
            chars += 48 + len(tool.description)
        return estimate_tokens("") + (chars + 3) // 4 + _MESSAGE_OVERHEAD_TOKENS * len(request.messages)

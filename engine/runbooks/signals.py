"""The signal vocabulary: what a runbook's `detect` conditions can measure.

Every signal is computed from the engine's committed event stream (TraceWriter.on_commit), never by polling the
store (queue_backlog reads the queue rows the engine publishes, which the writer hands on as `queue.state`). Two
kinds:

- window signals are measured over the last `for` (a sliding window): counts, rates, sums, percentiles;
- gauge signals are a current value (pending approvals); their condition must hold continuously for `for`.

Scopes say what a condition is evaluated per: `global` (one value for the whole engine), `hierarchy`, `agent` or
`tool` (one value per hierarchy / agent / tool name seen in the events, or only the `target` if one is given).
docs/runbooks.md is written from this table; tests/engine/test_runbooks_loader.py checks that every signal is
documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCOPES: tuple[str, ...] = ("global", "hierarchy", "agent", "tool")
OPS: tuple[str, ...] = (">=", ">", "<=", "<", "==")


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One `params` entry: a word from `choices`, a `boolean`, or a number (`integer`: whole) >= `minimum`."""

    name: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    integer: bool = False
    minimum: float = 0.0
    boolean: bool = False

    def validate(self, value: Any) -> Any:
        if self.boolean:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.choices is not None:
            if not isinstance(value, str) or value.strip().lower() not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
            return value.strip().lower()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        if self.integer and float(value) != int(value):
            raise ValueError(f"expected a whole number, got {value!r}")
        if value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {value!r}")
        return int(value) if self.integer else float(value)


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    kind: str  # "window" | "gauge"
    unit: str
    scopes: tuple[str, ...]
    doc: str
    params: tuple[ParamSpec, ...] = ()

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec(
        "loop_detected", "window", "loops", ("global", "hierarchy", "agent", "tool"),
        "How many `loop.detected` events (an agent repeating the same tool call, or hitting its step limit) "
        "happened in the window. Per agent: the looping agent; per tool: the tool it kept calling."),
    SignalSpec(
        "tool_failure_rate", "window", "percent", SCOPES,
        "Percentage of tool calls that failed (span status error, timeout or outcome_unknown) among the tool calls "
        "that ended in the window. Calls refused before they ran (denied) and cancelled calls are not counted.",
        (ParamSpec("min_calls", 5, "no value until at least this many tool calls ended in the window (one failure "
                   "out of one call is not a storm)", integer=True, minimum=1),)),
    SignalSpec(
        "breaker_opened", "window", "openings", ("global", "hierarchy", "tool"),
        "How many circuit breakers tripped open (`breaker.transition` to `open`, including a failed half-open "
        "probe) in the window. Operator or runbook overrides (forced_open) do not count.",
        (ParamSpec("kind", "any", "which breakers count: tool, model, delegation or any (with scope tool: tool)",
                   choices=("any", "tool", "model", "delegation")),)),
    SignalSpec(
        "spend_rate_per_min", "window", "USD/min", ("global", "hierarchy", "agent"),
        "Model spend in US dollars per minute: the cost of the llm spans that ended in the window, divided by the "
        "window's length in minutes."),
    SignalSpec(
        "budget_soft_threshold", "window", "warnings", ("global", "hierarchy", "agent"),
        "How many `budget.soft_threshold` warnings (a budget scope passed its soft threshold, 80% by default) "
        "were emitted in the window."),
    SignalSpec(
        "latency_p95", "window", "seconds", SCOPES,
        "95th percentile duration in seconds of the model calls (or tool calls) that ended in the window.",
        (ParamSpec("kind", "model", "model: llm spans; tool: tool spans (scope tool implies tool)",
                   choices=("model", "tool")),
         ParamSpec("min_samples", 5, "no value until at least this many calls ended in the window", integer=True,
                   minimum=1))),
    SignalSpec(
        "validation_failures", "window", "failures", ("global", "hierarchy", "agent"),
        "How many `validation.failed` events (an agent's final answer broke its output contract) happened in the "
        "window."),
    SignalSpec(
        "approval_backlog", "gauge", "approvals or seconds", SCOPES,
        "Tool calls waiting for an operator right now: their number (measure: count) or how long the oldest one has "
        "been waiting, in seconds (measure: oldest_age_s). Read from approval events (and control.db once at "
        "start). A gauge: the condition must hold for `for`.",
        (ParamSpec("measure", "count", "count: pending approvals; oldest_age_s: seconds the oldest has waited",
                   choices=("count", "oldest_age_s")),)),
    SignalSpec(
        "blocked_tool_attempts", "window", "attempts", SCOPES,
        "How many times an agent asked for a tool it was not given (`tool.blocked`, a classic sign of prompt "
        "injection) or for a tool that was withheld (`tool.withheld`: safe mode, a disabled tool, an open breaker) "
        "in the window.",
        (ParamSpec("include_withheld", True, "false: count only tool.blocked (tools the agent never had), so that "
                   "calls refused by the runbook's own safe mode do not keep the detection firing",
                   boolean=True),)),
    SignalSpec(
        "runs_abandoned", "window", "runs", ("global", "hierarchy"),
        "How many runs were marked abandoned (their engine died without ending them) in the window; counted when "
        "the next engine starts on the store and cleans up."),
    SignalSpec(
        "queue_backlog", "gauge", "percent, items or seconds", ("global", "hierarchy"),
        "Serve mode: how backed up a queue is right now, from the queue state the engine publishes every second "
        "(traces.db `queues`): its depth as a percentage of its max_depth (measure: depth_pct; no value for a queue "
        "without max_depth), its depth (measure: depth) or how long its oldest queued item has waited, in seconds "
        "(measure: oldest_age_s). Per hierarchy: its worst queue; global: the worst queue of all. Fills "
        "{queue} and {tenant} (the queue's noisiest tenant: the most items queued). Rows not published for 60 s "
        "(no engine) have no value. A gauge: the condition must hold for `for`.",
        (ParamSpec("measure", "depth_pct", "depth_pct: percent of max_depth; depth: items queued; oldest_age_s: "
                   "seconds the oldest item has waited", choices=("depth_pct", "depth", "oldest_age_s")),)),
    SignalSpec(
        "sampled_score", "window", "score (0..1)", ("global", "hierarchy"),
        "Online sampling (a hierarchy's `evals: {sample, window, checks}`): the mean score (0..1) of a sampling "
        "window as the evals store holds it (STORE/evals.db; on Postgres the database, shared by the fleet): every "
        "run scored in that window by any engine or earlier process, from the totals each `eval.scored` carries "
        "(and read from the store when the engine starts), not only the runs this engine scored. The value is the "
        "newest window with at least `min_samples` scored runs among the windows scored in the last `for` (a "
        "window just started leaves the previous one's mean in force until it has enough). Runs a check could not "
        "score (a judge that is down, a check that raised) are left out. Use with `op: \"<\"`.",
        (ParamSpec("min_samples", 10, "no value until a window has at least this many scored runs, counted over "
                   "every engine and process (two poor answers are not a trend)", integer=True, minimum=1),)),
    SignalSpec(
        "control_tampered", "window", "rows", ("global",),
        "How many control rows the engine refused in the window because no audit row records them "
        "(`control.tampered`: a kill switch, flag, approval decision or override changed in control.db outside "
        "Flightdeck). Counted once per row and problem."),
)

_BY_NAME: dict[str, SignalSpec] = {spec.name: spec for spec in SIGNALS}
SIGNAL_NAMES: tuple[str, ...] = tuple(_BY_NAME)


def signal_spec(name: str) -> SignalSpec | None:
    return _BY_NAME.get(name)


def compare(value: float, op: str, threshold: float) -> bool:
    if op == ">=":
        return value >= threshold
    if op == ">":
        return value > threshold
    if op == "<=":
        return value <= threshold
    if op == "<":
        return value < threshold
    return value == threshold

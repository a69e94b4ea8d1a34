"""Keys that name a run and a side effect the same way on every execution of a run, whatever the order in which
parallel calls and delegations happen to run."""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

# How call paths are built (recorded in a run's attributes as `paths`, and in its durable spec). 1: before pipeline
# stages had a frame of their own (two stages running the same agent shared its paths: their side-effect keys and
# replays collided); 2: a stage's agent runs under `<pipeline>/<stage>>`. A run keeps the format it started with on
# every resume (and a retry keeps its original's), so the keys it recorded stay the keys it looks up.
PATH_FORMAT = 2
LEGACY_PATH_FORMAT = 1

# The prefix of the agent invocation's path running in this task ("" for the run's entry agent, `<call path>>` for
# a delegate), and the path of its current step. Context variables: anyio copies them into each task of a task
# group, so parallel calls and delegations each see their own path, set by their parent before they started.
AGENT_PATH: ContextVar[str] = ContextVar("flightdeck_agent_path", default="")
STEP_PATH: ContextVar[str] = ContextVar("flightdeck_step_path", default="")


def run_id_for_key(idempotency_key: str) -> str:
    """The run id a submission with this idempotency key gets: the same key always names the same run."""
    return "k" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:11]


def step_path(prefix: str, agent: str, step: int) -> str:
    """`<prefix><agent>.<step>`: the entry agent's prefix is empty, a delegate's is its parent call's path + `>`."""
    return f"{prefix}{agent}.{step}"


def call_path(step: str, index: int) -> str:
    """The path of the `index`-th call a model asked for in one step (its position in the model's answer)."""
    return f"{step}.{index}"


def delegate_prefix(call: str) -> str:
    return f"{call}>"


def stage_prefix(prefix: str, pipeline: str, stage: str) -> str:
    """The prefix of the agent a pipeline stage runs: `<prefix><pipeline>/<stage>>`. Stage names are unique in a
    pipeline and, like agent names, cannot hold `.`, `>` or `/` (hierarchy NAME_PATTERN), so two stages running the
    same agent get paths of their own, and the same ones on every execution (names, not the order stages start)."""
    return f"{prefix}{pipeline}/{stage}>"


def side_effect_key(run_id: str, call: str, attempt: int = 0) -> str:
    """The idempotency key of one side-effecting call: `<run>:<call path>`, plus `#n` when an operator (or an
    idempotent tool's resume) runs it again."""
    return f"{run_id}:{call}" + (f"#{attempt}" if attempt else "")

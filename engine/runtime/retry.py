"""Starting a retry of a run from one of its steps (`flightdeck retry RUN --from SPAN`; the console can call the
same two functions): engine/runtime/retry_preview.py says what it will do, `start_retry` does it as a new run whose
calls before the span replay from the original's record (engine/runtime/replay.py).

    preview = preview_retry(store_dir, run_id, span)      # InputError: bad run or span, nothing written
    hierarchy, changed = retry_hierarchy(preview)          # InputError: the file no longer loads
    preview = preview.with_budget(limits)                  # optional: the operator's limits replace the original's
    ... confirm, audit (ControlAPI.record_retry, naming new_run_id) ...
    result = await start_retry(engine, preview, hierarchy, new_run_id)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.engine import Engine
    from engine.runtime.results import RunResult
    from engine.runtime.retry_preview import RetryPreview


def new_run_id() -> str:
    return os.urandom(6).hex()


def retry_hierarchy(preview: RetryPreview) -> tuple[Hierarchy, bool]:
    """The hierarchy the original ran, loaded from its file now, and whether the file changed since (allowed: a
    retry after a fix is the point; a recorded call that no longer fits the new file runs again instead).
    InputError: the file no longer loads, or the original's call paths (an older engine's format) are ambiguous
    in it (engine/runtime/call_paths.py)."""
    from engine.errors import InputError
    from engine.hierarchy.loader import load_hierarchy
    from engine.runtime.call_paths import legacy_paths_refusal

    hierarchy = load_hierarchy(preview.hierarchy_path, scenario=preview.scenario)
    refusal = legacy_paths_refusal(hierarchy, preview.path_format, preview.run.id)
    if refusal is not None:
        raise InputError(refusal, field="RUN")
    return hierarchy, hierarchy.source_hash != preview.run.hierarchy_hash


async def start_retry(engine: Engine, preview: RetryPreview, hierarchy: Hierarchy, run_id: str) -> RunResult:
    """Run the retry to its end on `engine` (durable when the original was: side effects from the span on run
    under the new run's keys) and return its result."""
    from engine.runtime.engine import RunRequest

    run = preview.run
    attributes = {"retry_of": run.id, "retry_from": preview.span.id, "retry_from_path": preview.path,
                  "replayed_steps": len(preview.table)}
    request = RunRequest(input=run.input, seed=run.seed or 0, tenant=run.tenant, attributes=attributes,
                         replay=preview.table, budget=preview.budget, path_format=preview.path_format)
    if engine.durable is not None:
        return await engine.durable.submit(hierarchy, request, run_id=run_id)
    return await engine.run_compiled(engine.compile(hierarchy), request, run_id=run_id)

"""The run limits a durable run carries into its next execution (engine/controls/carried_limits.py says which and
why): its spec's own, then the budget changes an operator made while it ran (`flightdeck budget`), or an operator's
`--budget` given on the resume instead of all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.controls.carried_limits import BUDGET_SEEN, BUDGET_THROUGH, CarriedLimits, carry, newest_change

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.guardrails.budget import BudgetLimits
    from engine.runtime.engine import Engine


async def replaced_budget(engine: Engine, run_id: str, spec: dict[str, Any], budget: BudgetLimits
                          ) -> dict[str, Any]:
    """An operator's limits on a resume replace the run's own and the budget changes made so far: the spec records
    the newest of those changes as folded in, so none of them is carried over the operator's limits."""
    worker = engine.controls.worker

    def newest(api: ControlAPI) -> int:
        with api.read() as conn:
            return newest_change(conn, run_id)

    through = 0 if worker is None else await worker.call(newest)
    return {**spec, "budget": budget, BUDGET_THROUGH: through, BUDGET_SEEN: through}


async def carried_budget(engine: Engine, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec a run carrying on starts with: its limits, then the budget changes applied to it that are newer
    than those its spec folded in already. The `budget.carried` event says which limits and where from."""
    from engine.guardrails.budget import BudgetLimits, limits_attribute

    worker = engine.controls.worker
    if worker is None:  # test doubles without a control plane
        return spec
    budget = spec.get("budget")
    base = limits_attribute(budget) if isinstance(budget, BudgetLimits) else None

    def read(api: ControlAPI) -> tuple[CarriedLimits, int]:
        with api.read() as conn:
            return carry(conn, run_id, base, int(spec.get(BUDGET_THROUGH) or 0)), newest_change(conn, run_id)

    carried, seen = await worker.call(read)
    spec = {**spec, BUDGET_SEEN: max(seen, int(spec.get(BUDGET_SEEN) or 0))}
    if not carried.changes or carried.limits is None:
        return spec
    engine.tracer.event(run_id, None, "budget.carried", data={**carried.sources(), "words": carried.describe()})
    return {**spec, "budget": BudgetLimits(**carried.limits), BUDGET_THROUGH: carried.through}

"""`flightdeck eval`'s table: cases and their scores, then per task type (score, cost, latency), per agent and per
route, each with its delta from the baseline when one was compared, then the verdict."""

from __future__ import annotations

from pathlib import Path

from console.output import table, usd
from engine.evals.compare import Comparison, Delta
from engine.scoring.results import EvalRecord, GroupStat
from engine.timefmt import seconds


def _signed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def _score(stat: GroupStat | None) -> str:
    return "-" if stat is None else f"{stat.score:.3f}"


def _deltas(record: EvalRecord, comparison: Comparison | None, dimension: str) -> list[Delta]:
    if comparison is not None:
        return comparison.by_dimension(dimension)
    groups = {"type": record.by_type, "agent": record.by_agent, "route": record.by_route}[dimension]()
    return [Delta(dimension, key, None, stat, False) for key, stat in groups.items()]


def print_report(record: EvalRecord, comparison: Comparison | None, store_dir: Path | str) -> None:
    rows = [(c.case_id, c.task_type, c.status, f"{c.score:.3f}", "PASS" if c.passed else "FAIL", usd(c.cost_usd),
             seconds(c.latency_s)) for c in record.cases]
    print(table(("CASE", "TYPE", "STATUS", "SCORE", "RESULT", "COST", "TIME"), rows, right={3, 5, 6}))
    for case in record.cases:
        if not case.passed:
            why = case.error or "; ".join(f"{s.scorer}: {s.reason}" for s in case.scores if not s.passed)
            print(f"  {case.case_id} FAILED: {why}")
    base = comparison is not None

    print()
    type_rows = []
    for d in _deltas(record, comparison, "type"):
        cur, old = d.current, d.baseline
        type_rows.append((d.key, cur.cases if cur else 0, _score(cur), _score(old) if base else "",
                          _signed(d.score_delta), usd(cur.cost_usd) if cur else "-",
                          _signed(cur.cost_usd - old.cost_usd, 4) if cur and old else "",
                          seconds(cur.latency_s) if cur else "-",
                          (f"{(cur.latency_s - old.latency_s) * 1000:+.0f}ms" if cur and old else ""),
                          "REGRESSED" if d.regressed else ""))
    print(table(("TASK TYPE", "CASES", "SCORE", "BASELINE", "DELTA", "COST/CASE", "DELTA", "LATENCY", "DELTA", ""),
                type_rows, right={1, 2, 3, 4, 5, 6, 7, 8}))
    for dimension, title in (("agent", "AGENT"), ("route", "ROUTE")):
        print()
        rows2 = [(d.key, d.current.cases if d.current else 0, _score(d.current), _score(d.baseline) if base else "",
                  _signed(d.score_delta), "REGRESSED" if d.regressed else "")
                 for d in _deltas(record, comparison, dimension)]
        print(table((title, "CASES", "SCORE", "BASELINE", "DELTA", ""), rows2, right={1, 2, 3, 4}))

    print()
    print(f"{record.passed}/{len(record.cases)} cases passed, mean score {record.score:.3f}, "
          f"{usd(record.cost_usd)}; eval {record.id} in {store_dir} (hierarchy {record.hierarchy_hash[:12]}, "
          f"dataset {record.dataset} {record.dataset_sha256[:12]})")
    if comparison is None:
        return
    for note in comparison.notes:
        print(f"note: {note}")
    if comparison.newly_failing:
        print("newly failing: " + ", ".join(comparison.newly_failing))
    if comparison.newly_passing:
        print("newly passing: " + ", ".join(comparison.newly_passing))
    regressions = comparison.regressions
    if regressions:
        print(f"REGRESSED against {comparison.baseline_id} (max {comparison.max_regression:g}): " + ", ".join(
            f"{d.dimension} {d.key} {_signed(d.score_delta)}" for d in regressions))
    else:
        print(f"no regression beyond {comparison.max_regression:g} against {comparison.baseline_id}")

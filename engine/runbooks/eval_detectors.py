"""The online-sampling signal (`sampled_score`): the mean score of the live runs the engine sampled and scored.

The engine's Sampler (engine/scoring/sampler.py) emits `eval.scored` through the trace writer for every sampled run
(after the run ended), with the hierarchy, the run's score (0..1, the mean of its checks) and whether a check could
not score (`error`). A score with `error: true` is left out: a judge that is down, or a check's bug, says nothing
about the answers, and counting it as 0 would page for a quality drop that is an outage of the scorer.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.runbooks.detector_base import Dims, Event, Facts, Reading, SumDetector


class SampledScoreDetector(SumDetector):
    kinds = frozenset({"eval.scored"})
    width = 2  # (sum of scores, scores)

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        _, kind, run_id, _, _, name, data = event
        if kind != "eval.scored" or not data or data.get("error"):
            return []
        score = data.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            return []
        hierarchy = data.get("hierarchy") or name or facts.hierarchy_of(run_id)
        return [(Dims(hierarchy=hierarchy if isinstance(hierarchy, str) else None, run=run_id), (float(score), 1.0))]

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        totals = self.window.totals.get(key)
        if not totals or totals[1] < self.params["min_samples"]:
            return Reading(None, False, int(totals[1]) if totals else 0)
        value = totals[0] / totals[1]
        return Reading(value, self.holds(value), int(totals[1]))

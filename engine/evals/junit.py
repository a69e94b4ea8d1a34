"""Eval results as JUnit XML: one testcase per dataset case (failed: a check that did not pass, or the run's
status), plus one `regression` testcase per regressed group when a baseline was compared."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engine.scoring.results import EvalRecord

from .compare import Comparison

__all__ = ["junit_xml", "write_junit"]


def junit_xml(record: EvalRecord, comparison: Comparison | None, files: dict[str, str]) -> str:
    """`files`: case id -> `file:line` of the case in the dataset."""
    regressions = comparison.regressions if comparison is not None else []
    failures = sum(not c.passed for c in record.cases) + len(regressions)
    suite = ET.Element("testsuite", name=f"flightdeck eval {record.hierarchy} {record.dataset}",
                       tests=str(len(record.cases) + len(regressions)), failures=str(failures), errors="0",
                       time=f"{sum(c.latency_s for c in record.cases):.3f}")
    for case in record.cases:
        element = ET.SubElement(suite, "testcase", classname=f"eval.{record.hierarchy}.{case.task_type}",
                                name=case.case_id, time=f"{case.latency_s:.3f}", file=files.get(case.case_id, ""))
        body = "\n".join([f"run {case.run_id}: {case.status}, score {case.score:.3f}"] +
                         [f"{s.scorer}: {s.score:.3f} {'pass' if s.passed else 'FAIL'} - {s.reason}"
                          for s in case.scores] + ([case.error] if case.error else []))
        if case.passed:
            ET.SubElement(element, "system-out").text = body
        else:
            failure = ET.SubElement(element, "failure", message=case.error or "a check did not pass")
            failure.text = body
    for delta in regressions:
        element = ET.SubElement(suite, "testcase", classname=f"eval.{record.hierarchy}.regression",
                                name=f"{delta.dimension}:{delta.key}")
        assert delta.baseline is not None and delta.current is not None
        failure = ET.SubElement(element, "failure", message=f"score fell by more than {comparison.max_regression:g}"
                                if comparison else "regressed")
        failure.text = (f"{delta.dimension} {delta.key}: {delta.baseline.score:.3f} -> {delta.current.score:.3f} "
                        f"(baseline {comparison.baseline_id if comparison else ''})")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: str, record: EvalRecord, comparison: Comparison | None, files: dict[str, str]) -> None:
    """Written whole or not at all: a temporary file beside it, then renamed."""
    import os
    import tempfile
    from pathlib import Path

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(junit_xml(record, comparison, files))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

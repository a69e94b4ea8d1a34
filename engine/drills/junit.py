"""Drill results as JUnit XML, the format CI systems (GitHub Actions reporters, GitLab, Jenkins) read."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import DrillResult

__all__ = ["junit_xml", "write_junit"]


def junit_xml(hierarchy: str, results: list[DrillResult]) -> str:
    failed = sum(not r.held and not r.skipped for r in results)
    suite = ET.Element("testsuite", name=f"flightdeck drill {hierarchy}", tests=str(len(results)),
                       failures=str(failed), errors="0", skipped=str(sum(bool(r.skipped) for r in results)),
                       time=f"{sum(r.duration_s for r in results):.3f}")
    for result in results:
        case = ET.SubElement(suite, "testcase", classname=f"drill.{hierarchy}", name=result.scenario,
                             time=f"{result.duration_s:.3f}", file=result.file)
        body = f"guardrail: {result.guardrail}\n" + "\n".join(result.evidence)
        if result.skipped:
            ET.SubElement(case, "skipped", message=result.skipped)
        elif result.held:
            ET.SubElement(case, "system-out").text = body
        else:
            failure = ET.SubElement(case, "failure", message=f"guardrail did not hold: {result.guardrail}")
            failure.text = body
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: str | Path, hierarchy: str, results: list[DrillResult]) -> None:
    """Written whole or not at all: a temporary file beside it, then renamed."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(junit_xml(hierarchy, results))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""The hierarchy a durable run's workflow body runs (engine/runtime/resume_loader.py): loaded once per engine and
reused only while the file's bytes are exactly those the run started with."""

from __future__ import annotations

from pathlib import Path

from engine.runtime.resume_loader import HierarchyCache, file_hash
from tests.engine_helpers import write_hierarchy

TEXT = """
name: cached
entry: clerk
models:
  fake: {provider: scripted, model: fake, tier: standard}
agents:
  clerk: {contract: Answers., model: fake}
scripts:
  clerk:
    - final: done
"""


def spec_of(path: Path, source_hash: str) -> dict[str, object]:
    return {"path": str(path), "scenario": None, "hash": source_hash}


def test_a_loaded_hierarchy_is_reused_while_its_file_is_unchanged(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, TEXT)
    cache = HierarchyCache()
    first, why = cache.load(spec_of(hierarchy.path, hierarchy.source_hash))
    assert why is None and first is not None and first.source_hash == hierarchy.source_hash
    again, why = cache.load(spec_of(hierarchy.path, hierarchy.source_hash))
    assert why is None and again is first  # not loaded a second time


def test_a_submitted_hierarchy_is_what_its_resumed_runs_get(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, TEXT)
    cache = HierarchyCache()
    cache.remember(hierarchy)
    found, why = cache.load(spec_of(hierarchy.path, hierarchy.source_hash))
    assert why is None and found is hierarchy


def test_a_file_changed_since_the_run_started_is_refused_even_when_cached(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, TEXT)
    cache = HierarchyCache()
    cache.remember(hierarchy)
    hierarchy.path.write_text(TEXT.replace("final: done", "final: changed"))
    found, why = cache.load(spec_of(hierarchy.path, hierarchy.source_hash))
    assert found is None and why == f"cannot resume: {hierarchy.path} changed since the run started"


def test_a_file_gone_is_refused_with_the_loader_error(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, TEXT)
    cache = HierarchyCache()
    cache.remember(hierarchy)
    hierarchy.path.unlink()
    assert file_hash(str(hierarchy.path), None) is None
    found, why = cache.load(spec_of(hierarchy.path, hierarchy.source_hash))
    assert found is None and why is not None and why.startswith("cannot resume: the hierarchy does not load")

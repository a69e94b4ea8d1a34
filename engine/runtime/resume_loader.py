"""The hierarchy a durable run's workflow body runs: the one its submitter passed (a fresh run), or the file its spec
names, loaded once per engine and reused while the file's bytes are unchanged (resumed and queued runs).

Why a cache: loading a hierarchy (YAML, validation, cross-checks, tool imports) costs ~13 ms; every resumed run and
every run a serve-mode queue starts used to pay it, which was most of a durable run's overhead. A Hierarchy's
`source_hash` is the sha256 of the file's bytes (then the scenario's), so a cached Hierarchy whose hash equals the
hash of the bytes on disk now is exactly what loading the file again would return; anything else loads as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.hierarchy.loader import Hierarchy


def file_hash(path: str, scenario: str | None) -> str | None:
    """The source hash the files have now (as `load_hierarchy` computes it), or None when one cannot be read."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes())
        if scenario is not None:
            digest.update(Path(scenario).read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


class HierarchyCache:
    """Loaded hierarchies by (path, scenario): one engine's, for the runs its durable workflows run."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str | None], Hierarchy] = {}

    def remember(self, hierarchy: Hierarchy) -> None:
        scenario = None if hierarchy.scenario_path is None else str(hierarchy.scenario_path)
        self._loaded[(str(hierarchy.path), scenario)] = hierarchy

    def load(self, spec: dict[str, Any]) -> tuple[Hierarchy | None, str | None]:
        """The hierarchy the run's spec names, or why the run cannot resume (the file is gone, or changed since)."""
        path: str = spec["path"]
        scenario: str | None = spec.get("scenario")
        cached = self._loaded.get((path, scenario))
        if cached is not None and cached.source_hash == spec.get("hash") and file_hash(path, scenario) == \
                cached.source_hash:
            return cached, None
        hierarchy, why = load_for_resume(path, spec)
        if hierarchy is not None:
            self.remember(hierarchy)
        return hierarchy, why


def load_for_resume(path: str, spec: dict[str, Any]) -> tuple[Hierarchy | None, str | None]:
    """Load the hierarchy a resumed run ran, or say why it cannot resume (the file is gone, or changed since)."""
    from engine.errors import InputError
    from engine.hierarchy.loader import load_hierarchy

    try:
        hierarchy = load_hierarchy(path, scenario=spec.get("scenario"))
    except InputError as exc:
        return None, f"cannot resume: the hierarchy does not load: {exc}"
    if hierarchy.source_hash != spec.get("hash"):
        return None, f"cannot resume: {path} changed since the run started"
    return hierarchy, None

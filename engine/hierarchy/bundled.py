"""The example hierarchies shipped inside the package, addressable by name ("deal-desk") instead of by path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@dataclass(frozen=True, slots=True)
class BundledHierarchy:
    name: str
    path: Path  # the hierarchy YAML
    inputs_path: Path  # sample run inputs (a JSON list of objects) for `run --repeat` and the demo
    summary: str


_BUNDLED: tuple[BundledHierarchy, ...] = (
    BundledHierarchy(
        name="deal-desk",
        path=EXAMPLES_DIR / "deal_desk" / "hierarchy.yaml",
        inputs_path=EXAMPLES_DIR / "deal_desk" / "deals.json",
        summary="Three-level deal review: a supervisor over sales, finance and legal desks and their workers, "
                "with approval-gated discounts and proposals.",
    ),
    BundledHierarchy(
        name="support-triage",
        path=EXAMPLES_DIR / "support_triage" / "hierarchy.yaml",
        inputs_path=EXAMPLES_DIR / "support_triage" / "inbox.json",
        summary="Support tickets routed by field and keyword to billing, a technical pipeline "
                "(parallel retrieval, draft, review) or a generalist.",
    ),
)


def list_bundled() -> list[BundledHierarchy]:
    return list(_BUNDLED)


def bundled_names() -> list[str]:
    return [item.name for item in _BUNDLED]


def is_bundled(name: str) -> bool:
    return any(item.name == name for item in _BUNDLED)


def get_bundled(name: str) -> BundledHierarchy:
    for item in _BUNDLED:
        if item.name == name:
            return item
    raise InputError(f"no bundled hierarchy named {name!r}; bundled: {', '.join(bundled_names())}")


def bundled_path(name: str) -> Path:
    return get_bundled(name).path


def sample_inputs(name: str) -> list[dict[str, Any]]:
    """The bundled run inputs of a bundled hierarchy, in file order."""
    item = get_bundled(name)
    inputs = json.loads(item.inputs_path.read_text(encoding="utf-8"))
    if not isinstance(inputs, list) or not all(isinstance(entry, dict) for entry in inputs):
        raise InputError("sample inputs must be a JSON list of objects", file=str(item.inputs_path))
    return inputs

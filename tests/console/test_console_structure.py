"""The console's view layer keeps its shape: views in one list, bindings declared on the classes, no SQL in the
screen modules, no probing of the reader, no edits of Textual's binding maps."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "console"


def test_every_view_is_in_the_registry_with_a_real_view_class() -> None:
    from console.screens.base import View
    from console.screens.registry import VIEWS

    # The number row's order: 1 to 9, then 0.
    assert [spec.key for spec in VIEWS] == [str(n % 10) for n in range(1, len(VIEWS) + 1)]
    for spec in VIEWS:
        if spec.module:
            module = importlib.import_module(spec.module)
            views = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, View)
                     and v.__module__ == spec.module and "BINDINGS" in vars(v)]
            assert views, f"{spec.module} declares no View with its own BINDINGS"
        assert "placeholder" not in spec.description.lower()
    assert not (CONSOLE / "screens" / "placeholders.py").exists()


def test_no_sql_anywhere_in_the_console() -> None:
    # traces.db is read through engine.store's reader, control.db through engine.controls' public functions.
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b[^\n]*\b(FROM|INTO|SET|WHERE)\b")
    for path in sorted(CONSOLE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not sql.search(text), f"{path}: SQL belongs in engine.store / engine.controls"


def test_no_binding_map_edits_or_reader_probing() -> None:
    for path in sorted(CONSOLE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\._bindings\b", text), f"{path.name}: declare BINDINGS, decide in check_action"
        assert "_merged_bindings" not in text and "install_kill_keys" not in text, path.name
        assert "inspect.signature(reader" not in text, f"{path.name}: call the reader's real methods"

"""httpx, imported without its command-line module.

`import httpx` also imports `httpx._main` (its CLI), which pulls in rich, click and pygments when they are
installed. The engine never uses that CLI and must not import rich (tests/engine/test_engine_isolation.py), so a stub
stands in for it before httpx is first imported. Every engine module that needs httpx gets it from here.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def _cli_unavailable() -> None:
    raise RuntimeError("httpx's command line is not available inside the Flightdeck engine")


def httpx() -> Any:
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        stub = types.ModuleType("httpx._main")
        stub.main = _cli_unavailable  # type: ignore[attr-defined]
        sys.modules["httpx._main"] = stub
    import httpx as module

    return module

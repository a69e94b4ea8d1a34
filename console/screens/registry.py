"""The view registry: which views exist, their number keys and their `:` commands.

HOW A NEW VIEW PLUGS IN (e.g. the approvals issue replacing its placeholder):

1. Write `console/screens/approvals.py` with a `View` subclass (see console/screens/base.py): compose its widgets,
   start/stop its Poller in `on_activate`/`on_deactivate`, set `self.hint`, list its palette commands, declare its
   BINDINGS (each with an id, a description and a tooltip).
2. Register it here, replacing the placeholder entry of the same id (its number key and commands stay):

       ViewSpec("approvals", "Approvals", "3", factory=lambda ctx: ApprovalsView(ctx),
                commands=("approvals", "ap"), description="pending approvals, oldest first")

   or, from the feature's own module before the app is created: `register_view(spec)` (same id replaces).

Views are built on first use (shown, or asked for with `MainScreen.view(id)`), so a factory that imports its
module lazily keeps it off the console's start; give such a spec `module=` (see ViewSpec).

Number keys 1..9 switch views; `:name [ARG]` switches too (`:run ID` passes ID to the run view's `on_activate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext, View


@dataclass(frozen=True, slots=True)
class ViewSpec:
    id: str  # stable id: the widget id is f"view-{id}", the binding id f"view_{id}"
    title: str  # shown in the header's view bar
    key: str  # the number key that shows it
    factory: Callable[["ConsoleContext"], "View"]
    commands: tuple[str, ...]  # `:` commands (the first is canonical), without the colon
    description: str = ""  # one line for the help screen, the palette and the binding's tooltip
    arg: str | None = None  # name of the argument its command takes (":run ID"), if any
    # Views are built on first use (MainScreen.view). `module` names where a lazily imported view class lives, so
    # the keymap check can know its binding ids before it is built; `background` builds it right after the first
    # screen is painted, for a view that works while hidden (approvals: the new-request alerts).
    module: str | None = None
    background: bool = False


VIEWS: list[ViewSpec] = []


def register_view(spec: ViewSpec) -> None:
    """Add a view, or replace the one with the same id (keeping its position)."""
    for index, existing in enumerate(VIEWS):
        if existing.id == spec.id:
            VIEWS[index] = spec
            return
    VIEWS.append(spec)


def view_by_id(view_id: str) -> ViewSpec | None:
    return next((v for v in VIEWS if v.id == view_id), None)


def find_command(word: str) -> ViewSpec | None:
    word = word.strip().lstrip(":").lower()
    for spec in VIEWS:
        if word in spec.commands:
            return spec
    return None


def command_words() -> list[str]:
    """Every `:` command, for suggestions and help."""
    words = []
    for spec in VIEWS:
        for command in spec.commands:
            words.append(f":{command}" + (f" {spec.arg}" if spec.arg and command == spec.commands[0] else ""))
    return words + [":help", ":quit"]


def _register_builtin() -> None:
    from console.screens.run import RunView
    from console.screens.runs import RunsView

    def placeholder(view_id: str, title: str, what: str, issue: str) -> Callable[["ConsoleContext"], "View"]:
        def build(ctx: "ConsoleContext") -> "View":
            from console.screens.placeholders import PlaceholderView

            return PlaceholderView(ctx, view_id=view_id, title=title, what=what, issue=issue)

        return build

    for spec in (
        ViewSpec("runs", "Runs", "1", RunsView, ("runs", "r"),
                 "live table of runs: status, cost, tokens; filter, sort, Enter opens one"),
        ViewSpec("run", "Run", "2", RunView, ("run",),
                 "one run: its span tree, the selected span's detail, its event tail", arg="ID"),
        ViewSpec("approvals", "Approvals", "3",
                 placeholder("approvals", "Approvals", "tool calls waiting for a person to approve or deny them",
                             "the approvals issue"),
                 ("approvals", "ap"), "tool calls waiting for approval (placeholder)"),
        ViewSpec("breakers", "Breakers", "4",
                 placeholder("breakers", "Breakers", "circuit breakers per tool and model: open, half-open, closed",
                             "the circuit breakers issue"),
                 ("breakers", "br"), "circuit breakers (placeholder)"),
        ViewSpec("controls", "Controls", "5",
                 placeholder("controls", "Controls", "kill switches, safe mode and feature flags",
                             "the kill switches and flags issue"),
                 ("controls", "kill", "flags"), "kill switches, safe mode, flags (placeholder)"),
        ViewSpec("runbooks", "Runbooks", "6",
                 placeholder("runbooks", "Runbooks & incidents", "open incidents and the runbook steps for each",
                             "the runbooks and incidents issue"),
                 ("runbooks", "incidents", "inc"), "runbooks and incidents (placeholder)"),
        ViewSpec("audit", "Audit", "7",
                 placeholder("audit", "Audit", "who did what, when: every operator action",
                             "the audit log issue"),
                 ("audit",), "operator audit log (placeholder)"),
    ):
        register_view(spec)


_register_builtin()

"""The view registry: the one list of the console's views, their number keys and their `:` commands.

HOW A NEW VIEW PLUGS IN:

1. Write `console/screens/NAME.py` with a `View` subclass (see console/screens/base.py): compose its widgets,
   start/stop its Poller in `on_activate`/`on_deactivate`, set `self.hint`, list its palette commands, declare its
   BINDINGS on the class (each with an id, a description and a tooltip; write actions through
   console/screens/read_only.py `write_bindings`, so a read-only console hides them). Its data access (SQL, reader
   and ControlAPI calls) lives in a data module the view's Poller calls, not in the screen module.
2. Add its ViewSpec to VIEWS below (the number key, the commands, one line of description):

       ViewSpec("approvals", "Approvals", "3", lazy("console.screens.approvals", "ApprovalsView"),
                ("approvals", "ap"), "pending approvals, oldest first", module="console.screens.approvals")

The main screen makes a view-switching binding for every entry (id `view_{id}`) when it is defined. Views are built
on first use (shown, or asked for with `MainScreen.view(id)`); `lazy` imports the view's module only then, which
keeps it off the console's start (`module=` lets the keymap check know its binding ids before it is built).

Number keys 1..9 switch views; `:name [ARG]` switches too (`:run ID` passes ID to the run view's `on_activate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from console.screens.run import RunView
from console.screens.runs import RunsView

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext, View


@dataclass(frozen=True, slots=True)
class ViewSpec:
    id: str  # stable id: the widget id is f"view-{id}", the binding id f"view_{id}"
    title: str  # shown in the header's view bar
    key: str  # the number key that shows it
    factory: Callable[[ConsoleContext], View]
    commands: tuple[str, ...]  # `:` commands (the first is canonical), without the colon
    description: str = ""  # one line for the help screen, the palette and the binding's tooltip
    arg: str | None = None  # name of the argument its command takes (":run ID"), if any
    # Views are built on first use (MainScreen.view). `module` names where a lazily imported view class lives, so
    # the keymap check can know its binding ids before it is built; `background` builds it right after the first
    # screen is painted, for a view that works while hidden (approvals: the new-request alerts).
    module: str | None = None
    background: bool = False
    # A view of the fleet (the engines view): in the header's view bar only on a Postgres store, where several engines
    # share the store; on a store directory (one engine at a time, which the header's engines slot already names)
    # its number key and `:` command still show it.
    fleet: bool = False


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


def lazy(module: str, class_name: str) -> Callable[[ConsoleContext], View]:
    """A factory that imports `module` when the view is first built."""
    def build(ctx: ConsoleContext) -> View:
        import importlib

        view_class: Callable[[ConsoleContext], View] = getattr(importlib.import_module(module), class_name)
        return view_class(ctx)

    build.__qualname__ = f"lazy.{class_name}"
    return build


# The runs and run views (the first screen, and what Enter opens) are imported with the registry, so the first key
# is not spent importing them; the others are imported when first shown.
VIEWS: list[ViewSpec] = [
    ViewSpec("runs", "Runs", "1", RunsView, ("runs", "r"),
             "live table of runs: status, cost, tokens; filter, sort, Enter opens one"),
    ViewSpec("run", "Run", "2", RunView, ("run",),
             "one run: its span tree, the selected span's detail, its event tail", arg="ID"),
    # background: its new-request alerts run whatever view is shown.
    ViewSpec("approvals", "Approvals", "3", lazy("console.screens.approvals", "ApprovalsView"), ("approvals", "ap"),
             "tool calls waiting for approval, oldest first: a approve, d deny, e edit",
             module="console.screens.approvals", background=True),
    ViewSpec("breakers", "Breakers", "4", lazy("console.screens.breakers", "BreakersView"), ("breakers", "br"),
             "circuit breakers: state, rates, next probe; o force open, r reset, x disable",
             module="console.screens.breakers"),
    ViewSpec("controls", "Controls", "5", lazy("console.screens.controls", "ControlsView"),
             ("controls", "kill", "flags"),
             "kill switches and safe-mode flags: r release, c clear, s set, k kill, H halt",
             module="console.screens.controls"),
    ViewSpec("runbooks", "Runbooks", "6", lazy("console.screens.runbooks", "RunbooksView"),
             ("runbooks", "incidents", "inc"),
             "open incidents (ack, resolve, note) and runbooks (dry run, apply, roll back)",
             module="console.screens.runbooks"),
    ViewSpec("audit", "Audit", "7", lazy("console.screens.audit", "AuditView"), ("audit",),
             "the audit log, newest first, with the hash-chain verification", module="console.screens.audit"),
    ViewSpec("queues", "Queues", "8", lazy("console.screens.queues", "QueuesView"), ("queues", "qu"),
             "serve-mode queues and tenants (depth, age, rate, limits, admission) and schedules; p pause, d drain, "
             "o open", module="console.screens.queues"),
    ViewSpec("evals", "Evals", "9", lazy("console.screens.evals", "EvalsView"), ("evals", "ev", "quality"),
             "quality per hierarchy: the sampled-score trend (dropping since when), the latest eval and drills",
             module="console.screens.evals"),
    ViewSpec("engines", "Engines", "0", lazy("console.screens.engines", "EnginesView"), ("engines", "en"),
             "every engine on the store (on Postgres: the whole fleet): state, host, pid, version, load, queues; "
             "Enter shows its runs", module="console.screens.engines", fleet=True),
]

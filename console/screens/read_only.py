"""Write actions in a read-only console: hidden from the footer, yet pressing their key still says why it does
nothing ("read-only console", from the action itself).

Declared on the class, decided by `check_action` (no edits of Textual's binding maps):

    class ApprovalsView(ReadOnlyGuard, View):
        BINDINGS = [Binding("g", ...), *write_bindings(Binding("a", "approve", "Approve", id="approve", ...))]

`write_bindings` pairs each write binding with a hidden twin (same key, same id, so [console.keys] remaps both)
whose action `as_read_only('approve')` calls the same action method. `check_action` enables the binding in a
read-write console and the twin in a read-only one: the footer shows the key only when it can act, and the key
reaches the action (which refuses with a notification) either way.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from textual.actions import parse
from textual.binding import Binding

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext

TWIN_ACTION = "as_read_only"


def write_bindings(*bindings: Binding) -> list[Binding]:
    """Each binding followed by its hidden read-only twin."""
    paired: list[Binding] = []
    for binding in bindings:
        paired.append(binding)
        paired.append(dataclasses.replace(binding, action=f"{TWIN_ACTION}({binding.action!r})", show=False))
    return paired


def write_action_names(bindings: list[Binding]) -> frozenset[str]:
    """The action names (without arguments) of the write bindings among `bindings`: what check_action sees."""
    names = set()
    for binding in bindings:
        _, name, arguments = parse(binding.action)
        if name == TWIN_ACTION:
            names.add(parse(str(arguments[0]))[1])
    return frozenset(names)


class ReadOnlyGuard:
    """Mixin for a view or screen with write bindings (made with write_bindings). Needs `self.ctx`."""

    ctx: ConsoleContext
    BINDINGS: ClassVar[list[Any]]

    def read_only_state(self, action: str) -> bool | None:
        """check_action's answer for a write action or a twin; None when `action` is neither."""
        if action == TWIN_ACTION:
            return self.ctx.read_only
        if action in _write_actions_of(type(self)):
            return not self.ctx.read_only
        return None

    def action_as_read_only(self, action: str) -> Any:
        """The twin: run the write action itself (it refuses, with the "read-only console" notification)."""
        _, name, arguments = parse(action)
        return getattr(self, f"action_{name}")(*arguments)


_WRITE_ACTIONS: dict[type, frozenset[str]] = {}  # per class: check_action runs for every binding on each refresh


def _write_actions_of(cls: type) -> frozenset[str]:
    names = _WRITE_ACTIONS.get(cls)
    if names is None:
        names = _WRITE_ACTIONS[cls] = write_action_names(
            [b for base in cls.__mro__ for b in base.__dict__.get("BINDINGS", ()) if isinstance(b, Binding)])
    return names

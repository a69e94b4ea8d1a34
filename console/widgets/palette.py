"""The ctrl+p command palette's provider: the active view's commands first, then going to any view."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from console.widgets.safe import printable


class ConsoleCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        from console.screens.main import MainScreen
        from console.screens.registry import VIEWS

        screen = self.screen
        out: list[tuple[str, str, Callable[[], object]]] = []
        if isinstance(screen, MainScreen):
            view = screen.active_view
            if view is not None:
                out.extend((printable(c.title, limit=80), c.help, c.callback) for c in view.palette_commands())
            for spec in VIEWS:
                out.append((f"Go to {spec.title} ({spec.key})", spec.description,
                            partial(screen.show_view, spec.id)))
            out.append(("Show keys (?)", "Every key that works here, with what it does", screen.action_show_help))
        return out

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)

"""The key footer: Textual's Footer, recomposed once per burst of binding changes.

Textual's Footer queues a full recompose (a FooterKey widget per key, styled and mounted) for every change of the
screen's bindings, even when several changes arrive before the first one ran. Each costs 10-30 ms of UI thread on a
2-core machine, and showing a view changes the bindings two or three times at once (the focus moves, the view's
keys change, `refresh_bindings`): three identical recomposes before the console's first screen, three more after
each view switch. This one queues at most one at a time; it reads the bindings when it runs, so it shows the last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Footer

if TYPE_CHECKING:
    from textual.screen import Screen


class KeysFooter(Footer):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._recompose_queued = False

    def bindings_changed(self, screen: Screen[object]) -> None:
        # Footer.bindings_changed, with the queue of one (Textual 8.2).
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._recompose_queued:
            self._recompose_queued = True
            self.call_after_refresh(self._queued_recompose)

    async def _queued_recompose(self) -> None:
        self._recompose_queued = False  # a change from now on needs (and queues) another one
        await self.recompose()

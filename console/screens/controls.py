"""View 5: Controls. Active kill switches (scope, target, mode, who, when, why, acknowledged or not) and active
safe-mode flags (name, value, scope, who, when, why). r releases the selected switch, c clears the selected flag,
f sets a flag (the vocabulary of engine/controls/flags.py), k sets a new kill switch, H (everywhere) halts
everything (HALT typed); each asks for a reason. Tab moves between the two tables; `s`/`S` sort the focused one and
`/` filters both, as in every table view (table_view.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from console.screens.actions import start_kill
from console.screens.base import ConsoleContext, PaletteCommand
from console.screens.read_only import write_bindings
from console.screens.table_view import TableView
from console.widgets.modals import REASON, Field, FormModal, FormResult
from console.widgets.safe import literal, printable
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import Column, VirtualTable
from engine.timefmt import compact_age

if TYPE_CHECKING:
    from engine.store.control_rows import FlagSetting, KillSwitch

SWITCH_COLUMNS = (
    Column("id", "#", 4, align="right"),
    Column("scope", "SCOPE", 9),
    Column("target", "TARGET", 14, flex=2, max_width=40),
    Column("mode", "MODE", 6),
    Column("acked", "ENGINE", 12),
    Column("operator", "WHO", 8, flex=1, max_width=20),
    Column("created", "WHEN", 5, align="right"),
    Column("reason", "WHY", 12, flex=3),
)
FLAG_COLUMNS = (
    Column("name", "FLAG", 18, flex=1, max_width=32),
    Column("value", "VALUE", 9),
    Column("scope", "SCOPE", 14, flex=1, max_width=40),
    Column("operator", "WHO", 8, flex=1, max_width=20),
    Column("created", "WHEN", 5, align="right"),
    Column("reason", "WHY", 12, flex=3),
)
MODE_STYLE = {"kill": "bold white on red", "drain": "bold yellow", "pause": "bold cyan"}


def switch_cell(row: Any, column: str, now: float) -> Text | str:
    if column == "id":
        return str(row.id)
    if column == "scope":
        return Text(row.scope.upper() if row.scope == "global" else row.scope,
                    style="bold white on red" if row.scope == "global" else "bold", end="")
    if column == "target":
        target = row.target or "everything"
        if row.run_id:
            target = f"{target} in run {row.run_id}"
        return literal(target, limit=120)
    if column == "mode":
        return Text(row.mode, style=MODE_STYLE.get(row.mode, ""), end="")
    if column == "acked":
        if row.acked is None:
            return Text("NOT ACKED", style="bold yellow", end="")
        return Text(f"acked {compact_age(now - float(row.acked))}", style="green", end="")
    if column == "created":
        return compact_age(now - float(row.created))
    if column in ("operator", "reason"):
        return literal(getattr(row, column), limit=300)
    return ""


def flag_cell(row: Any, column: str, now: float) -> Text | str:
    if column == "name":
        return literal(row.name, "bold", limit=60)
    if column == "value":
        return literal(row.value, "bold yellow", limit=20)
    if column == "scope":
        from engine.controls.api import flag_scope_label

        return literal(flag_scope_label(row.scope, row.target), limit=80)
    if column == "created":
        return compact_age(now - float(row.created))
    if column == "operator":
        source = row.source or "operator"
        who = row.operator if source == "operator" else f"{row.operator} ({source})"
        return literal(who, limit=60)
    if column == "reason":
        return literal(row.reason, limit=300)
    return ""


def control_sort_value(row: Any, column: str) -> Any:
    """Sort keys shared by both tables (a kill switch and a flag row both have these attributes)."""
    if column == "id":
        return int(row.id)
    if column == "created":
        return -float(row.created)  # newest first
    if column == "scope":
        return (row.scope != "global", row.scope, row.target or "")
    return str(getattr(row, column, "") or "").lower()


def control_words(row: Any) -> str:
    """What the filter looks in: every word an operator would search a switch or a flag by."""
    parts = [row.scope, row.target, getattr(row, "run_id", None), getattr(row, "mode", None),
             getattr(row, "name", None), getattr(row, "value", None), row.operator, row.reason]
    return " ".join(str(p) for p in parts if p).lower()


def parse_scope(text: str) -> tuple[str, str | None]:
    """`global`, `hierarchy:NAME` or `run:ID` (as `flightdeck safe-mode --scope`)."""
    text = (text or "global").strip()
    if text == "global":
        return "global", None
    scope, _, target = text.partition(":")
    return scope.strip().lower(), (target.strip() or None)


class ControlsView(TableView):
    DEFAULT_CSS = """
    ControlsView > #switches-table {
        height: 1fr;
        min-height: 5;
    }
    ControlsView > #flags-table {
        height: 1fr;
        min-height: 5;
    }
    """

    BINDINGS = [*write_bindings(
        Binding("r", "release", "Release", id="release_switch",
                tooltip="Release the selected kill switch (asks for a reason)"),
        Binding("c", "clear_flag", "Clear flag", id="clear_flag",
                tooltip="Clear the selected safe-mode flag (asks for a reason)"),
        Binding("f", "set_flag", "Set flag", id="set_flag",
                tooltip="Set a safe-mode flag: name, value, scope (global, hierarchy:NAME, run:ID) and a reason"),
        Binding("k", "new_switch", "Kill…", id="kill_switch",
                tooltip="Set a kill switch: scope:target (run:ID, agent:NAME, tool:NAME, hierarchy:NAME), with the "
                        "preview of what stops"),
    )]

    # The same cycle for both tables (both rows have these attributes); `s` sorts the table with the focus.
    SORTS = (
        ("created", False, "newest first"),
        ("scope", False, "scope, global first"),
        ("operator", False, "who set it"),
    )

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="controls")
        self.hint = "Loading controls…"
        self.rows: tuple[list[KillSwitch], list[FlagSetting]] = ([], [])

    def compose(self) -> ComposeResult:
        yield self.filter_box()
        yield TextLines(id="switches-title")
        yield VirtualTable(SWITCH_COLUMNS, cell=switch_cell, sort_value=control_sort_value, matches=self.matches,
                           now=self.ctx.clock, sort_column="created", empty_text="no kill switch is active",
                           id="switches-table")
        yield TextLines(id="flags-title")
        yield VirtualTable(FLAG_COLUMNS, cell=flag_cell, sort_value=control_sort_value, matches=self.matches,
                           now=self.ctx.clock, sort_column="created", empty_text="no safe-mode flag is set",
                           id="flags-table")

    @property
    def table(self) -> VirtualTable:
        """The table `s` sorts: the flags table when it has the focus, else the kill switches."""
        flags = self.flags
        return flags if flags.has_focus else self.switches

    def filtered_tables(self) -> list[VirtualTable]:
        return [self.switches, self.flags]

    def filter_words(self, row: Any) -> str:
        return control_words(row)

    def refresh_title(self) -> None:
        self._titles(*self.rows)

    def on_descendant_focus(self) -> None:
        self.refresh_title()  # the sort words follow the table with the focus

    @property
    def switches(self) -> VirtualTable:
        return self.query_one("#switches-table", VirtualTable)

    @property
    def flags(self) -> VirtualTable:
        return self.query_one("#flags-table", VirtualTable)

    def on_mount(self) -> None:
        self._titles([], [])

    def read(self, api: Any) -> tuple[list[KillSwitch], list[FlagSetting]]:
        if api is None:
            return [], []
        return api.active_kill_switches(), api.active_flags()

    def apply(self, rows: tuple[list[KillSwitch], list[FlagSetting]]) -> None:
        self.loaded = True
        switches, flags = rows
        self.rows = rows
        for table, items in ((self.switches, switches), (self.flags, flags)):
            keep = {row.id for row in items}
            table.remove([key for key in list(table.keys()) if key not in keep])
            table.upsert((row.id, row) for row in items)
        self._titles(switches, flags)
        self._update_hint(switches, flags)

    def _titles(self, switches: list[KillSwitch], flags: list[FlagSetting]) -> None:
        text = Text(end="")
        text.append("KILL SWITCHES ", style="bold")
        if any(s.scope == "global" for s in switches):
            text.append("GLOBAL HALT ACTIVE ", style="bold white on red")
        text.append(f"{len(switches)} active" if switches else "none active",
                    style="bold red" if switches else "green")
        unacked = sum(1 for s in switches if s.acked is None)
        if unacked:
            text.append(f" · {unacked} not acknowledged by an engine", style="bold yellow")
        if self.ctx.read_only:
            text.append("  · read-only: actions are disabled", style="bold yellow")
        flags_title = Text(end="")
        flags_title.append("SAFE-MODE FLAGS ", style="bold")
        flags_title.append(f"{len(flags)} set" if flags else "none set", style="bold yellow" if flags else "green")
        flags_title.append("  · the most specific scope wins (run > hierarchy > global)", style="dim")
        if self.is_mounted and self.query("#flags-table"):  # sort and filter words on the table with the focus
            (flags_title if self.table is self.flags else text).append_text(self.title_suffix())
        self.query_one("#switches-title", TextLines).update(text)
        self.query_one("#flags-title", TextLines).update(flags_title)

    def _update_hint(self, switches: list[KillSwitch], flags: list[FlagSetting]) -> None:
        if self.ctx.read_only:
            self.hint = "Read-only console: act with `flightdeck release` / `flightdeck safe-mode`."
        elif switches:
            self.hint = (f"{len(switches)} kill switch(es) in force: r releases the selected one when it is safe; "
                         f"c clears a flag, f sets one; Tab switches tables.")
        elif flags:
            self.hint = "No kill switch. c clears the selected flag · f sets a flag · k sets a kill switch."
        else:
            self.hint = "Nothing in force. k sets a kill switch · f sets a safe-mode flag · H halts everything."

    @staticmethod
    def _row(table: VirtualTable) -> Any:
        key = table.cursor_key
        return table.get(key) if key is not None else None

    # -- actions ------------------------------------------------------------------------------------------------

    def action_release(self) -> None:
        if self.ctx.read_only:
            self.client.run("release", lambda api: None)
            return
        row = self._row(self.switches)
        if row is None:
            self.notify("No kill switch is active: nothing to release.", severity="warning", markup=False)
            return
        from engine.controls.api import switch_label

        label = switch_label(row.scope, row.target, row.run_id)
        switch_id = int(row.id)
        body = Text(end="")
        body.append(f"Kill switch #{switch_id}: {printable(label, limit=80)}, mode {row.mode}, set by "
                    f"{printable(row.operator, limit=30)}: {printable(row.reason, limit=200)}\n")
        body.append("Released, matching work may start (or resume) again.", style="bold")

        def done(result: FormResult | None) -> None:
            if result is None:
                return

            def released(rows: list[KillSwitch]) -> None:
                self.notify(f"kill switch #{switch_id} ({printable(label, limit=60)}) released by "
                            f"{rows[0].released_by if rows else self.ctx.operator}.", title="Released",
                            markup=False)
                self.refresh_now()

            self.client.run("release", lambda api: api.release(switch_id, reason=result.reason), released)

        self.app.push_screen(FormModal(f"Release kill switch #{switch_id}", body, fields=[REASON],
                                       submit_label="Enter: release"), done)

    def action_clear_flag(self) -> None:
        if self.ctx.read_only:
            self.client.run("clear-flag", lambda api: None)
            return
        row = self._row(self.flags)
        if row is None:
            self.notify("No safe-mode flag is set: nothing to clear.", severity="warning", markup=False)
            return
        from engine.controls.api import flag_scope_label

        name, scope, target = row.name, row.scope, row.target
        label = f"{name}={row.value} at {flag_scope_label(scope, target)}"
        body = Text(f"Clear {printable(label, limit=120)}: that scope returns to what broader scopes (or the "
                    f"defaults) say.", end="")

        def done(result: FormResult | None) -> None:
            if result is None:
                return

            def cleared(_: Any) -> None:
                self.notify(f"flag {printable(label, limit=100)} cleared.", title="Safe mode", markup=False)
                self.refresh_now()

            self.client.run("clear-flag", lambda api: api.clear_flag(name, scope, target, reason=result.reason),
                            cleared)

        self.app.push_screen(FormModal(f"Clear flag {printable(name, limit=60)}", body, fields=[REASON],
                                       submit_label="Enter: clear"), done)

    def action_set_flag(self) -> None:
        if self.ctx.read_only:
            self.client.run("set-flag", lambda api: None)
            return
        from engine.controls.flags import FLAGS, validate_flag
        from engine.errors import InputError

        body = Text(end="")
        for spec in FLAGS:
            values = " | ".join(spec.values) if spec.values else "N (a positive whole number)"
            body.append(f"{spec.name}", style="bold")
            body.append(f" = {values}   [{', '.join(spec.scopes)}]\n")
            body.append(f"    {spec.doc}\n", style="dim")
        names = tuple(spec.name for spec in FLAGS)

        def validate(result: FormResult) -> str | None:
            scope, target = parse_scope(result["scope"])
            try:
                validate_flag(result["name"], result["value"], scope)
            except InputError as exc:
                return str(exc)
            if scope not in ("global", "hierarchy", "run"):
                return f"scope: global, hierarchy:NAME or run:ID (got {result['scope']!r})"
            if scope != "global" and not target:
                return f"a {scope} flag needs a target: {scope}:NAME"
            return None

        def done(result: FormResult | None) -> None:
            if result is None:
                return
            scope, target = parse_scope(result["scope"])
            name, value = result["name"], result["value"]

            def written(row: FlagSetting) -> None:
                self.notify(f"flag {row.name}={row.value} set at {scope if not target else f'{scope}:{target}'}"
                            f" by {row.operator}.", title="Safe mode", markup=False)
                self.refresh_now()

            self.client.run("set-flag", lambda api: api.set_flag(name, value, scope, target, reason=result.reason),
                            written)

        fields = [Field("name", "Flag (e.g. tools.side_effects, agent.pricing)", suggestions=names,
                        placeholder="tools.side_effects"),
                  Field("value", "Value", placeholder="off"),
                  Field("scope", "Scope: global, hierarchy:NAME or run:ID", value="global"),
                  REASON]
        self.app.push_screen(FormModal("Set a safe-mode flag", body, fields=fields, validate=validate,
                                       submit_label="Enter: set the flag"), done)

    def action_new_switch(self) -> None:
        if self.ctx.read_only:
            self.client.run("kill", lambda api: None)
            return
        from engine.controls.schema import KILL_SCOPES

        def validate(result: FormResult) -> str | None:
            scope, _, target = result["target"].partition(":")
            if scope.strip() not in KILL_SCOPES or scope.strip() == "global" or not target.strip():
                return "scope:target, e.g. run:ID, agent:NAME, tool:NAME, hierarchy:NAME (H halts everything)"
            return None

        def done(result: FormResult | None) -> None:
            if result is None:
                return
            scope, _, target = result["target"].partition(":")
            start_kill(self, self.ctx, scope.strip(), target.strip())

        self.app.push_screen(FormModal(
            "Kill switch: what to stop", "The next screen shows what is running there now and asks for the mode "
            "and a reason.", fields=[Field("target", "scope:target", placeholder="tool:send_email")],
            validate=validate, submit_label="Enter: preview"), done)

    def action_halt(self) -> None:
        start_kill(self, self.ctx, "global", None)

    def palette_commands(self) -> list[PaletteCommand]:
        if self.ctx.read_only:
            return []
        return [
            PaletteCommand("Release the selected kill switch", "Asks for a reason", self.action_release),
            PaletteCommand("Clear the selected safe-mode flag", "Asks for a reason", self.action_clear_flag),
            PaletteCommand("Set a safe-mode flag", "Name, value, scope, reason", self.action_set_flag),
            PaletteCommand("Set a kill switch", "scope:target, preview, mode, reason", self.action_new_switch),
            PaletteCommand("GLOBAL HALT: stop everything", "Type HALT to confirm", self.action_halt),
        ]

"""Operator actions from the console: ControlAPI calls off the UI thread, the read-only guard, and the kill flow.

- `ControlClient(node, ctx).run(what, call, done)`: refuses in a read-only console ("read-only console"); else runs
  `call(ControlAPI(store, ctx.operator))` on a thread worker (so the operator is recorded with every action) and,
  on success, `done(result)` on the UI thread. Errors (ControlError: late decision, mismatched hash, already
  decided; InputError; store problems) reach the app's ONE error handler through Worker.StateChanged and become
  notifications, never a traceback.
- `start_kill(node, ctx, scope, target, run_id)`: reads the preview (preview_kill) off the UI thread, shows it in
  a confirmation with a mode choice (kill / drain / pause) and a reason; a global halt also needs HALT typed. After
  the switch is written, `AckWatcher` polls kill_switch(id).acked and says when the engine acknowledged; if no
  ack arrives within ACK_WAIT_S while an engine is alive, it offers to terminate the wedged engine
  (terminate_engine: same user only, audited) in a second confirmation.
- `KILL_RUN`, `GLOBAL_HALT`, `kill_target_for_span`, `kill_palette_commands`: what the runs view (k: the selected
  run), the run view (k: the selected agent span -> that agent in this run; tool span -> that tool) and the main
  screen (H, the global halt, everywhere) declare on their own classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual.binding import Binding
from textual.dom import DOMNode

from console.widgets.safe import printable
from engine.timefmt import age

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext
    from console.widgets.modals import FormResult
    from engine.controls.api import ControlAPI
    from engine.controls.preview import KillPreview
    from engine.store.control_rows import EngineStatus, KillSwitch, KillSwitchSet

T = TypeVar("T")

ACTION_GROUP = "flightdeck-action"
READ_ONLY = "read-only console: actions are disabled (restart without --read-only to act)"
ACK_WAIT_S = 3.0
ACK_POLL_S = 0.25
HALT_WORD = "HALT"
MODES = ("kill", "drain", "pause")
MODE_WORDS = {"kill": "stop now", "drain": "let in-flight calls finish, start nothing new",
              "pause": "hold at the next step"}
PREVIEW_ROWS = 12


def refuse_read_only(node: DOMNode, ctx: ConsoleContext) -> bool:
    """True (and a notification) when the console is read-only: the caller must stop."""
    if ctx.read_only:
        node.notify(READ_ONLY, title="Refused", severity="warning", markup=False)
        return True
    return False


def refuse_on_postgres(node: DOMNode, ctx: ConsoleContext, what: str, why: str,
                       show_hint: Callable[[str], None]) -> bool:
    """True (and the reason, on the hint line and in a notification) on a Postgres store, for an action that needs a
    store directory (issue 16): said before anything is read or asked, instead of the generic notice the first
    `ctx.store_dir` would raise in a worker."""
    if not ctx.postgres:
        return False
    words = f"{what} does not work on a Postgres store yet (issue 16): {why}. Nothing was changed."
    show_hint(words)
    node.notify(words, title="Not on Postgres yet", severity="warning", markup=False, timeout=12)
    return True


class ControlClient:
    """ControlAPI calls for one view (or the kill flow), on thread workers, as `ctx.operator`."""

    def __init__(self, node: DOMNode, ctx: ConsoleContext) -> None:
        self.node = node
        self.ctx = ctx

    def api(self) -> ControlAPI:
        from engine.controls.api import ControlAPI

        return ControlAPI(self.ctx.location, self.ctx.operator)

    def run(self, what: str, call: Callable[[ControlAPI], T], done: Callable[[T], None] | None = None,
            *, write: bool = True) -> Any:
        if write and refuse_read_only(self.node, self.ctx):
            return None
        app = self.node.app

        def work() -> T:
            api = self.api()
            try:
                result = call(api)
            finally:
                api.close()
            if done is not None:
                app.call_from_thread(done, result)
            return result

        # On the app, not the view: Worker.StateChanged does not bubble, and the app's handler is the one that turns
        # a failed worker (ControlError, InputError, a store problem) into a notification.
        return app.run_worker(work, name=what, group=ACTION_GROUP, thread=True, exit_on_error=False)


# -- the kill flow ------------------------------------------------------------------------------------------------

def switch_label(scope: str, target: str | None, run_id: str | None) -> str:
    from engine.controls.api import switch_label as label

    return label(scope, target, run_id)


def preview_text(label: str, preview: KillPreview | None, now: float) -> Text:
    """What the switch would stop, as the CLI prints it (console/commands/controls.py _print_preview)."""
    text = Text(end="")
    if preview is None:
        text.append(f"{label}: no engine has recorded runs on this store yet, so nothing is running to stop.\n")
        return text
    if preview.empty:
        text.append(f"{label}: nothing running matches right now. ", style="bold")
        text.append("The switch still applies to matching work that starts later, until it is released.\n")
        return text
    text.append(f"{label} would stop: {len(preview.runs)} run(s), {len(preview.agents)} running agent(s), "
                f"{len(preview.calls)} in-flight call(s)\n", style="bold")
    for run in preview.runs[:PREVIEW_ROWS]:
        text.append(f"  run   {printable(run['id'], limit=24):<24} {printable(run['hierarchy'], limit=24):<24} "
                    f"started {age(run['started'], now)}\n")
    if len(preview.runs) > PREVIEW_ROWS:
        text.append(f"  … and {len(preview.runs) - PREVIEW_ROWS} more run(s)\n", style="dim")
    work = [("agent", a["agent"], "", a["run_id"]) for a in preview.agents]
    work += [(c["kind"], c["name"], c.get("agent") or "", c["run_id"]) for c in preview.calls]
    for kind, name, agent, run_id in work[:PREVIEW_ROWS]:
        text.append(f"  {kind:<5} {printable(name, limit=24):<24} {printable(agent, limit=16):<16} "
                    f"run {printable(run_id, limit=24)}\n")
    if len(work) > PREVIEW_ROWS:
        text.append(f"  … and {len(work) - PREVIEW_ROWS} more\n", style="dim")
    return text


def start_kill(node: DOMNode, ctx: ConsoleContext, scope: str, target: str | None,
               run_id: str | None = None) -> None:
    """Preview -> confirmation (mode, reason; HALT typed for a global halt) -> set_kill -> wait for the ack."""
    if refuse_read_only(node, ctx):
        return
    app = node.app
    label = switch_label(scope, target, run_id)

    def read_preview() -> None:
        from engine.controls.preview import preview_kill
        from engine.store import open_trace_reads

        preview = None
        if ctx.source.has_traces():
            reader = open_trace_reads(ctx.location)
            try:
                preview = preview_kill(reader, scope, target, run_id)
            finally:
                reader.close()
        app.call_from_thread(_confirm_kill, node, ctx, scope, target, run_id, label, preview)

    app.run_worker(read_preview, name="kill-preview", group=ACTION_GROUP, thread=True, exit_on_error=False)


def _confirm_kill(node: DOMNode, ctx: ConsoleContext, scope: str, target: str | None, run_id: str | None,
                  label: str, preview: KillPreview | None) -> None:
    from console.widgets.modals import REASON, Field, FormModal  # the forms' widgets: not needed at start

    body = preview_text(label, preview, ctx.clock())
    body.append("\nModes: ", style="bold")
    body.append(" · ".join(f"{m}: {w}" for m, w in MODE_WORDS.items()))
    body.append("\nThe switch stays in force, across engine restarts, until it is released (view 5, r).",
                style="dim")
    glob = scope == "global"
    title = "GLOBAL HALT: stop everything on this store" if glob else f"Kill switch: {label}"
    fields = [Field("mode", "Mode", kind="choice", choices=MODES), REASON]

    def done(result: FormResult | None) -> None:
        if result is None:
            node.notify("Nothing was stopped.", title="Kill switch", markup=False)
            return
        mode = result["mode"]
        ControlClient(node, ctx).run(
            "kill", lambda api: api.set_kill(scope, target, mode, result.reason, run_id=run_id),
            lambda switch: _switch_set(node, ctx, switch, label))

    node.app.push_screen(FormModal(title, body, fields=fields, confirm_word=HALT_WORD if glob else None,
                                   danger=True, submit_label=f"Enter: set the switch on {label}"), done)


def _switch_set(node: DOMNode, ctx: ConsoleContext, switch: KillSwitchSet, label: str) -> None:
    if switch.already_active:
        node.notify(f"kill switch #{switch.id} ({label}, {switch.mode}) was already active: set by "
                    f"{switch.operator}.", title="Kill switch", markup=False)
    else:
        node.notify(f"kill switch #{switch.id} set: {label}, mode {switch.mode}, by {switch.operator}. "
                    f"Waiting for the engine to acknowledge…", title="Kill switch", markup=False)
    watcher = AckWatcher(node, ctx, switch, label)
    WATCHERS.append(watcher)
    del WATCHERS[:-20]
    watcher.start()


WATCHERS: list[AckWatcher] = []  # the latest few, for tests and the palette


class AckWatcher:
    """Polls kill_switch(id).acked after a switch was set; says when the engine acknowledged it, or offers to
    terminate a wedged engine when no ack arrives within ACK_WAIT_S while an engine is alive."""

    def __init__(self, node: DOMNode, ctx: ConsoleContext, switch: KillSwitch, label: str,
                 wait_s: float | None = None) -> None:
        self.node = node
        self.ctx = ctx
        self.switch = switch
        self.label = label
        self.wait_s = ACK_WAIT_S if wait_s is None else wait_s
        self.started = time.monotonic()
        self.done = False
        self.outcome: str | None = None  # "acked" | "no-engine" | "wedged" (for tests)

    def start(self) -> None:
        if self.switch.acked is not None:
            self._acked(self.switch)
            return
        self._poll()

    def _poll(self) -> None:
        if self.done:
            return
        ControlClient(self.node, self.ctx).run("kill-ack", self._read, self._seen, write=False)

    def _read(self, api: ControlAPI) -> tuple[KillSwitch, list[EngineStatus], dict[str, float]]:
        from engine.store.control import STALE_AFTER_S

        row = api.kill_switch(self.switch.id)
        now = api.now()
        alive = [e for e in api.engines() if e.stopped is None and now - e.heartbeat <= STALE_AFTER_S * 2]
        acks = {a.engine_id: a.acked for a in api.kill_switch_acks([row.id])} if self.ctx.postgres else {}
        return row, alive, acks

    def _seen(self, result: tuple[KillSwitch, list[EngineStatus], dict[str, float]]) -> None:
        row, alive, acks = result
        if self.ctx.postgres and acks:  # a fleet: every live engine acknowledges for itself (kill_switch_acks)
            missing = [e for e in alive if str(e.id) not in acks]
            if not missing or time.monotonic() - self.started >= self.wait_s:
                self._fleet_acked(row, alive, acks, missing)
                return
        elif row.acked is not None:
            self._acked(row)
            return
        if not alive:
            self.done, self.outcome = True, "no-engine"
            self.node.notify(f"No engine is running on this store: kill switch #{row.id} stays in force and the "
                             f"next engine applies it when it starts.", title="Kill switch", markup=False)
            return
        if time.monotonic() - self.started >= self.wait_s:
            self.done, self.outcome = True, "wedged"
            _offer_terminate(self.node, self.ctx, row, alive[0], self.wait_s)
            return
        self.node.set_timer(ACK_POLL_S, self._poll)

    def _acked(self, row: KillSwitch) -> None:
        from engine.timefmt import clock_text

        self.done, self.outcome = True, "acked"
        acked = float(row.acked or 0)
        took = max(0.0, acked - float(row.created or acked))
        self.node.notify(f"Engine {printable(row.acked_by or '', limit=40)} acknowledged kill switch "
                         f"#{row.id} ({self.label}) at {clock_text(acked)}, {took:.1f}s after it was set.",
                         title="Kill switch acknowledged", markup=False)


    def _fleet_acked(self, row: KillSwitch, alive: list[EngineStatus], acks: dict[str, float],
                     missing: list[EngineStatus]) -> None:
        """On a Postgres store: how many of the live engines acknowledged, and which did not within the wait (an
        engine on Postgres holds no lock the console could terminate it by: say where it runs)."""
        from engine.timefmt import clock_text

        self.done = True
        self.outcome = "partial" if missing else "acked"
        reached = len([e for e in alive if str(e.id) in acks])
        count = f"{reached} of {len(alive)} live engine(s)" if alive else f"{len(acks)} engine(s)"
        text = (f"Kill switch #{row.id} ({self.label}) acknowledged by {count}: "
                + ", ".join(f"{printable(engine_id, limit=24)} at {clock_text(at)}"
                            for engine_id, at in sorted(acks.items(), key=lambda item: item[1])))
        if missing:
            text += (f". Not within {self.wait_s:.0f}s: " + ", ".join(
                f"{printable(str(e.id), limit=24)} (pid {e.pid} on {printable(e.host, limit=30)})" for e in missing)
                + "; if its event loop is wedged, stop it on its host.")
        self.node.notify(text, title="Kill switch acknowledged" if not missing else "Kill switch",
                         severity="warning" if missing else "information", markup=False)


def _offer_terminate(node: DOMNode, ctx: ConsoleContext, row: KillSwitch, engine: EngineStatus,
                     waited: float) -> None:
    from console.widgets.modals import REASON, FormModal

    pid = engine.pid
    body = Text(end="")
    body.append(f"The engine (pid {pid} on {printable(engine.host, limit=40)}) has not acknowledged kill "
                f"switch #{row.id} after {waited:.0f}s: its event loop may be wedged.\n\n", style="bold")
    body.append("Terminating sends SIGTERM, then SIGKILL after 5 s if it is still there. Only an engine that holds "
                "this store's lock and runs as your user can be terminated; the action is audited. Runs in flight "
                "end as abandoned when an engine next starts.")

    def done(result: FormResult | None) -> None:
        if result is None:
            node.notify(f"Engine pid {pid} left running; kill switch #{row.id} is still unacknowledged.",
                        title="Kill switch", severity="warning", markup=False)
            return

        def terminate(api: ControlAPI) -> Any:
            from engine.controls.terminate import terminate_engine

            return terminate_engine(ctx.store_dir, int(pid), ctx.operator, result.reason, api=api)

        def finished(outcome: Any) -> None:
            signals = ", ".join(outcome.signals) or "no signal (it was already gone)"
            node.notify(f"Engine pid {outcome.pid}: sent {signals}; "
                        f"{'it exited' if outcome.exited else 'it has NOT exited'} after {outcome.waited_s:.1f}s "
                        f"(audit #{outcome.audit_id}).", title="Engine terminated",
                        severity="information" if outcome.exited else "error", markup=False)

        ControlClient(node, ctx).run("terminate-engine", terminate, finished)

    node.app.push_screen(FormModal(f"Terminate wedged engine pid {pid}?", body, fields=[REASON], danger=True,
                                   submit_label="Enter: terminate the engine"), done)


# -- kill keys, declared by the views ------------------------------------------------------------------------------

KILL_RUN = Binding("k", "kill_selected", "Kill", id="kill_selected",
                   tooltip="Kill switch for the selection (a run; in the run view the selected agent or tool): "
                           "shows what would stop, asks for a mode and a reason")
GLOBAL_HALT = Binding("H", "global_halt", "HALT all", id="global_halt", show=False,
                      tooltip="Global halt: a kill switch on everything on this store (type HALT to confirm)")


def kill_target_for_span(span: dict[str, Any] | None, run_id: str | None) -> tuple[str, str | None, str | None]:
    """(scope, target, run_id) for a span of the run view: an agent span -> that agent in this run; a tool span
    -> that tool (everywhere: a tool switch refuses the tool); anything else -> the run."""
    if span is not None:
        kind = span.get("kind")
        if kind == "agent" and span.get("agent"):
            return "agent", str(span["agent"]), run_id
        if kind == "tool" and span.get("name"):
            return "tool", str(span["name"]), None
    if not run_id:
        raise LookupError("no run is shown")
    return "run", run_id, None


def kill_palette_commands(node: Any, ctx: ConsoleContext, title: str, help_text: str,
                          kill_selected: Callable[[], None]) -> list[Any]:
    """The palette's "kill the selection" and "global halt" commands (read-write consoles only)."""
    from console.screens.base import PaletteCommand

    if ctx.read_only:
        return []
    return [PaletteCommand(title, help_text, kill_selected),
            PaletteCommand("GLOBAL HALT: stop everything", "A global kill switch (type HALT)",
                           lambda: start_kill(node, ctx, "global", None))]

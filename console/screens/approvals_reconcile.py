"""RECONCILE rows in the approvals view (view 3): a durable run's side effect whose outcome is unknown after a crash
(console/views_data/reconcile_data.py reads them). The row is labelled RECONCILE in the LEVEL column, waits with no
deadline, and names the tool, its arguments, the run and the idempotency key. The operator decides there, as with
`flightdeck reconcile RUN --call KEY --done|--again|--fail --reason ...` (the same ControlAPI call, so the same
audit row):

- c  done: it happened; the model is told an operator confirmed it, and it never runs again
- r  again: run it again under the same idempotency key (the operator accepts the risk of a second effect)
- f  fail: the run ends failed, with the reason as its error

Each opens a confirmation that shows the row in full and what the decision does, and requires a reason. This module
holds the row's cells, its detail, and the decision flow; console/screens/approvals.py declares the keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.binding import Binding

from console.views_data.reconcile_data import ReconcileItem
from console.widgets.safe import compact_json, literal, pretty_json, printable
from engine.timefmt import clock, compact_age

if TYPE_CHECKING:
    from console.screens.actions import ControlClient
    from console.screens.base import ConsoleContext
    from console.widgets.modals import FormResult
    from engine.controls.reconcile import Decision

LABEL_STYLE = "bold black on yellow"

# decision: (key, its words in the confirmation, the past tense in the notification)
DECISIONS = {
    "done": ("c", "it happened: the model is told you confirmed it, and it never runs again", "confirmed done"),
    "again": ("r", "run it again under the same idempotency key: you accept the risk of a second effect",
              "to run again"),
    "fail": ("f", "the run ends failed, with your reason as its error", "failed"),
}

RECONCILE_BINDINGS = (
    Binding("c", "reconcile('done')", "Done", id="reconcile_done",
            tooltip="RECONCILE row: the side effect happened; record it done (never runs again); asks for a reason"),
    Binding("r", "reconcile('again')", "Again", id="reconcile_again",
            tooltip="RECONCILE row: run the side effect again under the same idempotency key; asks for a reason"),
    Binding("f", "reconcile('fail')", "Fail", id="reconcile_fail",
            tooltip="RECONCILE row: end the run failed with your reason as its error"),
)

KEYS_WORDS = "c done · r again · f fail"


def is_reconcile(row: Any) -> bool:
    return isinstance(row, ReconcileItem)


def reconcile_cell(row: ReconcileItem, column: str, now: float) -> Text | str:
    if column == "left":
        return Text("waiting", style="bold yellow", end="")
    if column == "risk":
        return Text("?", style="bold yellow", end="")
    if column == "level":
        return Text("RECONCILE", style=LABEL_STYLE, end="")
    if column == "arguments":
        return Text(compact_json(row.arguments, limit=300), no_wrap=True, end="")
    if column == "reason":
        return Text(f"outcome unknown since {compact_age(now - row.since)}", style="yellow", end="")
    if column == "run":
        return literal(row.run_id, limit=40)
    if column == "id":
        return literal(row.key, limit=300)
    if column in ("agent", "tool"):
        return literal(getattr(row, column) or "", limit=300)
    return ""


def reconcile_words(row: ReconcileItem) -> str:
    return " ".join(str(v or "") for v in ("reconcile", row.key, row.agent, row.tool, row.run_id, row.hierarchy,
                                           row.call)).lower()


def reconcile_detail(row: ReconcileItem, now: float) -> Text:
    text = Text(end="")
    text.append(" RECONCILE ", style=LABEL_STYLE)
    text.append(f" run {printable(row.run_id, limit=40)} ({printable(row.hierarchy, limit=40)}) waits since "
                f"{clock(row.since)} ({compact_age(now - row.since)}): ")
    text.append(printable(row.agent or "an agent", limit=40))
    text.append(" called ")
    text.append(printable(row.tool, limit=60), style="bold")
    text.append(" and the engine died before its outcome was recorded.\n")
    text.append("idempotency key ", style="dim")
    text.append(printable(row.key, limit=120), style="bold")
    text.append(f" · call {printable(row.call, limit=60)} · span {printable(row.span_id, limit=40)}\n")
    text.append("Arguments: ", style="dim")
    text.append(compact_json(row.arguments, limit=400) + "\n")
    text.append(f"Check the effect where it lands (by its key), then decide: {KEYS_WORDS}.", style="bold")
    return text


def decision_body(row: ReconcileItem, decision: str, now: float) -> Text:
    text = Text(end="")
    text.append(" RECONCILE ", style=LABEL_STYLE)
    text.append(f" {printable(row.tool, limit=60)} in run {printable(row.run_id, limit=40)} "
                f"({printable(row.hierarchy, limit=40)}), by {printable(row.agent or '-', limit=40)}\n")
    text.append("idempotency key: ", style="dim")
    text.append(printable(row.key, limit=160) + "\n", style="bold")
    text.append("arguments:\n", style="dim")
    text.append(pretty_json(row.arguments, limit=1500) + "\n")
    if row.error:
        text.append(printable(row.error, limit=300) + "\n", style="yellow")
    text.append(f"\n{decision}: ", style="bold")
    text.append(DECISIONS[decision][1] + ".\n")
    text.append(f"Waiting {compact_age(now - row.since)}. Written to the audit log as you, like `flightdeck "
                f"reconcile {printable(row.run_id, limit=40)} --{decision}`.", style="dim")
    return text


def decided_message(decision: Decision, waiting: int) -> str:
    words = DECISIONS.get(decision.decision, ("", "", decision.decision))[2]
    text = (f"{decision.key}: {words}, by {decision.operator} (audit row {decision.audit_id}).")
    if decision.decision == "fail":
        return text + f" Run {decision.run_id} ends failed when an engine carries it on."
    if waiting:
        return text + f" Run {decision.run_id} still waits on {waiting} more side effect(s)."
    return (text + f" Run {decision.run_id} goes on now if a durable engine runs on this store (flightdeck serve, "
            f"run --durable: it takes the run within a moment), else when one next starts; to resume it now "
            f"without one: R on the run (view 2), or `flightdeck resume {decision.run_id}`.")


def start_reconcile(node: Any, ctx: ConsoleContext, client: ControlClient, row: ReconcileItem, decision: str,
                    done: Any) -> None:
    """Confirmation (the row, what `decision` does, a required reason) -> ControlAPI.reconcile_side_effect (the
    CLI's call: one audit row) -> `done(decision, calls still waiting in the run)` on the UI thread."""
    from console.widgets.modals import REASON, FormModal

    run_id, key = row.run_id, row.key

    def submitted(result: FormResult | None) -> None:
        if result is None:
            return

        def decide(api: Any) -> tuple[Decision, int]:
            from engine.controls.reconcile import undecided

            made = api.reconcile_side_effect(run_id, key, decision, result.reason)
            return made, len(undecided(api.reconcile_calls(run_id)))

        client.run("reconcile", decide, lambda out: done(*out))

    node.app.push_screen(FormModal(f"Reconcile {printable(row.tool, limit=40)}: {decision}",
                                   live_body=lambda: decision_body(row, decision, ctx.clock()), fields=[REASON],
                                   danger=decision != "done", submit_label=f"Enter: record {decision}"), submitted)

"""The run view's hint, its event tail's title, and its operator actions on the selected span (kill switch, retry
from here): what the view says and does about a run, apart from how it draws it (console/screens/run.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from console.screens.actions import kill_palette_commands, kill_target_for_span, start_kill
from console.screens.base import PaletteCommand, ShowView
from console.screens.resume import may_resume
from console.screens.retry import RetryLaunch, watch
from console.widgets.status import PROBLEM_RUN_STATUSES, RUN_OUTCOME, run_look

if TYPE_CHECKING:
    from console.screens.run import RunView
    from console.widgets.span_detail import EventTail
    from engine.store.trace_rows import RunRow


def run_hint(view: RunView, run: RunRow) -> str:
    """The hint line for the run shown: what R said (until the run's status changes), else what to do next."""
    status = run.status
    tree = view.tree
    problems = len(tree.problems)
    if view.resume_note is not None and view.resume_note[:2] == (run.id, status):
        return view.resume_note[2]  # until the run's status changes (it resumed, or ended again)
    if tree.left_out:
        return (f"This run is huge: the tree shows its first {len(tree.nodes):,} spans ({tree.left_out:,} more not "
                "shown); the event tail has the newest.")
    if status == "needs_reconcile":
        return (f"This run waits for you: check the side effect's key in its tool span (n), decide in view 3 (or "
                f"`flightdeck reconcile {run.id}`), then R.")
    if status in PROBLEM_RUN_STATUSES:
        outcome = RUN_OUTCOME.get(status or "", f"ended {run_look(status).word}")
        if may_resume(run):
            return f"This run {outcome}: n jumps to the failing span; R resumes it, y retries from a span."
        if problems:
            return f"This run {outcome}: n jumps to the next failing span; y retries from a span."
        return f"This run {outcome}: the reason is under the title; Esc goes back to the runs."
    if status == "completed" and view.degraded:
        return ("This run completed (degraded): what was withheld or denied is under the title; n jumps to the "
                "denied call.")
    if status == "running":
        return ("Running: the tree grows live; n jumps to a failing span, e reads the event tail." if problems
                else "Running: the tree grows live; select a span for its detail, e for events.")
    return "Select a span for its inputs, outputs and cost · j raw JSON · y retries from it · Esc: back."


def palette(view: RunView) -> list[PaletteCommand]:
    """The run view's commands in ctrl+p."""
    commands = [
        PaletteCommand("Run: back to runs", "The runs table", view.action_back),
        PaletteCommand("Run: next problem span", "Jump to the next failed, timed-out, denied or looping span",
                       view.action_next_problem),
        PaletteCommand("Run: raw JSON" if not view.detail.raw else "Run: summary view",
                       "Toggle the selected span's raw JSON", view.action_toggle_raw),
        PaletteCommand("Run: follow events" if not view.events.auto_scroll else "Run: pause event tail",
                       "Follow or stop following new events", view.action_toggle_follow),
        PaletteCommand("Run: focus the event tail", "Scroll through the run's events", view.action_focus_events),
    ]
    if not view.ctx.read_only:
        commands.append(PaletteCommand("Run: resume this durable run", "What replays, what runs again; asks for "
                                       "a reason", view.action_resume_run))
        commands.append(PaletteCommand("Run: retry from the selected span", "A new run: what came before replays, "
                                       "the span and what follows run again; asks for a reason",
                                       view.action_retry_from))
    return commands + kill_palette_commands(view, view.ctx, "Kill switch on the selected agent or tool",
                                            "Agent span: that agent in this run; tool span: that tool; otherwise "
                                            "the run", view.action_kill_selected)


def kill_selected(view: RunView) -> None:
    """k: a kill switch on the selected agent or tool (or the run)."""
    node = view.tree.cursor_node
    span = node.data if node is not None else None
    run_id = (view.run.id if view.run is not None else None) or view.run_id
    try:
        scope, target, in_run = kill_target_for_span(span, run_id)
    except LookupError:
        view.notify("No run shown: open one first (press 1, Enter).", severity="warning", markup=False)
        return
    start_kill(view, view.ctx, scope, target, in_run)


def retry_started(view: RunView, started: RetryLaunch) -> None:
    """y was confirmed and `flightdeck retry` runs: show the new run (its row appears within a second or two) and
    watch the process; if it refuses (nothing written), go back to the run it came from and say why."""
    view.notify(f"Retry of run {started.run_id} started as run {started.new_run_id} (flightdeck retry, pid "
                f"{started.process.pid}: it writes the audit row and runs it). Log: {started.log}.",
                title="Retry", markup=False, timeout=12)

    def refused(words: str) -> None:
        if view.run_id == started.new_run_id:
            view.open_run(started.run_id)
        view.resume_note = (started.run_id, started.run_status, words)  # the hint, until that run's status changes
        view.hint = words

    watch(view, started, refused)
    view.post_message(ShowView("run", started.new_run_id))


def events_title(log: EventTail) -> Text:
    """The event tail's title: how many events it saw, and whether it follows new ones."""
    title = Text(end="")
    title.append("EVENTS ", style="bold")
    title.append(f"{log.count:,} seen · ")
    title.append("following (f to stop)" if log.auto_scroll else "paused (f to follow)",
                 style="" if log.auto_scroll else "bold yellow")
    return title

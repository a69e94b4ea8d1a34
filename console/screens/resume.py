"""The resume key (R) of the runs and run views: resume a durable run that ended failed, killed, abandoned, over
budget, or waiting in needs_reconcile once every side effect is decided (issue 13).

R reads, off the UI thread, what `flightdeck resume RUN` prints before it acts (engine/controls/resume_preview.py:
which recorded side effects replay and are NOT run again, what runs again, what the run already spent, which kill
switch on the run is released) and whether an engine is serving the store; a confirmation shows it and requires a
reason; then ControlAPI.record_resume writes the audit row `resume` (releasing the run's kill switch in the same
transaction). The console does not run the engine itself: a durable engine running on the store (flightdeck serve,
flightdeck run --durable) takes the recorded resume within a control poll (engine/runtime/durable_pickup.py), and
when none runs the console says to run `flightdeck resume RUN`; an engine holding the store that is not durable
(its engine.lock record has no `durable` field) cannot, and the console says so. A run that cannot resume (not durable,
running, completed, a side effect still undecided) gets the engine's reason on the hint line, not an error; a
read-only console refuses like every other action.

On a Postgres store (issue 16) there is no lock file: the engines that pick a resume up are the live durable engines
whose current life says in `durable_pickup` that they take requests (engine/store/pg/durable_takers.py); with none,
R says so before asking and writes nothing, as `flightdeck resume` exits 3 there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.binding import Binding

from console.screens.actions import ControlClient, refuse_read_only
from console.widgets.safe import compact_json, printable
from engine.store.location import PostgresLocation
from engine.timefmt import timestamp

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext
    from console.widgets.modals import FormResult
    from engine.controls.api import ControlAPI
    from engine.controls.resume_preview import ResumePreview
    from engine.store.control_rows import AuditEntry, EngineStatus, KillSwitch
    from engine.store.trace_rows import RunRow

RESUME_RUN = Binding("R", "resume_run", "Resume", id="resume_run",
                     tooltip="Resume the durable run (failed, killed, abandoned, over budget, or reconciled): shows "
                             "what replays and what runs again, asks for a reason, records the resume")
RESUMABLE_WORDS = "failed, killed, abandoned, over budget or reconciled"
NO_TAKER = ("No live durable engine on this Postgres store takes resume requests: start one (flightdeck serve --store "
            "URL, or flightdeck run --durable --store URL), then R again.")


@dataclass(frozen=True, slots=True)
class ResumeCheck:
    """What R found: the preview (its `refusal` says why not) and the engines serving the store now."""

    preview: ResumePreview
    serving: list[EngineStatus]
    plain_holder: int | None = None  # the pid of a live engine holding the store that is not durable
    postgres: bool = False  # a Postgres store: `serving` are the live durable engines that take resume requests


@dataclass(frozen=True, slots=True)
class ResumeRecorded:
    entry: AuditEntry
    released: list[KillSwitch]
    serving: list[EngineStatus]
    plain_holder: int | None = None
    postgres: bool = False


def may_resume(run: RunRow | None) -> bool:
    """A durable run in a status a resume may start from (the hint offers R); the preview decides for certain."""
    if run is None:
        return False
    attrs = run.attributes if isinstance(run.attributes, Mapping) else {}
    return bool(attrs.get("durable")) and run.status in (
        "failed", "killed", "abandoned", "budget_exceeded", "needs_reconcile")


def serving_engines(api: ControlAPI) -> list[EngineStatus]:
    """Engines alive on the store now (heartbeat fresh): one of them picks a recorded resume up. On a Postgres
    store only the durable engines that take resume requests (engine/store/pg/durable_takers.py) count: a fleet's
    other engines never pick a resume up."""
    alive = [engine for engine in api.engines() if engine.alive and not engine.stale]
    if not isinstance(api.location, PostgresLocation):
        return alive
    from engine.store.pg.durable_takers import taking_requests

    takers = taking_requests(api.location)
    return [engine for engine in alive if engine.id in takers]


def plain_holder(api: ControlAPI) -> int | None:
    """The pid of the live engine holding the store when it is not a durable one (it takes no resume), else None."""
    from engine.controls.terminate import process_alive, read_lock_holder

    if isinstance(api.location, PostgresLocation):  # no lock file: engines that take nothing are simply not serving
        return None
    holder = read_lock_holder(api.store_dir)
    pid = holder.get("pid") if holder else None
    if holder is None or not isinstance(pid, int) or not process_alive(pid):
        return None
    durable = holder.get("durable")
    return None if isinstance(durable, dict) and durable.get("pickup") else pid


def next_step(run_id: str, serving: list[EngineStatus], plain: int | None = None, *, postgres: bool = False) -> str:
    """What happens after the resume is recorded, in plain words, for the engines running now."""
    if postgres:
        if not serving:  # R refuses before asking then (as `flightdeck resume` exits 3): said for completeness
            return NO_TAKER
        engine = serving[0]
        more = f" (or one of {len(serving) - 1} more)" if len(serving) > 1 else ""
        return (f"A durable engine on this Postgres store, {printable(engine.id, limit=40)} (pid {engine.pid} on "
                f"{printable(engine.host, limit=30)}){more}, takes it within seconds; exactly one of them carries "
                "the run on.")
    if plain is not None:
        return (f"The engine holding this store (pid {plain}) is not a durable engine: it cannot resume the run. "
                f"Once it has stopped: flightdeck resume {run_id} (or start `flightdeck serve`).")
    if serving:
        engine = serving[0]
        return (f"A serving engine on this store (pid {engine.pid} on {printable(engine.host, limit=30)}) resumes it "
                f"within seconds; if none runs: flightdeck resume {run_id}.")
    return (f"No engine is serving this store: run `flightdeck resume {run_id}` to resume it now (or start "
            f"`flightdeck serve`).")


def preview_text(check: ResumeCheck) -> Text:
    """The preview `flightdeck resume` prints (console/commands/controls/durable.py), and what happens after."""
    preview = check.preview
    run = preview.run
    text = Text(end="")
    text.append(f"resume run {printable(run.id, limit=40)} ({printable(run.hierarchy, limit=40)}, {run.status}"
                f"{' ' + timestamp(run.ended) if run.ended else ''})", style="bold")
    if run.error:
        text.append(f": {printable(run.error, limit=160)}")
    text.append(f"\n  already spent (counts against the run's and the day's budgets): ${run.cost_usd:.4f}, "
                f"{run.tokens_in + run.tokens_out:,} tokens, {run.model_calls} model calls, {run.tool_calls} tool "
                f"calls\n")
    if preview.limits is not None:
        text.append(f"  run limits: {printable(preview.limits.describe(), limit=300)}\n")
    if preview.recorded or preview.reconciled:
        text.append("  will NOT run again", style="bold green")
        text.append(" (recorded side effects: their recorded result is replayed):\n")
        for span in preview.recorded:
            args = span.attributes.get("args") if isinstance(span.attributes, Mapping) else None
            text.append(f"    {printable(span.name, limit=40)} {compact_json(args, limit=60)} (span "
                        f"{printable(span.id, limit=30)}, {printable(span.agent or '-', limit=30)})\n")
        for call in preview.reconciled:
            decision = call.decision.decision if call.decision is not None else ""
            verb = {"done": "confirmed done, not run again", "again": "RUNS AGAIN (same idempotency key)",
                    "fail": "the run ends failed"}.get(decision, decision)
            who = call.decision.operator if call.decision is not None else "-"
            text.append(f"    {printable(call.tool, limit=40)} {compact_json(call.args, limit=40)}: reconciled by "
                        f"{printable(who, limit=30)}: {verb}\n")
    else:
        text.append("  no side effect is recorded: every call the model asks for runs\n")
    text.append("  will run again", style="bold yellow")
    text.append(": what is not recorded; model calls and tool calls without side effects recorded complete "
                "replay (not billed again), side effects not recorded above run when the model asks for them\n")
    for switch in preview.releases:
        text.append(f"  releases kill switch #{switch.id} on the run ({switch.mode}, by "
                    f"{printable(switch.operator, limit=30)}: {printable(switch.reason, limit=60)})\n")
    text.append("\n" + next_step(run.id, check.serving, check.plain_holder, postgres=check.postgres), style="dim")
    return text


def start_resume(node: Any, ctx: ConsoleContext, run_id: str | None, show_hint: Callable[[str], None]) -> None:
    """R: preview (a worker) -> refusal on the hint line, or a confirmation with a required reason ->
    ControlAPI.record_resume (audit row `resume`) -> what happens next, on the hint line and in a notification."""
    if refuse_read_only(node, ctx):
        return
    if not run_id:
        show_hint("No run selected: select a durable run that ended failed, killed or abandoned, then R.")
        return
    client = ControlClient(node, ctx)

    def check(api: ControlAPI) -> ResumeCheck:
        from dataclasses import replace

        from engine.controls.resume_preview import preview_resume
        from engine.runtime.call_paths import carry_on_refusal

        preview = preview_resume(api, run_id)
        if preview.refusal is None:  # a run from an older engine whose call paths are ambiguous (docs/operations.md)
            preview = replace(preview, refusal=carry_on_refusal(preview.run))
        return ResumeCheck(preview, serving_engines(api), plain_holder(api), postgres=ctx.postgres)

    def checked(found: ResumeCheck) -> None:
        refusal = found.preview.refusal
        if refusal is None and found.postgres and not found.serving:  # as `flightdeck resume` there: exit 3
            refusal = NO_TAKER[0].lower() + NO_TAKER[1:].rstrip(".") + "; nothing was written"
        if refusal is not None:
            words = refusal[0].upper() + refusal[1:] + "."
            show_hint(words)
            node.notify(words, title="Cannot resume", markup=False)
            return
        confirm(node, ctx, client, found, show_hint)

    client.run("resume-preview", check, checked, write=False)


def confirm(node: Any, ctx: ConsoleContext, client: ControlClient, found: ResumeCheck,
            show_hint: Callable[[str], None]) -> None:
    from console.widgets.modals import REASON, FormModal

    run = found.preview.run
    run_id, status = run.id, run.status

    def submitted(result: FormResult | None) -> None:
        if result is None:
            show_hint(f"Run {run_id} was not resumed (nothing was written).")
            return

        def record(api: ControlAPI) -> ResumeRecorded:
            entry, released = api.record_resume(run_id, status, None, result.reason, run.attributes)
            return ResumeRecorded(entry, released, serving_engines(api), plain_holder(api), postgres=ctx.postgres)

        def recorded(done: ResumeRecorded) -> None:
            released = "".join(f", kill switch #{s.id} released" for s in done.released)
            words = f"Resume of run {run_id} recorded (audit row {done.entry.id}{released}). " + next_step(
                run_id, done.serving, done.plain_holder, postgres=done.postgres)
            show_hint(words)
            node.notify(words, title="Resume", markup=False, timeout=12)

        client.run("resume", record, recorded)

    node.app.push_screen(FormModal(f"Resume run {run_id}", preview_text(found), fields=[REASON],
                                   submit_label="Enter: record the resume"), submitted)

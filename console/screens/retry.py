"""The retry key (y) of the run view: re-run the run from the selected span, as a new run, the way
`flightdeck retry RUN --from SPAN` does (issue 13).

y reads, off the UI thread, what the CLI prints before it acts (engine/runtime/retry_preview.py): the side effects
that will be done AGAIN (first, in bold red), the budget the new run gets, what replays and what runs again. A
confirmation shows it and requires a reason. Confirming starts `flightdeck retry ... --yes` as a process of its own
(new session: it outlives the console), with the operator, the reason and the new run's id chosen here; that process
writes the audit row (ControlAPI.record_retry, action `retry`) and runs the new run on an engine of its own, exactly
as the CLI does, and the console opens the new run at once (it appears within a second or two).

Why a process and not an engine inside the console: the console is a reader and never holds the store's engine lock
(a serving engine may need it at any moment), a run can take minutes and must not stop when the operator quits the
console, and the CLI's code path is the one that is tested and documented. Because a retry needs the engine lock,
it is refused while an engine is alive on the store (the CLI refuses the same way): the operator is told which
engine holds it and the command to run once it has stopped. A span that cannot be retried from (a running run, a
span that is not a model, tool, agent or delegation step, a span recorded without a call path, a hierarchy file
that no longer loads) gets the engine's reason on the hint line, not an error; a read-only console refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.binding import Binding

from console.screens.actions import ACTION_GROUP, refuse_read_only
from console.widgets.safe import compact_json, printable

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext
    from console.widgets.modals import FormResult
    from engine.runtime.retry_preview import RetryPreview
    from engine.store.control_rows import EngineStatus
    from engine.store.location import PostgresLocation, StoreLocation

RETRY_FROM = Binding("y", "retry_from", "Retry from here", id="retry_from",
                     tooltip="Retry the run from the selected span as a new run: shows which side effects are done "
                             "again, what replays, the budget; asks for a reason; starts flightdeck retry")
RETRY_LOGS = "retries"  # STORE/retries/NEW_RUN_ID.log: what each retry the console started printed
LISTED = 8  # calls listed per group in the confirmation (the rest are counted)
REFUSED_EXITS = (2, 3)  # flightdeck retry: bad input or refused / store problem: no new run started


@dataclass(frozen=True, slots=True)
class RetryCheck:
    """What y found: the preview, or why not (`refusal`); the budgets the new run runs under."""

    refusal: str | None
    preview: RetryPreview | None = None
    changed: bool = False  # the hierarchy file changed since the run
    run_limits: str = ""  # the run budget the new run gets ("" = none)
    daily_limits: str = ""


@dataclass(slots=True)
class RetryLaunch:
    """A `flightdeck retry` process the console started."""

    run_id: str  # the original
    run_status: str
    new_run_id: str
    log: Path
    process: subprocess.Popen[bytes]


def limits_words(limits: Any) -> str:
    """`cost_usd $0.50 · model_calls 40` for a BudgetLimits (soft_threshold is not a limit)."""
    if limits is None:
        return ""
    values = limits.model_dump(exclude_none=True)
    values.pop("soft_threshold", None)
    return " · ".join(f"{k} ${v:.2f}" if k == "cost_usd" else f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in values.items())


def engine_holding(engines: list[EngineStatus]) -> EngineStatus | None:
    """An engine alive on the store holds its lock: a retry cannot start beside it. (A stale one may be dead, its
    lock released by the kernel: the retry process tries, and says so if the lock is held after all.)"""
    return next((engine for engine in engines if engine.alive and not engine.stale), None)


def retry_command(run_id: str, span_id: str, store_dir: Path) -> str:
    return f"flightdeck retry {run_id} --from {span_id} --store {store_dir} --reason '...'"


def postgres_of(store: Path | StoreLocation) -> PostgresLocation | None:
    from engine.store.location import PostgresLocation

    return store if isinstance(store, PostgresLocation) else None


def check_retry(store: Path | StoreLocation, run_id: str, span_id: str, engines: list[EngineStatus]) -> RetryCheck:
    """The preview and the refusals, read on a worker thread. InputError from the engine becomes `refusal`."""
    from engine.errors import InputError
    from engine.runtime.retry import retry_hierarchy
    from engine.runtime.retry_preview import preview_retry

    try:
        preview = preview_retry(store, run_id, span_id)
        hierarchy, changed = retry_hierarchy(preview)
    except InputError as exc:
        return RetryCheck(refusal=f"cannot retry from span {span_id}: {exc}")
    # On a Postgres store the retry is one more engine on the database (no lock): live engines do not stop it.
    holder = None if postgres_of(store) is not None else engine_holding(engines)
    if holder is not None:
        from engine.store.location import StoreDirectory

        store_dir = store.path if isinstance(store, StoreDirectory) else store
        assert isinstance(store_dir, Path)
        return RetryCheck(refusal=(
            f"an engine holds this store (pid {holder.pid} on {printable(holder.host, limit=30)}): a retry runs "
            f"on an engine of its own, so it waits until that one stops; then: "
            f"{retry_command(preview.run.id, preview.span.id, store_dir)}"))
    budgets = hierarchy.spec.budgets
    run_limits = limits_words(budgets.run)
    if preview.budget is not None:  # the retry starts with the --budget overrides its original started with
        run_limits = f"{limits_words(preview.budget)}: the original's --budget overrides"
        if preview.budget_changes:  # and the budget changes an operator made while it ran
            run_limits += "".join(f", then budget change #{c.id} by {c.operator}" for c in preview.budget_changes)
    elif preview.budget_source == "unknown":
        run_limits = (f"{run_limits or 'no run limit'}: the hierarchy's; the original is from an older engine that "
                      "did not record its --budget")
    return RetryCheck(refusal=None, preview=preview, changed=changed,
                      run_limits=run_limits, daily_limits=limits_words(budgets.daily))


def call_line(span: Any) -> str:
    """One recorded call, as `flightdeck retry` lists it but without the span id (the call path says which)."""
    attrs = span.attributes if isinstance(span.attributes, Mapping) else {}
    what = (f"{printable(span.name, limit=40)} {compact_json(attrs.get('args'), limit=50)}" if span.kind == "tool"
            else f"model call ({printable(span.name, limit=40)})")
    return f"{what}  [{printable(str(attrs.get('path') or '-'), limit=50)}]"  # the path says where; ids are in j


def _calls(text: Text, spans: list[Any], style: str = "") -> None:
    for span in spans[:LISTED]:
        text.append(f"    {call_line(span)}\n", style=style)
    if len(spans) > LISTED:
        text.append(f"    … and {len(spans) - LISTED} more\n", style="dim")


def preview_text(check: RetryCheck, logs: Path | None = None) -> Text:
    """The confirmation's body: side effects done again first, then the budget, what replays and what runs again,
    and where the new run runs."""
    preview = check.preview
    assert preview is not None
    run, span = preview.run, preview.span
    text = Text(end="")
    text.append(f"retry run {printable(run.id, limit=40)} ({printable(run.hierarchy, limit=40)}, {run.status}) from "
                f"{span.kind} span {printable(span.id, limit=30)} ({printable(span.name, limit=40)}, path "
                f"{printable(preview.path, limit=40)})\nas a NEW run{' (durable)' if preview.durable else ''}; the "
                "original run is not changed\n", style="bold")
    effects = preview.side_effects_again
    if effects:
        text.append(f"!! {len(effects)} SIDE EFFECT(S) WILL BE DONE AGAIN if the model asks for them (under the new "
                    "run's idempotency keys):\n", style="bold red")
        _calls(text, effects, style="bold red")
    else:
        text.append("no recorded side effect is done again\n", style="green")
    text.append("budget: ", style="bold")
    text.append(f"a run budget of its own ({check.run_limits or 'no run limit'}); replayed calls are not billed; "
                f"what runs again is billed and counts against the daily limit ({check.daily_limits or 'none'}). "
                f"The original spent ${run.cost_usd:.4f} in {run.model_calls} model calls.\n")
    text.append(f"replays ({len(preview.replays)} recorded calls, not run or billed again):\n")
    _calls(text, preview.replays, style="dim")
    text.append(f"runs again ({len(preview.runs_again)} recorded calls at or after the span, and whatever the model "
                "asks for next):\n")
    _calls(text, preview.runs_again)
    if check.changed:
        text.append(f"the hierarchy file {printable(preview.hierarchy_path, limit=60)} changed since the run: recorded "
                    "calls that no longer fit it run again\n", style="yellow")
    where = f"{RETRY_LOGS}/ in the store" if logs is None else printable(str(logs), limit=80)
    text.append(f"\nEnter starts `flightdeck retry` in a process of its own (it goes on if you quit the console; its "
                f"log goes to {where}), which writes the audit row and runs the new run; the console opens it.",
                style="dim")
    return text


def log_path(store_dir: Path, new_run_id: str) -> Path:
    return store_dir / RETRY_LOGS / f"{new_run_id}.log"


def postgres_log_dir() -> Path:
    """Where the retries a console on a Postgres store starts log to: there is no store directory, so a directory
    of this user's in the temporary directory (0700: the log holds the run's output)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"flightdeck-{os.getuid()}" / RETRY_LOGS


def logs_of(ctx: ConsoleContext) -> Path | None:
    """The retry log directory when it is not STORE/retries (a Postgres store), else None."""
    return postgres_log_dir() if ctx.postgres else None


def launch(ctx: ConsoleContext, preview: RetryPreview, reason: str) -> RetryLaunch:
    """Start `flightdeck retry RUN --from SPAN --yes` (it audits and runs) in a new session, output to a log. The
    console picks the new run's id (--run-id) so that it can open the run before its row is written."""
    from engine.runtime.retry import new_run_id as fresh_id

    new_run_id = fresh_id()
    postgres = postgres_of(ctx.location)
    logs = logs_of(ctx)
    log = log_path(ctx.store_dir, new_run_id) if logs is None else logs / f"{new_run_id}.log"
    log.parent.mkdir(mode=0o700, parents=logs is not None, exist_ok=True)
    argv = [sys.executable, "-m", "console.cli", "retry", preview.run.id, "--from", preview.span.id,
            "--reason", reason, "--yes", "--operator", ctx.operator, "--run-id", new_run_id]
    # The same Flightdeck as this console's (a checkout run from source included), whatever the shell's path says.
    code_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p)}
    if postgres is None:
        argv += ["--store", str(ctx.store_dir)]
    else:  # the URL may hold a password: in the environment, never on a command line (`ps` shows those)
        env["FLIGHTDECK_STORE"] = postgres.dsn
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                   env=env)
    finally:
        os.close(fd)
    return RetryLaunch(preview.run.id, preview.run.status, new_run_id, log, process)


def last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def start_retry_from(node: Any, ctx: ConsoleContext, run_id: str | None, span: Mapping[str, Any] | None,
                     show_hint: Callable[[str], None], opened: Callable[[RetryLaunch], None]) -> None:
    """y: check (a worker) -> refusal on the hint line, or the confirmation with a required reason -> launch ->
    `opened(launch)` (the view shows the new run and watches the process)."""
    if refuse_read_only(node, ctx):
        return
    if not run_id or span is None or not span.get("id"):
        show_hint("No span selected: select the step to retry from in the tree (t), then y.")
        return
    span_id = str(span["id"])

    def work() -> None:
        from engine.controls.api import ControlAPI

        with ControlAPI(ctx.location, ctx.operator) as api:
            engines = api.engines()
        found = check_retry(ctx.location if ctx.postgres else ctx.store_dir, run_id, span_id, engines)
        node.app.call_from_thread(checked, found)

    def checked(found: RetryCheck) -> None:
        if found.refusal is not None:
            words = found.refusal[0].upper() + found.refusal[1:] + "."
            show_hint(words)
            node.notify(words, title="Cannot retry", markup=False, timeout=12)
            return
        confirm(node, ctx, found, show_hint, opened)

    node.app.run_worker(work, name="retry-preview", group=ACTION_GROUP, thread=True, exit_on_error=False)


def confirm(node: Any, ctx: ConsoleContext, found: RetryCheck, show_hint: Callable[[str], None],
            opened: Callable[[RetryLaunch], None]) -> None:
    from console.widgets.modals import REASON, FormModal

    preview = found.preview
    assert preview is not None

    def submitted(result: FormResult | None) -> None:
        if result is None:
            show_hint(f"Run {preview.run.id} was not retried (nothing was written).")
            return
        try:
            started = launch(ctx, preview, result.reason)
        except OSError as exc:
            words = f"Could not start flightdeck retry: {exc.strerror or exc} (nothing was written)."
            show_hint(words)
            node.notify(words, title="Retry", severity="error", markup=False)
            return
        opened(started)

    node.app.push_screen(FormModal(f"Retry run {preview.run.id} from span {preview.span.id}",
                                   preview_text(found, logs_of(ctx)), fields=[REASON],
                                   danger=bool(preview.side_effects_again),
                                   submit_label="Enter: start the retry"), submitted)


def launch_outcome(started: RetryLaunch) -> str | None:
    """None while the process runs; then what to tell the operator."""
    code = started.process.poll()
    if code is None:
        return None
    if code in REFUSED_EXITS:
        why = last_line(started.log).removeprefix("flightdeck: ") or f"exit {code}"
        return (f"The retry of run {started.run_id} did not start: {printable(why, limit=400)}. Log: {started.log}.")
    from engine.runtime.results import EXIT_CODES

    status = next((s for s, c in EXIT_CODES.items() if c == code), f"exit {code}")
    return f"Retry run {started.new_run_id} (of {started.run_id}) ended {status}. Log: {started.log}."


def watch(node: Any, started: RetryLaunch, refused: Callable[[str], None]) -> None:
    """Check the retry process twice a second until it exits; then say how it ended (a notification), and call
    `refused` when it never started a run (bad input, store locked): nothing was written then."""
    timer: Any = None

    def check() -> None:
        said = launch_outcome(started)
        if said is None:
            return
        timer.stop()
        if started.process.returncode in REFUSED_EXITS:
            node.notify(said, title="Retry refused", severity="error", markup=False, timeout=20)
            refused(said)
        else:
            node.notify(said, title="Retry", markup=False, timeout=12)

    timer = node.set_interval(0.5, check)

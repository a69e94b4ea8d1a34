"""The header slots of the operator-controls features: approvals, breakers, kill switches, safe mode. Importing
this module replaces the "n/a" placeholders of console/widgets/header.py (same ids, same places) with the slots of
SLOTS, this one and the incidents slot of console/incident_slots.py; console/app.py imports it once. (The views are
declared in console/screens/registry.py.)

- approvals: "N pending, oldest 1m20s left" (warn); critical with an alarm when one has under 30 s left.
- breakers: "N open" (crit, with the keys), "N half-open" (warn), "all closed"; from traces.db `breakers`.
- kill switches: "N active" (crit; says when one is not yet acknowledged); a GLOBAL switch shows the halt banner.
  A switch limited to a run that has ended is "spent" (info): it stops nothing and raises no alarm.
- safe-mode: the active flags "tools.side_effects=off, …" (warn); a global runs.admission=paused shows the banner.
- queues (first row, serve mode only): depth, and the backed-up alarm (console/queue_slots.py).
- needs reconcile (first on the row, shown only while a run waits): durable runs whose side effect's outcome is
  unknown, "2 runs · flightdeck reconcile ID" (crit), naming the run that has waited longest; its alarm sends the
  operator to view 3 (approvals), where each such side effect is a RECONCILE row decided with c / r / f.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from console.incident_slots import incidents_slot
from console.queue_slots import queues_slot
from console.widgets.header import HeaderContext, HeaderSlot, SlotValue, register_header_slot
from console.widgets.safe import printable
from engine.controls import approvals, flag_settings, kill_switches

if TYPE_CHECKING:
    from engine.store.control_rows import KillSwitch

URGENT_S = 30.0
RECONCILE_COUNTED = 100  # runs waiting in needs_reconcile counted exactly; more say "100+"


def _left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def approvals_slot(ctx: HeaderContext) -> SlotValue:
    if ctx.control is None:
        return SlotValue("none pending", "ok")
    with ctx.control.reading() as conn:
        rows = approvals.pending_by_deadline(conn)
    if not rows:
        return SlotValue("none pending", "ok")
    soonest = rows[0]
    left = float(soonest.deadline) - ctx.now
    text = f"{len(rows)} pending, next expires in {_left(left)}" if left > 0 else f"{len(rows)} pending, 1 EXPIRED"
    short = f"{len(rows)} ({_left(left)})"
    if left < URGENT_S:
        return SlotValue(text, "crit", short=short,
                         alarm=f"Approval {soonest.id} ({printable(soonest.tool, limit=30)}) expires in "
                               f"{_left(left)}: press 3 to decide.", view="approvals",
                         alarm_here=f"Approval {soonest.id} ({printable(soonest.tool, limit=30)}) expires in "
                                    f"{_left(left)}: select it, a approves, d denies.")
    return SlotValue(text, "warn", short=short,
                     alarm=f"{len(rows)} tool call(s) wait for approval: press 3.")


def reconcile_slot(ctx: HeaderContext) -> SlotValue:
    """Durable runs waiting in needs_reconcile: nothing happens to them until an operator decides."""
    rows = ctx.reader.list_runs(status="needs_reconcile", limit=RECONCILE_COUNTED)  # indexed by (status, started)
    if not rows:
        return SlotValue("none", "ok")
    count = f"{len(rows)}+" if len(rows) >= RECONCILE_COUNTED else str(len(rows))
    oldest = printable(rows[-1].id, limit=30)
    runs = "run" if len(rows) == 1 else "runs"
    return SlotValue(f"{count} {runs} · flightdeck reconcile {oldest}", "crit",
                     short=f"{count} · flightdeck reconcile {oldest}",
                     alarm=f"{count} {runs} wait for you to reconcile: press 3 to decide, or `flightdeck "
                           f"reconcile {oldest}`.", view="approvals",
                     alarm_here=f"{count} {runs} wait for you to reconcile: select a RECONCILE row, c done · r "
                                f"again · f fail.")


def breakers_slot(ctx: HeaderContext) -> SlotValue:
    rows = ctx.reader.breakers()
    if not rows:
        return SlotValue("none reported", "info", short="none")
    opened = [r for r in rows if r.state in ("open", "forced_open")]
    half = [r for r in rows if r.state == "half_open"]
    if opened:
        keys = ", ".join(sorted({printable(r.key, limit=30) for r in opened}))
        return SlotValue(f"{len(opened)} OPEN ({keys})", "crit", short=f"{len(opened)} OPEN",
                         alarm=f"Circuit breaker open: {keys}; calls fail fast. Press 4 to see why and reset.",
                         view="breakers",
                         alarm_here=f"Circuit breaker open: {keys}; calls fail fast. Select it for why; r resets it.")
    if half:
        return SlotValue(f"{len(half)} half-open, {len(rows) - len(half)} closed", "warn",
                         short=f"{len(half)} half-open")
    return SlotValue(f"all {len(rows)} closed", "ok", short="closed")


def switch_spent(ctx: HeaderContext, switch: KillSwitch) -> bool:
    """A switch limited to one run (`--run ID`, or an agent/tool `--in-run ID`) whose run is no longer running: it
    stops nothing any more (issue 15: shown as spent, not as a switch in force taking over the hint line)."""
    run_id = switch.run_id or (switch.target if switch.scope == "run" else None)
    if not run_id:
        return False
    run = ctx.reader.get_run(run_id)
    return run is not None and run.status != "running"


def partly_acked(ctx: HeaderContext, acked: list[KillSwitch]) -> list[KillSwitch]:
    """On a Postgres fleet each engine acknowledges a switch for itself (kill_switch_acks): the switches some live
    engine (the engines slot's, in ctx.cache) has not acknowledged yet. A store directory has one engine: none."""
    live = ctx.cache.get("engines", {}).get("alive_ids") or frozenset()
    if ctx.store_dir is not None or len(live) < 2 or not acked or ctx.control is None:
        return []
    by: dict[int, set[str]] = {}
    with ctx.control.reading() as conn:
        for ack in kill_switches.acks(conn, [r.id for r in acked]):
            by.setdefault(ack.switch_id, set()).add(ack.engine_id)
    return [r for r in acked if not live <= by.get(r.id, set())]


def kill_switches_slot(ctx: HeaderContext) -> SlotValue:
    if ctx.control is None:
        return SlotValue("none", "ok")
    with ctx.control.reading() as conn:
        rows = kill_switches.active(conn)
    spent = [r for r in rows if switch_spent(ctx, r)]
    rows = [r for r in rows if r not in spent]
    if not rows:
        if spent:
            return SlotValue(f"{len(spent)} spent (run ended)", "info", short=f"{len(spent)} spent")
        return SlotValue("none", "ok")
    unacked = [r for r in rows if r.acked is None]
    partly = partly_acked(ctx, [r for r in rows if r.acked is not None])
    halt = next((r for r in rows if r.scope == "global"), None)
    waiting = ([f"{len(unacked)} NOT ACKED"] if unacked else []) + \
        ([f"{len(partly)} NOT ACKED BY EVERY ENGINE"] if partly else [])
    text = f"{len(rows)} active" + (f" ({', '.join(waiting)})" if waiting else "") + \
        (f" · {len(spent)} spent" if spent else "")
    unacked = unacked + partly  # the alarm and the short form count both: a live engine has not stopped yet
    halt_text = None
    if halt is not None:
        halt_text = (f"GLOBAL {halt.mode.upper()} switch #{halt.id} by {printable(halt.operator, limit=30)}:"
                     f" {printable(halt.reason, limit=160)} — press 5, select it, r to release.")
    return SlotValue(text, "crit", short=f"{len(rows)}" + (" !ack" if unacked else ""),
                     alarm=f"{len(rows)} kill switch(es) in force" +
                           (f", {len(unacked)} not acknowledged by an engine" if unacked else "") + ": press 5.",
                     halt=halt_text, view="controls",
                     alarm_here=f"{len(rows)} kill switch(es) in force" +
                                (f", {len(unacked)} not acknowledged by an engine" if unacked else "") +
                                ": select one, r releases it.")


def safe_mode_slot(ctx: HeaderContext) -> SlotValue:
    if ctx.control is None:
        return SlotValue("off", "ok")
    with ctx.control.reading() as conn:
        rows = flag_settings.active(conn)
    if not rows:
        return SlotValue("off", "ok")
    shown = ", ".join(f"{printable(r.name, limit=30)}={printable(r.value, limit=12)}"
                      + ("" if r.scope == "global" else f"@{r.scope}") for r in rows[:3])
    more = f" +{len(rows) - 3}" if len(rows) > 3 else ""
    halt = next((r for r in rows if r.scope == "global" and r.name == "runs.admission"
                 and r.value == "paused"), None)
    halt_text = None
    if halt is not None:
        who = printable(halt.operator, limit=30)
        halt_text = (f"SAFE MODE: new runs are refused (runs.admission=paused by {who}"
                     f": {printable(halt.reason, limit=160)}) — press 5, select it, c to clear.")
    return SlotValue(shown + more, "warn", short=f"{len(rows)} flag(s)", halt=halt_text)


# The header's second row, in one list: each replaces the "n/a" slot of the same id in console/widgets/header.py
# (which keeps the order of the row); the reconcile slot, which has no placeholder, goes first.
SLOTS = (
    HeaderSlot("reconcile", "needs reconcile", reconcile_slot, row=2, quiet=True),
    HeaderSlot("breakers", "breakers", breakers_slot, row=2),
    HeaderSlot("approvals", "approvals", approvals_slot, row=2),
    HeaderSlot("kill_switches", "kill switches", kill_switches_slot, row=2),
    HeaderSlot("safe_mode", "safe-mode", safe_mode_slot, row=2),
    HeaderSlot("incidents", "incidents", incidents_slot, row=2),
    HeaderSlot("queues", "queues", queues_slot, row=1),  # serve mode only (an empty value is not shown)
)


def register() -> None:
    for slot in SLOTS:
        register_header_slot(slot, before="breakers")  # a new slot (reconcile) goes first on its row


register()

"""The header's slots: the slot registry, the built-in slots, one alarm order, and `collect()`, which fetches every
slot into a HeaderSnapshot. The widgets that show it (header strip, halt banner, hint line) are header_widgets.py.

Layout (3 lines):

    FLIGHTDECK  1 Runs  2 Run  3 Approvals ...                          alice · read-only · 14:03:22
    engines 1 alive │ runs 3 active · 120 completed · 2 failed (1h) │ spend $0.12/min · cap n/a
    breakers n/a │ approvals n/a │ kill switches n/a │ safe-mode n/a │ incidents n/a

HOW A FEATURE ADDS A SLOT (breakers, approvals...): write a fetch function that runs on a worker thread and returns
a SlotValue (text, level, a short form, an alarm sentence), and register it with `register_header_slot(HeaderSlot(
id, label, fetch, row=2))`, replacing the "n/a" placeholder with the same id (console/header_slots.py).

A critical slot's `alarm` (level "crit") replaces the hint line's sentence; a `halt` text shows the banner nobody
can miss (a global kill switch, safe mode); an empty text is not shown. Fetches run in the header's poller thread,
once a second, each with the poll's TraceReader and ControlDB; keep them to a few short queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.output import usd
from console.widgets.safe import printable
from console.widgets.store_trouble import store_trouble

if TYPE_CHECKING:
    from engine.store.control import ControlStore
    from engine.store.reader_protocol import TraceReads

# Severity levels, in increasing order of urgency. Colour always comes with the words of the value itself.
LEVELS = ("na", "ok", "info", "warn", "crit")
LEVEL_STYLE = {
    "na": "dim",
    "ok": "green",
    "info": "",
    "warn": "bold yellow",
    "crit": "bold white on red",
}

# One ordering of alarms everywhere (issue 15): which critical slot speaks on the hint line, and which slot keeps
# its place longest when a header line is too narrow (console/widgets/header_fit.py). Approvals first only while
# one is about to expire (critical under 30 s: it is lost in seconds); then runs waiting for a reconcile decision,
# incidents, stale engines and a degraded store, breakers, backed-up queues, kill switches, safe mode. The rest after.
ALARM_ORDER = ("approvals", "reconcile", "incidents", "engines", "breakers", "queues", "kill_switches", "safe_mode",
               "runs", "spend")

WINDOW_S = 3600.0  # "in the last hour"
SPEND_WINDOW_S = 300.0  # spend rate window: runs started in the last 5 minutes
SPEND_SAMPLE = 300  # at most this many newest runs are summed for the spend rate


@dataclass(frozen=True, slots=True)
class SlotValue:
    text: str
    level: str = "ok"
    short: str | None = None  # a shorter text for narrow terminals (<120 columns)
    alarm: str | None = None  # one sentence for the hint line: what is wrong and what to press
    halt: str | None = None  # set: show the global halt banner with this text
    view: str | None = None  # the view the alarm's key opens; on that view the hint says `alarm_here` instead
    alarm_here: str | None = None  # the alarm for an operator already on `view` (a hint never points to it)


@dataclass(frozen=True, slots=True)
class HeaderContext:
    """What a slot's fetch gets (on a worker thread)."""

    reader: TraceReads
    control: ControlStore | None
    now: float
    store_dir: Path | None  # None on a Postgres store (no engine.lock to read)
    cache: dict[str, Any] = field(default_factory=dict)  # per-poll scratch shared by slots


@dataclass(frozen=True, slots=True)
class HeaderSlot:
    id: str
    label: str
    fetch: Callable[[HeaderContext], SlotValue]
    row: int = 1  # 1 or 2: which status line
    issue: str | None = None  # for placeholders: what brings the data
    quiet: bool = False  # shown only while its level is warn or crit (an alarm that is noise when calm)



def urgency(slot_id: str, value: SlotValue) -> tuple[int, int]:
    """How urgent a slot's value is: its level, then its place in ALARM_ORDER. Bigger is more urgent."""
    rank = ALARM_ORDER.index(slot_id) if slot_id in ALARM_ORDER else len(ALARM_ORDER)
    level = LEVELS.index(value.level) if value.level in LEVELS else 0
    return level, -rank


def not_available(issue: str) -> Callable[[HeaderContext], SlotValue]:
    def fetch(ctx: HeaderContext) -> SlotValue:
        return SlotValue("n/a", "na")

    fetch.__doc__ = f"placeholder until {issue}"
    return fetch


HEADER_SLOTS: list[HeaderSlot] = []


def register_header_slot(slot: HeaderSlot, *, before: str | None = None) -> None:
    """Add a slot, or replace the one with the same id (keeping its place)."""
    for index, existing in enumerate(HEADER_SLOTS):
        if existing.id == slot.id:
            HEADER_SLOTS[index] = slot
            return
    if before is not None:
        for index, existing in enumerate(HEADER_SLOTS):
            if existing.id == before:
                HEADER_SLOTS.insert(index, slot)
                return
    HEADER_SLOTS.append(slot)


# -- built-in slots ---------------------------------------------------------------------------------------------

def _engines(ctx: HeaderContext) -> SlotValue:
    if ctx.control is None:
        return SlotValue("none yet", "info")
    from engine.store.control import STALE_AFTER_S

    engines = ctx.control.list_engines()
    # Liveness by the console's clock (list_engines computes it by control.db's): a fixed clock in tests, and one
    # notion of "now" on screen.
    running = [e for e in engines if e.stopped is None]
    alive = [e for e in running if ctx.now - float(e.heartbeat or 0) <= STALE_AFTER_S]
    stale = [e for e in running if e not in alive]
    # The incidents slot: is anything watching the signals? The kill switches slot: which engines must acknowledge.
    ctx.cache["engines"] = {"alive": len(alive), "alive_ids": frozenset(str(e.id) for e in alive)}
    active = ctx.cache.get("runs", {}).get("active", 0)
    if stale:
        who = stale[0]
        since = max(0.0, ctx.now - float(who.heartbeat or ctx.now))
        return SlotValue(f"{len(alive)} alive, {len(stale)} STALE", "crit", short=f"{len(alive)} ok {len(stale)} STALE",
                         alarm=f"Engine pid {who.pid} on {printable(who.host, limit=30)} has sent no "
                               f"heartbeat for {since:.0f}s: check that process (hung or killed).")
    if not alive:
        if active:
            # A store directory's next engine closes them out; on Postgres only an engine back under their id does.
            after = ("will be marked abandoned when an engine next starts" if ctx.store_dir is not None else
                     "stay running until their engine comes back under its id")
            return SlotValue("none alive", "crit", alarm=f"{active} runs say running but no engine is alive: they "
                                                         f"{after}.")
        return SlotValue("none running", "info", short="0 running")
    trouble = store_trouble(ctx.store_dir, alive)
    if trouble is not None:
        state, error = trouble
        if state == "fenced":  # it stalled and another engine took its runs: it is stopping (docs/operations.md)
            return SlotValue(f"{len(alive)} alive · 1 FENCED", "crit", short="FENCED",
                             alarm=f"An engine was fenced: {printable(error, limit=160)}. It stops; its runs go on "
                                   f"on the engine that took them.")
        return SlotValue(f"{len(alive)} alive · store {state.upper()}", "crit", short=f"store {state.upper()}",
                         alarm=f"Trace store {state}: {printable(error, limit=160)}. No new model or tool call starts "
                               f"until commits succeed again: free disk space (see docs/operations.md).")
    return SlotValue(f"{len(alive)} alive", "ok")


def _runs(ctx: HeaderContext) -> SlotValue:
    counts = ctx.reader.count_runs(since=ctx.now - WINDOW_S)
    ctx.cache["runs"] = counts
    active = counts.get("active", 0)
    completed = counts.get("completed", 0)
    failed = sum(counts.get(s, 0) for s in ("failed", "killed", "budget_exceeded", "loop_detected", "abandoned",
                                             "refused"))
    text = f"{active} active · {completed} completed · {failed} failed (1h)"
    short = f"{active} active · {completed} ok · {failed} failed"
    if failed:
        return SlotValue(text, "warn", short=short)
    return SlotValue(text, "ok" if active or completed else "info", short=short)


def _spend(ctx: HeaderContext) -> SlotValue:
    since = ctx.now - SPEND_WINDOW_S
    runs = ctx.reader.list_runs(limit=SPEND_SAMPLE)
    recent = [r for r in runs if (r.started or 0) >= since]
    if not recent:
        return SlotValue("$0/min · cap n/a", "info", short="$0/min")
    total = sum(r.cost_usd or 0.0 for r in recent)
    # When the sample is all inside the window (a busy store), the rate is over what the sample covers.
    covered = SPEND_WINDOW_S
    if len(recent) == len(runs) == SPEND_SAMPLE:
        covered = max(1.0, ctx.now - min(r.started for r in recent))
    rate = total / (covered / 60.0)
    return SlotValue(f"{usd(rate)}/min · cap n/a", "ok", short=f"{usd(rate)}/min")


for _slot in (
    HeaderSlot("engines", "engines", _engines, row=1),
    HeaderSlot("runs", "runs", _runs, row=1),
    HeaderSlot("spend", "spend", _spend, row=1),
    HeaderSlot("breakers", "breakers", not_available("the circuit breakers issue"), row=2,
               issue="circuit breakers"),
    HeaderSlot("approvals", "approvals", not_available("the approvals issue"), row=2, issue="approvals"),
    HeaderSlot("kill_switches", "kill switches", not_available("the kill switches issue"), row=2,
               issue="kill switches"),
    HeaderSlot("safe_mode", "safe-mode", not_available("the flags issue"), row=2, issue="flags / safe mode"),
    HeaderSlot("incidents", "incidents", not_available("the incidents issue"), row=2, issue="incidents"),
):
    register_header_slot(_slot)
# `runs` must run before `engines` (engines reads the active count from the cache): fetch order is by row, then
# this explicit order.
FETCH_ORDER = ("runs", "engines")  # first: slots after them read what they leave in ctx.cache


@dataclass(slots=True)
class HeaderSnapshot:
    values: dict[str, SlotValue]
    alarm: str | None = None
    halt: str | None = None
    error: str | None = None  # the store cannot be read at all
    alarm_view: str | None = None  # the alarm's view, and what it says there (SlotValue.view, .alarm_here)
    alarm_here: str | None = None

    def alarm_on(self, view_id: str) -> str | None:
        """The hint line's alarm for an operator on `view_id`: never "press 3" on view 3."""
        return self.alarm_here if self.alarm_here and view_id == self.alarm_view else self.alarm


def collect(reader: TraceReads, control: ControlStore | None, now: float, store_dir: Path | None) -> HeaderSnapshot:
    """Run every slot's fetch (worker thread). One failing slot shows "error" without hiding the others."""
    ctx = HeaderContext(reader=reader, control=control, now=now, store_dir=store_dir)
    slots = sorted(HEADER_SLOTS, key=lambda s: (s.id not in FETCH_ORDER,))
    values: dict[str, SlotValue] = {}
    first_error: BaseException | None = None
    for slot in slots:
        try:
            values[slot.id] = slot.fetch(ctx)
        except Exception as exc:
            first_error = first_error or exc
            values[slot.id] = SlotValue("error", "crit", alarm=f"{slot.label}: {printable(exc, limit=160)}")
    alarm: SlotValue | None = None
    best: tuple[int, int] | None = None
    halt = None
    for slot in HEADER_SLOTS:
        value = values.get(slot.id)
        if value is None:
            continue
        if value.halt and halt is None:
            halt = value.halt
        # Only critical slots speak on the hint line: anything less would drown the view's own advice. Of those,
        # the first in ALARM_ORDER.
        if value.alarm and value.level == "crit":
            rank = urgency(slot.id, value)
            if best is None or rank > best:
                best, alarm = rank, value
    snapshot = HeaderSnapshot(values=values, alarm=alarm.alarm if alarm else None, halt=halt,
                              alarm_view=alarm.view if alarm else None, alarm_here=alarm.alarm_here if alarm else None)
    if first_error is not None:
        snapshot.error = f"{type(first_error).__name__}: {first_error}"
    return snapshot


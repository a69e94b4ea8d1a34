"""Why a breaker moved, in the words its transitions carry (the store's `breaker.*` events, the console, the CLI).
Plain functions of the window's counts and the config: called only when a breaker changes state."""

from __future__ import annotations

from engine.timefmt import exact_duration

__all__ = ["exceeded", "probe_lost", "probes_succeeded", "probes_timed_out", "wait_elapsed"]


def pct(value: float) -> str:
    """A percentage without a trailing .0: 50, 12.5."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def exceeded(probes: bool, failing: bool, slow: bool, failed: int, slow_calls: int, calls: int,
             failure_threshold: float, slow_threshold: float) -> str:
    """A window (or the half-open probes) over a threshold: which rate, against what."""
    parts = []
    if failing:
        rate = f"{pct(failed * 100 / calls)}% >= {pct(failure_threshold)}%"
        parts.append(("failed: " if probes else "failure rate ") + rate)
    if slow:
        rate = f"{pct(slow_calls * 100 / calls)}% >= {pct(slow_threshold)}%"
        parts.append(("slow: " if probes else "slow call rate ") + rate)
    return ("probes " if probes else "") + "; ".join(parts)


def probes_succeeded(failed: int, slow_calls: int, calls: int, failure_threshold: float,
                     slow_threshold: float) -> str:
    return (f"probes succeeded: failure rate {pct(failed * 100 / calls)}% < {pct(failure_threshold)}%, "
            f"slow call rate {pct(slow_calls * 100 / calls)}% < {pct(slow_threshold)}%")


def wait_elapsed(wait_in_open: float) -> str:
    return f"wait of {exact_duration(wait_in_open)} elapsed"


def probes_timed_out(max_wait: float) -> str:
    return f"probes not completed within {exact_duration(max_wait)}"


def probe_lost(in_flight: float, lost_after: float) -> str:
    return (f"probe lost: in flight for {exact_duration(in_flight)} "
            f"(slow_call_duration + wait_in_open = {exact_duration(lost_after)})")

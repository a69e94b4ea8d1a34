"""Bad input never hurts the engine: hostile YAML, absurd numbers, catastrophic redaction patterns, bad CLI values,
invalid store files on first open, and secrets in what `run` prints. Real files under tmp_path, real subprocesses
(`python -m console.cli ...`); every error is one clear line naming file, line and field, with a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import InputError, InputErrors
from engine.hierarchy.loader import load_hierarchy
from engine.store.redact import Redactor

ROOT = Path(__file__).resolve().parents[2]

HIERARCHY = """
name: t
entry: lead
models:
  small: {model: m, latency: 0, latency_per_token: 0}
agents:
  lead:
    contract: Leads.
    model: small
"""

BILLION_LAUGHS = """
name: t
entry: lead
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
models:
  small: {model: *i}
agents:
  lead: {contract: Leads., model: small}
"""


def flightdeck(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_STORE"}
    proc = subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(path: Path) -> list[InputError]:
    with pytest.raises(InputError) as caught:
        load_hierarchy(path)
    error = caught.value
    return list(error.errors) if isinstance(error, InputErrors) else [error]


# --------------------------------------------------------------------------------------------------- YAML

def test_check_refuses_billion_laughs_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """Before: `check` went past 2 GB and did not answer within a minute. Now: one error with its line, quickly."""
    path = write(tmp_path / "laughs.yaml", BILLION_LAUGHS)
    started = time.monotonic()
    # The child reports its own peak memory (VmHWM, KiB). Not ru_maxrss: Linux carries the peak of the process that
    # exec'd over into it, so the child would report this pytest process's size.
    code = ("import sys\nfrom console.cli import main\ncode = main(['check', sys.argv[1]])\n"
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
            "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{path}:8: expands to more than" in proc.stderr and "aliases" in proc.stderr
    assert elapsed < 10
    assert int(proc.stdout.strip()) < 300 * 1024  # KiB: the interpreter and the CLI, not the expansion


def test_merge_key_bombs_and_recursive_anchors_are_refused(tmp_path: Path) -> None:
    merges = "\n".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 14))
    path = tmp_path / "merge.yaml"
    path.write_text(HIERARCHY + "m0: &m0 {x: 1, y: 2}\n" + merges + "\n", encoding="utf-8")
    (error,) = errors_of(path)
    assert "expands to more than" in error.message and error.line is not None

    path = write(tmp_path / "loop.yaml", HIERARCHY + "x: &x [1, *x]\n")
    (error,) = errors_of(path)
    assert "recursive alias" in error.message and error.line == 9


def test_oversized_and_special_files_are_refused_without_reading_them_whole(tmp_path: Path) -> None:
    from engine.safe_yaml import MAX_INPUT_BYTES

    big = tmp_path / "big.yaml"
    big.write_text(HIERARCHY + "description: '" + "x" * MAX_INPUT_BYTES + "'\n", encoding="utf-8")
    (error,) = errors_of(big)
    assert "larger than 4 MiB" in error.message and error.file == str(big)
    # An endless "file": read no further than the bound.
    (error,) = errors_of(Path("/dev/zero"))
    assert "larger than" in error.message


def test_scenario_and_runbook_front_matter_use_the_same_bounds(tmp_path: Path) -> None:
    hierarchy = write(tmp_path / "h.yaml", HIERARCHY)
    scenario = write(tmp_path / "s.yaml", BILLION_LAUGHS.replace("name: t\nentry: lead\n", "scripts: {}\n"))
    with pytest.raises(InputError) as caught:
        load_hierarchy(hierarchy, scenario=scenario)
    assert caught.value.file == str(scenario) and "expands to more than" in caught.value.message

    runbook_dir = tmp_path / "runbooks"
    write(runbook_dir / "laughs.md", "---\n" + BILLION_LAUGHS.strip() + "\n---\n# body\n")
    proc = flightdeck("runbooks", "check", str(runbook_dir), timeout=30)
    assert proc.returncode == 2 and "laughs.md:9: expands to more than" in proc.stderr, proc.stderr

    from engine.safe_yaml import load_yaml

    with pytest.raises(InputError, match="duplicate key 'a'"):
        load_yaml("a: 1\na: 2\n", file="x.yaml", what="runbook")


# --------------------------------------------------------------------------------------------------- numbers

def test_check_refuses_non_finite_and_absurd_numbers_with_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "numbers.yaml", """
        name: t
        entry: lead
        models:
          small: {model: m, price_in: 1e309, price_out: .nan, max_output_tokens: 10000000000000000000000000000000000000000}
          big: {model: m, context_window: 99999999999999999999999, timeout: .inf, latency: 1000000000d}
        agents:
          lead:
            contract: Leads.
            model: small
            retry: {multiplier: .inf}
            budget: {cost_usd: 1.0e+300, total_tokens: 10000000000000000000000000}
        breakers:
          defaults: {sliding_window_size: 10000000000000000000000000000000000000000}
        """)
    proc = flightdeck("check", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.removeprefix("flightdeck: ").splitlines()
    expected = [
        (4, "models.small.price_in", "finite number"),
        (4, "models.small.price_out", "finite number"),
        (4, "models.small.max_output_tokens", "less than or equal to"),
        (5, "models.big.context_window", "less than or equal to"),
        (5, "models.big.timeout", "finite number"),
        (5, "models.big.latency", "at most 366 days"),
        (10, "agents.lead.retry.multiplier", "finite number"),
        (11, "agents.lead.budget.cost_usd", "less than or equal to"),
        (11, "agents.lead.budget.total_tokens", "less than or equal to"),
        (13, "breakers.defaults.sliding_window_size", "less than or equal to"),
    ]
    for line, field, message in expected:
        assert any(text.startswith(f"{path}:{line}: {field}: ") and message in text for text in lines), \
            (line, field, proc.stderr)


def test_budget_overrides_and_runbook_budgets_refuse_absurd_amounts(tmp_path: Path) -> None:
    proc = flightdeck("run", "deal-desk", "--budget", "tokens=1e40", "--store", str(tmp_path / "store"))
    assert proc.returncode == 2
    assert ("argument --budget: budget override 'tokens': Input should be less than or equal to 1000000000000000"
            in proc.stderr and len(proc.stderr.strip().splitlines()[-1]) < 200), proc.stderr
    text = (ROOT / "runbooks" / "cost-spike.md").read_text(encoding="utf-8")
    assert "run_budget: {cost_usd: 0.5}" in text
    path = write(tmp_path / "runbooks" / "cost-spike.md", text.replace("cost_usd: 0.5", "cost_usd: 1.0e+300"))
    proc = flightdeck("runbooks", "check", str(path.parent))
    assert proc.returncode == 2
    assert f"{path}:16: actions[1].budget.run_budget.cost_usd: expected at most 1e+09, got 1e+300" in proc.stderr


# --------------------------------------------------------------------------------------------------- redaction

def test_a_catastrophic_redaction_pattern_is_refused_before_the_store_is_touched(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for pattern in (r"(a+)+$", r"(\\w+\\s?)+$", r"(x+x+)+y"):
        write(store / "config.toml", f'[secrets]\nenv = []\n\n[redaction]\npatterns = ["cust-[0-9]{{6}}", "{pattern}"]\n')
        started = time.monotonic()
        proc = flightdeck("run", "support-triage", "--speed", "0", "--store", str(store),
                          "--input", "a" * 40 + "!", timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert f"{store / 'config.toml'}:5: redaction.patterns: pattern 1 " in proc.stderr
        assert "catastrophic backtracking" in proc.stderr
        assert time.monotonic() - started < 15
        assert sorted(p.name for p in store.iterdir()) == ["config.toml"]


def test_redaction_runs_under_a_time_bound_and_fails_closed(tmp_path: Path) -> None:
    """A pattern that gets past the load-time probes still cannot stall the writer: each match is time-bounded and
    a string whose matching ran out of time is stored as a marker, never as its unredacted text."""
    from engine.store.user_patterns import TIMED_OUT

    code = textwrap.dedent("""
        import sys, time
        from engine.store.redact import Redactor
        redactor = Redactor(patterns=["(x+x+)+y"], match_timeout=0.05)
        started = time.monotonic()
        out = redactor.clean({"note": "x" * 5000, "ok": "fine"})
        print(repr(out), round(time.monotonic() - started, 3), redactor.timeouts)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out, elapsed, timeouts = proc.stdout.rsplit(" ", 2)
    assert out == repr({"note": TIMED_OUT, "ok": "fine"})
    assert float(elapsed) < 2 and int(timeouts) == 1
    # Patterns still redact what they match, and the built-ins still apply alongside them.
    redactor = Redactor(patterns=["cust-[0-9]{6}"])
    assert redactor.clean_text("cust-123456 and sk-abcdefghijklmnopqrstuv") == "[REDACTED] and [REDACTED]"


def test_a_redaction_timeout_is_an_event_in_the_trace_and_one_line_on_stderr(tmp_path: Path) -> None:
    """Strings stored as the timed-out marker are not silent: the trace records a `redaction.timed_out` event
    with the count, and the engine's process says so once on stderr (not once per string)."""
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from engine.store.engine_store import open_traces_db
        from engine.store.redact import Redactor
        from engine.store.writer import TraceWriter
        path = Path(sys.argv[1])
        open_traces_db(path).close()
        writer = TraceWriter(path, redactor=Redactor(patterns=["(x+x+)+y"], match_timeout=0.02))
        for batch in range(3):
            for i in range(3):
                writer.event(None, None, "note", data={"note": "x" * 3000, "n": i})
            writer.flush()
        writer.close()
        print(writer.redaction_timeouts)
        """)
    db = tmp_path / "traces.db"
    proc = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 1
    warnings = [line for line in proc.stderr.splitlines() if "redaction pattern timed out" in line]
    assert len(warnings) == 1 and "[redaction].patterns" in warnings[0], proc.stderr
    import json
    import sqlite3

    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT data FROM events WHERE kind = 'redaction.timed_out'").fetchall()
        notes = conn.execute("SELECT data FROM events WHERE kind = 'note'").fetchall()
    assert len(events) == 1 and json.loads(events[0][0])["strings"] >= 1, events
    assert all("xxxx" not in row[0] for row in notes) and len(notes) == 9  # fail closed, nothing lost


# --------------------------------------------------------------------------------------------------- CLI values

@pytest.mark.parametrize("args, message", [
    (("run", "deal-desk", "--speed", "nan"), "argument --speed: expected a finite number, got 'nan'"),
    (("run", "deal-desk", "--speed", "inf"), "argument --speed: expected a finite number, got 'inf'"),
    (("demo", "--headless", "--speed", "nan"), "argument --speed: expected a finite number, got 'nan'"),
    (("runs", "--status", "bogus"), "argument --status: unknown status 'bogus' (known: running, completed"),
])
def test_bad_cli_values_are_one_clear_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = flightdeck(*args, "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / ".flightdeck-demo").exists()


def test_an_endless_or_binary_input_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = flightdeck("run", "deal-desk", "--input-file", "/dev/zero", "--store", str(tmp_path / "store"), timeout=30)
    assert proc.returncode == 2 and "/dev/zero: input file is larger than 4 MiB" in proc.stderr, proc.stderr
    binary = tmp_path / "input.bin"
    binary.write_bytes(b"deal \xff\xfe")
    proc = flightdeck("run", "deal-desk", "--input-file", str(binary), "--store", str(tmp_path / "store"))
    assert proc.returncode == 2 and f"{binary}: --input-file: not UTF-8 text (byte 0xff" in proc.stderr, proc.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("action", ["reset", "open", "disable"])
def test_breaker_commands_refuse_an_unknown_key_and_list_the_known_ones(tmp_path: Path, action: str) -> None:
    from tests.console.test_console_views_ops import write_breakers

    store = tmp_path / "store"
    write_breakers(store)
    proc = flightdeck("breakers", action, "tool:nope", "--reason", "x", "--store", str(store))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("flightdeck: KEY: unknown breaker 'tool:nope' (known: model:gpt-4o, "
                                   "tool:crm_lookup, tool:kb_search)")
    assert not (store / "control.db").exists()  # nothing recorded or audited for a typo
    proc = flightdeck("breakers", action, "tool:crm_lookpu", "--reason", "x", "--store", str(store))
    assert proc.returncode == 2 and "did you mean 'tool:crm_lookup'?" in proc.stderr
    proc = flightdeck("breakers", action, "tool:crm_lookup", "--reason", "vendor back", "--store", str(store))
    assert proc.returncode == 0, proc.stderr


def test_a_config_toml_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "config.toml").mkdir(parents=True)
    proc = flightdeck("run", "support-triage", "--speed", "0", "--store", str(store), "--input", "hi")
    assert proc.returncode == 2
    assert f"{store / 'config.toml'}: is a directory, not a config file" in proc.stderr
    proc = flightdeck("run", "support-triage", "--store", str(store), "--config", str(tmp_path), "--input", "hi")
    assert proc.returncode == 2 and f"{tmp_path}: is a directory, not a config file" in proc.stderr
    assert sorted(p.name for p in store.iterdir()) == ["config.toml"]


# --------------------------------------------------------------------------------------------------- first open

def test_an_invalid_store_runbook_leaves_nothing_half_created(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write(store / "runbooks" / "mine.md", "---\nid: mine\n---\n# body\n")
    proc = flightdeck("run", "support-triage", "--speed", "0", "--store", str(store), "--input", "hi")
    assert proc.returncode == 2
    assert f"{store / 'runbooks' / 'mine.md'}:2: title: missing required key" in proc.stderr
    assert sorted(p.name for p in store.iterdir()) == ["runbooks"]
    assert [p.name for p in (store / "runbooks").iterdir()] == ["mine.md"]


# --------------------------------------------------------------------------------------------------- output

SECRET_MODEL = """
name: sec
entry: lead
models:
  small: {model: sk-live0123456789abcdefXYZ, latency: 0, latency_per_token: 0}
agents:
  lead:
    contract: Leads.
    model: small
    retry: {max_attempts: 1}
scripts:
  lead:
    - fault: bad_request
"""


def test_run_json_and_the_summary_are_redacted_like_the_store(tmp_path: Path) -> None:
    """The model name looks like an OpenAI key and lands in the run's error: the store redacts it, and so must
    what `run` prints (a CI log keeps it forever)."""
    path = write(tmp_path / "sec.yaml", SECRET_MODEL)
    store = tmp_path / "store"
    # A configured pattern too: it runs on the regex package, in the trace-writer process as in the CLI.
    write(store / "config.toml", '[redaction]\npatterns = ["simulated [0-9]+"]\n')
    expected = "[REDACTED]: [REDACTED] from [REDACTED]"
    proc = flightdeck("run", str(path), "--store", str(store), "--json", "--input", "hi")
    assert proc.returncode == 1, proc.stderr
    assert "sk-live" not in proc.stdout and f'"error": "{expected}"' in proc.stdout
    proc = flightdeck("run", str(path), "--store", str(store), "--input", "hi")
    assert proc.returncode == 1
    assert "sk-live" not in proc.stdout and expected in proc.stdout
    stored = flightdeck("runs", "--json", "--store", str(store))
    assert "sk-live" not in stored.stdout and stored.stdout.count(f'"error": "{expected}"') == 2

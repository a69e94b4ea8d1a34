"""`flightdeck eval HIERARCHY --dataset FILE`: score a hierarchy on a dataset and compare with a baseline (for CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from console.commands.argtypes import non_negative
from console.output import print_json

if TYPE_CHECKING:
    from engine.evals.compare import Comparison
    from engine.scoring.evals_store import EvalsStore
    from engine.scoring.results import EvalRecord


def _fraction(text: str) -> float:
    value = non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (scores are 0..1), got {text!r}")
    return value


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval", help="score a hierarchy on a dataset and compare with a baseline (for CI)",
        description="Run every case of a JSONL dataset through a hierarchy (on the scripted model unless the "
                    "hierarchy names another), score it with the case's checks (exact, contains, regex, "
                    "json_schema, python, llm_judge), record the results in STORE/evals.db (on a Postgres "
                    "store: its evals tables) and compare them "
                    "with a baseline per agent, per route and per task type.",
        epilog="Exit codes: 0 no regression beyond --max-regression (without --baseline: every case passed); 1 a "
               "regression (without --baseline: a case failed); 2 bad input (hierarchy, dataset, check, baseline, "
               "option); 3 store problem.")
    parser.add_argument("hierarchy", metavar="FILE|NAME", help="hierarchy YAML file or bundled example name")
    parser.add_argument("--dataset", required=True, metavar="FILE", help="JSONL file, one case a line")
    parser.add_argument("--store", metavar="DIR|URL",
                        help="store the runs and the results go to: a directory (its evals.db) or a postgresql:// "
                             "URL (default: $FLIGHTDECK_STORE, else ./.flightdeck)")
    parser.add_argument("--baseline", metavar="ID|latest|FILE",
                        help="an earlier eval's id (or a unique prefix), `latest` (the last eval of this hierarchy "
                             "on a dataset of this file name in the store), or a `flightdeck eval --json` file")
    parser.add_argument("--max-regression", type=_fraction, default=0.05, metavar="R",
                        help="how far a group's mean score may fall below the baseline's (default 0.05)")
    parser.add_argument("--speed", type=non_negative, default=0.0, metavar="X",
                        help="scripted-model speed factor (default 0: no simulated latency)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the scripted model (default 0)")
    parser.add_argument("--provider-url", metavar="URL",
                        help="run the cases on an OpenAI-compatible server (e.g. http://127.0.0.1:11434/v1) instead "
                             "of the hierarchy's models: every model goes there (prices and limits kept)")
    parser.add_argument("--model", metavar="NAME",
                        help="with --provider-url: the model name to send (default: each model's own name)")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help="with --provider-url: the environment variable holding the API key (never printed)")
    parser.add_argument("--judge-url", metavar="URL", help="OpenAI-compatible server for llm_judge checks")
    parser.add_argument("--judge-model", metavar="MODEL", help="model for llm_judge checks")
    parser.add_argument("--judge-key-env", metavar="VAR", help="environment variable holding the judge's API key")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML to FILE")
    parser.set_defaults(handler=handle)


def _baseline(value: str, db: EvalsStore, hierarchy: str, dataset: str) -> EvalRecord | None:
    from engine.evals.compare import read_results_file

    if value == "latest":
        summary = db.latest(hierarchy, dataset)
        return db.load(summary) if summary is not None else None
    path = Path(value)
    if path.is_file() or value.endswith(".json"):
        return read_results_file(path)
    return db.load(db.find(value))


def handle(args: argparse.Namespace) -> int:
    from console.commands.drill import provider_target
    from engine.errors import InputError
    from engine.evals.compare import compare
    from engine.evals.dataset import load_dataset
    from engine.evals.junit import write_junit
    from engine.evals.runner import run_eval
    from engine.hierarchy.loader import load_hierarchy
    from engine.scoring.evals_store import open_evals_store
    from engine.scoring.scorers import JudgeDefaults, build_scorers
    from engine.store import resolve_store_location
    from engine.store.location import PostgresLocation

    from .eval_report import print_report

    location = resolve_store_location(args.store)
    # Runs and results on a Postgres store: an engine wholly there (config from $FLIGHTDECK_CONFIG), its evals tables.
    store = location if isinstance(location, PostgresLocation) else location.path
    target = provider_target(args)  # --provider-url / --model / --api-key-env, checked like `flightdeck drill`'s
    hierarchy = load_hierarchy(args.hierarchy)
    if target is not None:
        from engine.drills.prepare import on_provider

        hierarchy = on_provider(hierarchy, target)  # the models (and the hash) the eval records say so
    dataset = load_dataset(args.dataset)
    scorers = build_scorers(dataset.cases, JudgeDefaults(args.judge_url, args.judge_model, args.judge_key_env))
    if args.junit is not None and not Path(args.junit).resolve().parent.is_dir():
        raise InputError("directory not found", file=args.junit, field="--junit")
    with open_evals_store(store) as db:
        # The baseline is found before anything runs: a bad one is exit 2 with nothing recorded.
        baseline = _baseline(args.baseline, db, hierarchy.name, dataset.name) if args.baseline else None
        if baseline is not None and baseline.hierarchy != hierarchy.name:
            raise InputError(f"the baseline {baseline.id} is an eval of {baseline.hierarchy!r}, not of "
                             f"{hierarchy.name!r}", field="--baseline")
        if not args.json:
            print(f"evaluating {hierarchy.name} on {dataset.path}: {len(dataset.cases)} cases"
                  + (f" on {target.describe()}" if target is not None else ""), file=sys.stderr)
            if args.baseline == "latest" and baseline is None:
                print(f"no earlier eval of {hierarchy.name} on {dataset.name} in {location}: nothing to compare",
                      file=sys.stderr)
        record = run_eval(hierarchy, dataset, scorers, store_dir=store, speed=args.speed, seed=args.seed)
        db.save(record)
    comparison: Comparison | None = (compare(record, baseline, args.max_regression)
                                     if baseline is not None else None)
    if comparison is not None:
        failed = bool(comparison.regressions)
    else:
        failed = record.passed < len(record.cases)
    if args.junit is not None:
        write_junit(args.junit, record, comparison, {c.id: f"{c.file}:{c.line}" for c in dataset.cases})
    if args.json:
        print_json({"eval": record.to_json(), "comparison": comparison.to_json() if comparison else None,
                    "ok": not failed})
    else:
        print_report(record, comparison, str(location))
    return 1 if failed else 0

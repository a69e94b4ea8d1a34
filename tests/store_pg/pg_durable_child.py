"""A durable engine process on a Postgres store (tests/store_pg/pg_durable_support.py says how the tests drive it):
argv = store directory, Postgres URL, mode (run | resume | standby), runs, takeover threshold in seconds."""

from __future__ import annotations

import json
import sys

import anyio

from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, parse_store_location


async def main(store_dir: str, url: str, mode: str, runs: int, stale_after: float) -> None:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    hierarchy = load_hierarchy("deal-desk")
    samples = json.loads((hierarchy.path.parent / "deals.json").read_text())
    store = open_engine_store(store_dir, traces_to=location)
    try:
        engine = Engine(store, latency_scale=0.01, durable=True)
        assert engine.durable is not None
        engine.durable.stale_after = stale_after
        async with engine:
            durable = engine.durable
            if mode == "run":
                requests = [RunRequest(input=samples[i % len(samples)], seed=i) for i in range(runs)]
                results = await engine.run_many(hierarchy, requests, concurrency=3)
                print("done", [r.status for r in results], flush=True)
            elif mode == "resume":
                await durable.wait_resumed()
                print("resumed", json.dumps(durable.resumed), flush=True)
            else:
                print("ready", store.engine_id, flush=True)
                await anyio.to_thread.run_sync(sys.stdin.readline)
                await durable.wait_resumed()
                assert durable.takeover is not None
                print("took", json.dumps({"engine": store.engine_id, "claimed": durable.takeover.claimed,
                                          "runs": durable.resumed}), flush=True)
        if engine.store_failure is not None:  # as `flightdeck run` does: a failed store, or this engine fenced
            print(f"error: {engine.store_failure}", file=sys.stderr, flush=True)
            raise SystemExit(engine.store_failure.exit_code)
    finally:
        store.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))

"""One durable run in a process of its own with its traces on a Postgres store (tests/durable_support.py's Charging
on Postgres, where `flightdeck run` takes no Postgres store yet): argv = store directory, Postgres URL, hierarchy
file, input. Prints the run's status; a crash tool (tests/durable_tools.py) may SIGKILL it mid-run."""

from __future__ import annotations

import sys

import anyio

from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, parse_store_location


async def main(store_dir: str, url: str, path: str, text: str) -> None:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    with open_engine_store(store_dir, traces_to=location) as store:
        async with Engine(store, latency_scale=0.0, runbooks=False, durable=True) as engine:
            result = await engine.run(load_hierarchy(path), RunRequest(input=text or None))
    print(result.status, flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])

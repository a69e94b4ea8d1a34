"""Durable runs: a run is a DBOS workflow whose id is the run id, and every side-effecting tool call is a DBOS
workflow of its own keyed by its structural call path. `host.py` is the only module that imports DBOS (lazily: the
console and `flightdeck runs` never pay its import); `keys.py` and `outcomes.py` are the plain vocabulary the
runtime uses without it."""

"""Scoring runs: the scorers (scorers.py: exact, contains, regex, JSON schema, a Python function; judge.py: an LLM
judge over the openai provider), typed results (results.py), STORE/evals.db (results_db.py) or the same tables on a
Postgres store (results_pg.py), either behind evals_store.py's EvalsStore, and online sampling (sampler.py: the
engine scores a share of a hierarchy's completed live runs after they end).

Below the runtime so that the Engine can sample; `flightdeck eval` (engine/evals/) uses the same pieces.
"""

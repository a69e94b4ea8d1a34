"""Evals: score a hierarchy's answers on a dataset and compare with a baseline (`flightdeck eval`).

dataset.py (the JSONL format and its checks), scorers.py (exact, contains, regex, JSON schema, a Python function)
and judge.py (an LLM judge over the openai provider), runner.py (run each case, read its spans back, score it),
results.py (typed results and their aggregates per agent, route and task type), results_db.py (STORE/evals.db),
compare.py (regressions against a baseline), junit.py (JUnit XML for CI).
"""

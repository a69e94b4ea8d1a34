"""Evals: score a hierarchy's answers on a dataset and compare with a baseline (`flightdeck eval`).

dataset.py (the JSONL format; its checks are engine/hierarchy/eval_checks.py's), runner.py (run each case, read its
spans back, score it), compare.py (regressions against a baseline), junit.py (JUnit XML for CI). The scorers, the
typed results and STORE/evals.db are engine/scoring/, which the runtime's online sampling shares.
"""

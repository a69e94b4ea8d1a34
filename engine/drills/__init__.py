"""Drills: known-bad scenarios run against a hierarchy to prove its guardrails act (`flightdeck drill`).

spec.py (the drill file format), prepare.py (the hierarchy as a drill changes it), runner.py (run and judge),
evidence.py (expectations against the recorded trace), injection.py and attacks.py (prompt-injection drills).
"""

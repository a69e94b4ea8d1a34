"""Guardrails enforced inside the runtime: budgets, circuit breakers, retries, loop detection, approval conditions."""

"""Tests of the engine: store, writer, guardrails, runtime, providers, controls, runbooks, demo."""

"""Runbooks: detections on the engine's event stream, incidents, pages, and audited actions that can be rolled back.

- schema.py       the row vocabulary of its control.db tables (their DDL is the store's, engine.store.runbooks_ddl)
- signals.py      the signal vocabulary: what each signal measures, its scopes and parameters
- model.py        runbook front matter as pydantic models, and {placeholder} rendering for actions
- loader.py       Markdown + YAML front matter with file/line/field errors; where runbooks are found
- windows.py      sliding-window aggregates and the hysteresis that keeps detections from flapping
- detectors.py    event -> sample extraction, one detector per detect condition
- watchdog.py     evaluates every runbook's detections over the committed event stream (step-driven, clocked)
- incidents.py    IncidentStore: open/update incidents, the time line, operator ack/resolve/note (audited)
- actions.py      plan, apply (one audited transaction) and roll back (exactly what was applied) runbook actions
- notify.py       notifier payloads: Slack incoming webhooks, PagerDuty Events API v2, generic webhooks
- pager.py        the asynchronous sender: httpx, retries with back-off, Retry-After, every attempt recorded
- runtime.py      RunbookEngine: the engine-side wiring (on_commit, its own thread, auto-apply and rollback)
- postmortem.py   the Markdown postmortem draft of an incident

Submodules are imported on use (this package imports nothing at import time), so that importing one of them does not
pay for the others.
"""

from __future__ import annotations

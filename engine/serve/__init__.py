"""Serve mode: a long-running engine fed by an HTTP API, webhooks and schedules through DBOS queues.

Public face: `contracts` (what a submission, an admission, a refusal and a queue's published state are, and the
FleetService protocol the HTTP layer talks to) and `fleet` (fleet.yaml: hierarchies, queues, webhooks, schedules)."""

"""The shared peer workload as a Flightdeck hierarchy: a supervisor, three workers, 14 model calls and 12 tool calls
per run, zero-latency scripted model (bench/flightdeck_hierarchy.py, bench/otel_bench.py)."""

HIERARCHY = """
name: bench-peers
entry: supervisor
models:
  fake: {provider: scripted, model: fake, tier: standard, price_in: 0.15, price_out: 0.6, latency: 0}
tools:
  lookup: {function: "bench.peer_tools:lookup", description: "look up x"}
agents:
  supervisor:
    contract: Splits the task across three workers and reports.
    model: fake
    delegates: [worker_0, worker_1, worker_2]
  worker_0: &worker {contract: Looks things up., model: fake, tools: [lookup]}
  worker_1: *worker
  worker_2: *worker
scripts:
  supervisor:
    - delegate:
        - {agent: worker_0, task: subtask 0}
        - {agent: worker_1, task: subtask 1}
        - {agent: worker_2, task: subtask 2}
    - final: all 3 workers reported
  worker_0: &script
    - tool: {name: lookup, args: {x: 0}}
    - tool: {name: lookup, args: {x: 1}}
    - tool: {name: lookup, args: {x: 2}}
    - final: "done: 3"
  worker_1: *script
  worker_2: *script
"""

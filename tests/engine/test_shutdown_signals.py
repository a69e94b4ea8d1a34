"""The engine's signal receiver (engine/runtime/shutdown.py) never loses a signal: asyncio's own handling drops one
whose wake-up byte finds the event loop's self-pipe full, which happens when other threads wake a busy loop often
(the trace writer's acknowledgements do). Real processes, real signals."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import asyncio, os, signal, sys, threading, time
    import anyio
    from engine.runtime.shutdown import SignalReceiver

    async def main():
        loop = asyncio.get_running_loop()
        with SignalReceiver(signal.SIGTERM, signal.SIGHUP) as signals:
            stop = threading.Event()

            def wake_the_loop():
                while not stop.is_set():
                    loop.call_soon_threadsafe(lambda: None)

            waker = threading.Thread(target=wake_the_loop, daemon=True)
            if sys.argv[1] == "busy":
                waker.start()
                await anyio.sleep(0.05)
                time.sleep(0.3)  # the loop is busy while the other thread fills its self-pipe
            os.kill(os.getpid(), signal.SIGTERM)
            if sys.argv[1] == "busy":
                time.sleep(0.05)
                stop.set()
                waker.join()
            with anyio.fail_after(5):
                async for signum in signals:
                    print("received", signal.Signals(signum).name, flush=True)
                    break
        # Leaving restores the default disposition.
        print("restored", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)

    anyio.run(main)
    """)


@pytest.mark.parametrize("loop", ["busy", "idle"])
def test_a_signal_reaches_the_engine_even_when_its_loop_is_busy(loop: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, loop], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["received SIGTERM", "restored True"], proc.stdout + proc.stderr

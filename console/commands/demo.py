"""`flightdeck demo`: a live incident a newcomer can run with one command.

Interactive (default): the engine runs the scenario on a background thread (its own event loop, so the UI never
waits behind it) and the console opens on the same store. `--headless` plays the same scenario without a UI and
exits 0 only if every expected guardrail and control event happened (the project's end-to-end test).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from console.commands.argtypes import duration, positive

DEFAULT_DEMO_STORE = ".flightdeck-demo"
# After a shutdown signal, how long the console gets to close once the engine has stopped its runs. A terminal that
# stopped reading (a dropped ssh session, a frozen tmux client) wedges Textual's output: the UI never closes, and
# without this the process would hold the store's lock for ever.
UI_CLOSE_S = 10.0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="run a live incident on the bundled deal-desk fleet",
        description="Start the engine on a fresh demo store, play a three-minute incident (flaky tool, looping "
                    "worker, an approval, a spend spike) and open the console on it. No configuration, no keys, "
                    "no network beyond 127.0.0.1.")
    parser.add_argument("--store", metavar="DIR",
                        help=f"demo store directory (default: ./{DEFAULT_DEMO_STORE}, made fresh each time)")
    parser.add_argument("--speed", type=positive, default=1.0, metavar="X",
                        help="scenario speed: 2 plays the three minutes in 90 s (default 1)")
    parser.add_argument("--seed", type=int, default=7, metavar="S", help="scenario seed (default 7)")
    parser.add_argument("--headless", action="store_true",
                        help="no UI: play the scenario, print what fired, exit 0 if everything expected happened")
    parser.add_argument("--reset", action="store_true",
                        help="delete the demo store first (the default store is always reset)")
    parser.add_argument("--operator", metavar="NAME", help="your name in the audit log (default: OS user)")
    parser.add_argument("--grace", type=duration, default=30.0, metavar="DURATION",
                        help="on SIGTERM/SIGHUP, how long runs in flight may finish before they are killed "
                             "(default 30s; a second signal kills at once); exit code 143")
    parser.set_defaults(handler=handle)


def _fresh_store(args: argparse.Namespace) -> Path:
    if args.store is None:
        store = Path(DEFAULT_DEMO_STORE)
        reset = True  # the default demo store is the demo's own: a second run always starts clean
    else:
        from engine.store import resolve_store_dir

        store = resolve_store_dir(args.store)  # a Postgres URL: PostgresNotSupported, not a directory named after it
        reset = args.reset
    if reset and store.exists():
        if not (store / "traces.db").exists() and any(store.iterdir()):
            from engine.errors import InputError

            raise InputError(f"{store} exists and is not a Flightdeck store: refusing to delete it", field="--store")
        shutil.rmtree(store)
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    return store


def handle(args: argparse.Namespace) -> int:
    from engine.errors import InputError

    if args.speed <= 0:
        raise InputError(f"must be positive, got {args.speed}", field="--speed")
    store = _fresh_store(args)
    if args.headless:
        from engine.demo.headless import run_headless

        return run_headless(store, speed=args.speed, seed=args.seed, grace=args.grace)
    return _interactive(store, args)


def _interactive(store: Path, args: argparse.Namespace) -> int:
    import asyncio
    import getpass
    import os
    import signal
    from functools import partial

    import anyio

    from console.app import create_app
    from engine.demo.pager import PageReceiver, summarize
    from engine.demo.runbooks import install_demo_runbooks
    from engine.demo.scenario import DemoScenario, write_demo_config
    from engine.runbooks.loader import check_store_runbooks
    from engine.runtime.engine import Engine
    from engine.runtime.shutdown import SHUTDOWN_SIGNALS, Shutdown, watch_signals
    from engine.store import open_engine_store

    print(f"flightdeck demo: store {store.resolve()} (speed {args.speed:g})", file=sys.stderr)
    pager = PageReceiver(store).start()
    write_demo_config(store, pager.url)
    install_demo_runbooks(store, args.speed)
    # Opened here so a problem is a clear error before the UI starts.
    engine_store = open_engine_store(store, input_checks=[check_store_runbooks])
    operator = args.operator or os.environ.get("FLIGHTDECK_OPERATOR") or getpass.getuser()
    app = create_app(store, operator=operator, read_only=False)
    stop = threading.Event()
    failure: list[BaseException] = []

    # The engine's thread never waits for the UI (not app.call_from_thread, which does): a terminal that stopped
    # reading wedges Textual's output, and an engine waiting on it could not even stop its runs on SIGTERM.
    def hint(text: str) -> None:
        if app.is_running:
            _post_to_ui(app, partial(app.set_hint, text))
        else:  # the UI is still starting: it shows this as soon as its main screen exists
            app.set_hint(text)

    def page(received: dict[str, Any]) -> None:
        if app.is_running:
            _post_to_ui(app, partial(app.notify, summarize(received), title="page sent to on-call", timeout=10))

    pager.listeners.append(page)

    # SIGTERM/SIGHUP (and SIGINT: the UI reads Ctrl-C as a key) arrive on this, the UI's thread; the engine, on its
    # own thread, handles them as `flightdeck run` does (engine.runtime.shutdown), then the UI closes.
    shutdown = Shutdown()
    signals_in: list[int] = []  # caught before the engine's loop was there to take them
    forward: list[tuple[asyncio.AbstractEventLoop, Any]] = []

    def on_signal(signum: int, frame: Any) -> None:
        if not forward:
            signals_in.append(signum)
            return
        loop, send = forward[0]
        try:
            loop.call_soon_threadsafe(_deliver, send, signum)
        except RuntimeError:  # the engine's loop has closed: it is stopping anyway
            pass

    wedged: list[bool] = []

    async def play(scenario: DemoScenario) -> None:
        await scenario.run()  # returns only once stopped by a signal and its runs have ended
        if not app.is_running:
            return
        _post_to_ui(app, app.exit)
        with anyio.move_on_after(UI_CLOSE_S):
            await anyio.to_thread.run_sync(stop.wait, abandon_on_cancel=True)
        if not stop.is_set():
            wedged.append(True)
            stop.set()  # the engine stops now; engine_thread then ends the process without the UI

    async def engine_main() -> None:
        send, receive = anyio.create_memory_object_stream[int](16)
        forward.append((asyncio.get_running_loop(), send))
        for signum in signals_in:
            _deliver(send, signum)
        async with Engine(engine_store, latency_scale=1.0 / args.speed) as engine:
            scenario = DemoScenario(engine, speed=args.speed, seed=args.seed, hint=hint, keep_alive=True)

            def notice(line: str) -> None:
                scenario.stop()
                hint(line)

            async with anyio.create_task_group() as group:
                await group.start(partial(watch_signals, receive, engine, args.grace, shutdown, notice))
                group.start_soon(play, scenario)
                await anyio.to_thread.run_sync(stop.wait, abandon_on_cancel=True)
                group.cancel_scope.cancel()

    def engine_thread() -> None:
        try:
            anyio.run(engine_main)
        except BaseException as exc:  # shown after the UI closes; never a silent death
            failure.append(exc)
        if wedged:  # every run's end is recorded; the UI cannot close: release the store and go
            engine_store.close()
            pager.stop()
            _say_without_blocking(f"flightdeck demo: stopped on {shutdown.signal}; the console did not close within "
                                  f"{UI_CLOSE_S:g}s (a terminal that stopped reading?); every run's end is recorded\n")
            os._exit(shutdown.exit_code if shutdown.exit_code is not None else 1)

    previous = {signum: signal.signal(signum, on_signal) for signum in SHUTDOWN_SIGNALS}
    worker = threading.Thread(target=engine_thread, name="flightdeck-demo-engine", daemon=True)
    worker.start()
    try:
        code = app.run() or 0
    finally:
        stop.set()
        worker.join(timeout=args.grace + 15)
        engine_store.close()
        pager.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failure:
        print(f"flightdeck demo: the engine stopped: {failure[0]!r}", file=sys.stderr)
        return 1
    if shutdown.signal is not None:
        print(f"flightdeck demo: stopped on {shutdown.signal}; every run's end is recorded", file=sys.stderr)
    print(f"demo store kept at {store.resolve()}: `flightdeck runs --store {store}` to look again", file=sys.stderr)
    return shutdown.exit_code if shutdown.exit_code is not None else int(code)


def _post_to_ui(app: Any, callback: Any) -> None:
    """Run `callback` on the UI's thread when it gets there, without waiting (Textual's post_message is
    thread-safe; its Callback event is how Textual itself schedules one)."""
    from textual.events import Callback

    app.post_message(Callback(callback=callback))


def _say_without_blocking(text: str) -> None:
    """One line on stderr, dropped rather than waited for: stderr may be the terminal that stopped reading."""
    import os

    try:
        os.set_blocking(2, False)
        os.write(2, text.encode())
    except OSError:
        pass


def _deliver(send: Any, signum: int) -> None:
    try:
        send.send_nowait(signum)
    except Exception:  # a full or closed stream: the engine is already stopping
        pass

"""Flightdeck's human side: the `flightdeck` command line and the Textual operator console."""

import os

# Textual paints at most MAX_FPS frames a second, read from TEXTUAL_FPS when Textual is first imported (this package
# is imported before it on every console path: the command line imports Textual lazily). At the default 60, a frame
# that follows a pause starts one to two periods (17-33 ms) after the previous one, so while a run streams a key
# press waited that long before its frame was even begun. At 120 the wait halves (bench/console_bench.py, 1,000
# events/s: key p50 25-30 -> 16-17 ms) for the same CPU: frames are painted only when something changed, and the
# streaming views change at most once per poll. An operator's own TEXTUAL_FPS wins.
os.environ.setdefault("TEXTUAL_FPS", "120")

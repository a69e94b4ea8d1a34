"""Flightdeck's human side: the `flightdeck` command line and the Textual operator console."""

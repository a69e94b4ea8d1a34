"""Tests of the console and the command line: the Textual app under Pilot, snapshots, CLI subprocesses."""

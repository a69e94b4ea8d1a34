"""Data access per console view, called by the view's Poller on a worker thread: reads of traces.db (TraceReader)
and control.db, and the diffing that sends the UI thread only what changed. No Textual widgets here; the screen
modules in console/screens/ import their feed from here and hold no SQL."""

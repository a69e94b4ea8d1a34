"""The demo's on-call pager: a real HTTP receiver on 127.0.0.1 that runbook notifiers page, so a newcomer sees the
exact payload a Slack, PagerDuty or webhook target would get. Pages are kept in memory and appended to
STORE/demo-pages.jsonl so the console (or a person with `tail -f`) can show them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

PAGES_FILE = "demo-pages.jsonl"


class PageReceiver:
    def __init__(self, store_dir: Path) -> None:
        self._file = store_dir / PAGES_FILE
        self.pages: list[dict[str, Any]] = []
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                try:
                    payload: Any = json.loads(body or b"null")
                except ValueError:
                    payload = body.decode("utf-8", "replace")
                receiver._record(self.path, payload)
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-pager", daemon=True)

    @property
    def url(self) -> str:
        # An AF_INET server: its address is (host, port).
        host, port = cast("tuple[str, int]", self._server.server_address[:2])
        return f"http://{host}:{port}"

    def start(self) -> PageReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, path: str, payload: Any) -> None:
        page = {"received": time.time(), "target": path.strip("/") or "page", "payload": payload}
        with self._lock:
            self.pages.append(page)
            with self._file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(page) + "\n")
        for listener in list(self.listeners):
            listener(page)


def summarize(page: dict[str, Any]) -> str:
    """One line for a person: what the page says."""
    payload = page.get("payload")
    if isinstance(payload, dict):
        for key in ("text", "summary", "title"):
            if isinstance(payload.get(key), str):
                return payload[key]
        inner = payload.get("payload")
        if isinstance(inner, dict) and isinstance(inner.get("summary"), str):
            return inner["summary"]
        incident = payload.get("incident")
        if isinstance(incident, dict):
            return str(incident.get("title") or incident.get("runbook") or incident)
    return str(payload)[:200]

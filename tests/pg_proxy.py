"""A TCP relay in front of the test PostgreSQL that can lose a COMMIT's acknowledgement (no tests here).

`CommitDropper` listens on 127.0.0.1 and a free port and relays every connection to the server. Once `arm()`ed, the
next server message that acknowledges a COMMIT (a CommandComplete "COMMIT") is not relayed: the relay closes both
sides instead. The server has committed by the time it sends that message, so the client sees its connection die
with the transaction in: the "committed, but nobody was told" case a writer must not write twice.
"""

from __future__ import annotations

import socket
import threading

# CommandComplete ('C'), length 11 (4 + len("COMMIT\0")), tag "COMMIT".
COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"


class CommitDropper:
    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._armed = threading.Event()
        self.dropped = 0  # COMMIT acknowledgements lost so far
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="commit-dropper", daemon=True)
        self._accepter.start()

    def url(self, database_url: str) -> str:
        """`database_url` (on the real server) as reached through this relay."""
        return database_url.replace(f":{self.server_port}/", f":{self.port}/")

    def arm(self) -> None:
        self._armed.set()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.server_port))
            for source, sink, watch in ((client, server, False), (server, client, True)):
                thread = threading.Thread(target=self._pump, args=(source, sink, watch), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, watch: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if watch and self._armed.is_set() and COMMIT_DONE in data:
                    self._armed.clear()
                    self.dropped += 1
                    break  # the server committed; the client never hears so
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self._closing = True
        self._listener.close()

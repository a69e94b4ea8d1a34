"""Length-prefixed pickle frames between the engine and its trace-writer process (engine/store/writer_process.py).

Both ends are this package, started by the same interpreter, so pickle is safe between them. What the engine hands
the writer is caller data (tool results, model output, arguments): anything that is not a plain JSON-like value is
turned into what the JSON encoder would store for it BEFORE it crosses, so no caller class is ever imported (or its
code run) in the writer process, and an object that cannot be pickled cannot break a frame.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from typing import IO, Any

_HEADER = struct.Struct("!I")
_PROTOCOL = 5
# Kinds the C pickler writes itself (never calling reducer_override) and the JSON encoder takes as they are.
_PLAIN = (type(None), bool, int, float, str, dict, list, tuple, bytes)


def _json_like(obj: Any) -> Any:
    """What engine.store.redact's encoder would make of `obj`, as a plain value (its `default=str` included)."""
    if isinstance(obj, str):  # str subclasses (str enums): the encoder writes their text
        return str.__str__(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return str(obj)


class _SafePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # Called only for objects the C pickler has no built-in rule for (and for subclasses of builtins).
        if type(obj) in _PLAIN or obj is _identity:
            return NotImplemented
        try:
            value = _json_like(obj)
        except Exception as exc:  # a __str__ that raises must not lose the frame
            value = f"<unprintable {type(obj).__name__}: {exc!r}>"
        return _identity, (value,)


def _identity(value: Any) -> Any:
    return value


def encode(message: Any, *, trusted: bool = False) -> bytes:
    """A frame. `trusted`: the message holds only this package's own objects (the writer's options), pickled as
    they are; otherwise caller data is made plain first (see the module docstring)."""
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    (pickle.Pickler if trusted else _SafePickler)(buffer, _PROTOCOL).dump(message)
    data = buffer.getbuffer()
    _HEADER.pack_into(data, 0, len(data) - _HEADER.size)
    del data
    return buffer.getvalue()


def write_frame(fd: int, payload: bytes) -> None:
    """Write a whole frame to a pipe file descriptor (looping over partial writes)."""
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(stream: IO[bytes]) -> Any | None:
    """The next message, or None at a clean end of stream. Raises EOFError on a frame cut short."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise EOFError("trace writer pipe closed inside a frame header")
    (length,) = _HEADER.unpack(header)
    body = stream.read(length)
    if len(body) < length:
        raise EOFError("trace writer pipe closed inside a frame")
    return pickle.loads(body)

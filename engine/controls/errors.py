"""The control plane's own error."""

from __future__ import annotations

from engine.errors import FlightdeckError


class ControlError(FlightdeckError):
    """An operator action that cannot be applied as asked (already decided, expired, nothing to release...)."""

    exit_code = 2

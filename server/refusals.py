"""The one exception for a refused staff action, shared by the control room and its parts."""

from __future__ import annotations


class ControlRoomError(Exception):
    """A refused staff action; `code` is stable, the message is safe to show staff."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

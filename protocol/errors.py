"""Errors that say whose fault a protocol failure is and which status to answer.

Modelled on h11: ``RemoteProtocolError`` means the peer broke the protocol (answer it
with ``status_hint``); ``LocalProtocolError`` means we were asked to build something
invalid (a bug on our side, or bad local configuration).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class. ``status_hint`` is the HTTP status a server should answer with."""

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_hint = status_hint

    def __str__(self) -> str:
        return self.message


class LocalProtocolError(ProtocolError):
    """We tried to produce something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; answer with ``status_hint``."""

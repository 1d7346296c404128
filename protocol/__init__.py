"""fieldcast's wire protocol, sans-IO: no sockets, no database, no framework."""

from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]

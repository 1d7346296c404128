"""The one HTTP client every outgoing call goes through.

Distributions, verification-of-intent GETs, topic fetches and key fetches all go to URLs
that another instance chose, so each call here is treated as hostile territory:

* the URL passes :func:`protocol.addresses.check_url` first (scheme, host, port, …; an
  IP literal is judged there, before anything is resolved or connected);
* every address the host resolves to is judged by :func:`check_address`, and the
  connection is made to one of exactly those addresses (see :class:`_VettingBackend`);
* redirects are never followed: a 3xx comes back as a response (a redirect target
  would be a second, unchecked URL, and WebSub callbacks are exact, REC §5.1.1);
* time-outs for connecting, for each read, and an overall deadline (a server that
  trickles one byte every few seconds defeats read time-outs alone);
* the body is read as a stream and cut at ``max_bytes``; no ``Accept-Encoding`` is
  sent, so what is counted is what is kept (no decompression bombs);
* no proxy settings from the environment (``HTTP_PROXY`` would move the connection
  somewhere the policy never looked), HTTP/1.1 only, bounded keep-alive pools (one
  small pool per origin, see :class:`Outbound`);
* network and policy problems surface only as :class:`OutboundError` subclasses, each
  with a ``reason`` an administrator can read.

Why httpcore and not httpx: httpx 0.28 offers no way to hand its transport a network
backend, and the backend is where the defence against DNS rebinding has to live.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import httpcore

from protocol.addresses import (
    AddressPolicy,
    AddressPolicyError,
    Target,
    check_address,
    check_url,
)

__all__ = [
    "AddressRefused",
    "ConnectFailed",
    "Outbound",
    "OutboundConfig",
    "OutboundError",
    "OutboundResponse",
    "OutboundTimeout",
    "Resolver",
    "ResponseTooLarge",
    "system_resolver",
]

#: host, port -> IP address strings. Injected in tests; never real DNS there.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# A name that resolves to hundreds of addresses is not a callback host; judging and
# trying them all would turn one request into a port scan of the answer.
_MAX_ADDRESSES: Final = 16
_METHOD_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """Limits for every outgoing call; seconds and bytes."""

    policy: AddressPolicy
    #: Resolving the host and opening the TCP (and TLS) connection, together.
    connect_timeout: float = 5.0
    #: Waiting for any one read (or write) to make progress.
    read_timeout: float = 10.0
    #: The whole call, from the first lookup to the last byte of the body.
    total_timeout: float = 30.0
    #: Largest body kept; :meth:`Outbound.request` may lower or raise it per call.
    max_response_bytes: int = 1_048_576
    user_agent: str = "fieldcast"
    #: Open connections at once, across all hosts; further calls wait (within the deadline).
    max_connections: int = 32
    #: Open connections at once to one origin (scheme, host, port).
    max_connections_per_origin: int = 8
    #: How long an idle keep-alive connection is kept for reuse.
    keepalive_expiry: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.policy, AddressPolicy):
            raise TypeError("OutboundConfig.policy must be an AddressPolicy")
        for name in ("connect_timeout", "read_timeout", "total_timeout", "keepalive_expiry"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"OutboundConfig.{name} must be a positive number")
        for name in ("max_response_bytes", "max_connections", "max_connections_per_origin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OutboundConfig.{name} must be a positive int")
        if not self.user_agent.isprintable() or not self.user_agent.isascii():
            raise ValueError("OutboundConfig.user_agent must be printable ASCII")


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """An answer: status, headers (names lower-cased, in order, repeats kept), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


class HttpResponse(Protocol):
    """What the workers read of an answer (``OutboundResponse`` is one)."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    def header(self, name: str) -> str | None: ...

    def header_values(self, name: str) -> list[str]: ...


class HttpClient(Protocol):
    """How the workers send (``Outbound`` is one; tests inject others)."""

    async def request(self, method: str, url: str, *, headers: Sequence[tuple[str, str]] = ...,
                      body: bytes = ..., max_bytes: int | None = ...) -> HttpResponse: ...


class OutboundError(Exception):
    """An outgoing call failed; ``reason`` is a sentence for the admin page and the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class AddressRefused(OutboundError):
    """The address policy refused the URL or an address its host resolves to.

    ``error`` is the protocol-level refusal when there is one; ``status_hint`` is 400
    (the sender's callback is at fault), for a hub endpoint that checks a callback.
    """

    def __init__(self, error: AddressPolicyError | str) -> None:
        if isinstance(error, str):
            error = AddressPolicyError(error)
        super().__init__(error.message)
        self.error = error
        self.status_hint = error.status_hint


class OutboundTimeout(OutboundError):
    """Connecting, a read, or the whole call took longer than allowed."""


class ResponseTooLarge(OutboundError):
    """The body was longer than ``max_bytes``; the connection was dropped."""


class ConnectFailed(OutboundError):
    """The host did not resolve, refused the connection, or failed the TLS handshake."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), TCP addresses, in its order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


class _VettingBackend(httpcore.AsyncNetworkBackend):
    """Resolve, judge and connect in one step, so the address judged is the one used.

    The defence against DNS rebinding: a check that resolves the name, approves the
    answer, and then lets the HTTP library resolve the name *again* to connect can be
    beaten by a DNS server that answers a public address to the check and 127.0.0.1 to
    the connect (a zero TTL is enough). Here there is no second lookup: httpcore asks
    this backend for a connection to (host name, port); the backend resolves the name
    once, refuses the whole call if *any* answer is not allowed (an attacker controls
    which answer a client tries first), and hands the inner backend only the approved
    IP literals — the inner backend never sees a name, so it cannot resolve one.

    TLS is unaffected: httpcore calls ``start_tls`` on the returned stream with
    ``server_hostname`` set to the URL's host name, so SNI carries the name and the
    certificate is verified against the name, not against the IP we connected to.
    A pooled keep-alive connection stays bound to the address it was vetted for.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver,
        inner: httpcore.AsyncNetworkBackend,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner

    async def vetted_addresses(self, host: str, port: int, within: float | None) -> list[str]:
        """The addresses ``host`` resolves to (looked up ``within`` seconds), each approved."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass  # a name: resolve it below
        else:
            # check_url judged it already; judged again here so that no path to a
            # socket skips the policy.
            try:
                return [str(check_address(literal, self._policy))]
            except AddressPolicyError as exc:
                raise AddressRefused(exc) from None
        try:
            async with asyncio.timeout(within):
                answers = await self._resolver(host, port)
        except TimeoutError:
            raise OutboundTimeout(f"looking up {host} took longer than {within} s") from None
        except OSError as exc:
            raise ConnectFailed(f"could not look up {host}: {exc}") from None
        if not answers:
            raise ConnectFailed(f"{host} has no addresses")
        if len(answers) > _MAX_ADDRESSES:
            raise ConnectFailed(
                f"{host} resolves to {len(answers)} addresses; at most {_MAX_ADDRESSES} "
                "are tried"
            )
        vetted: list[str] = []
        for answer in answers:
            try:
                vetted.append(str(check_address(answer, self._policy, host=host)))
            except AddressPolicyError as exc:
                raise AddressRefused(exc) from None
        return vetted

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        addresses = await self.vetted_addresses(host, port, timeout)
        failures: list[str] = []
        for address in addresses:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host} took longer than {timeout} s")
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=remaining, local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
        raise httpcore.ConnectError(f"could not connect to {host} ({'; '.join(failures)})")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ConnectFailed("outgoing calls never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


#: An origin as httpcore pools by it: scheme, host, port.
_Origin = tuple[str, str, int]


class Outbound:
    """The HTTP client for every outgoing call; one per process, closed with :meth:`aclose`.

    ``resolver`` defaults to the system's ``getaddrinfo``. ``network_backend`` is the
    raw connector the vetting backend hands approved IP literals to (default: httpcore's
    anyio backend); ``ssl_context`` the TLS trust (default: httpcore's, certifi). Both
    exist for tests and unusual deployments; neither can bypass the address policy.

    Pooling: one small httpcore pool per origin, at most ``max_connections`` calls at
    once over all of them (a semaphore), and idle pools closed, least recently used
    first, once more than ``max_connections`` connections are open. Why not one pool:
    httpcore's pool, on every request and every response closed, walks *all* its
    connections for each queued request and asks each idle one whether its socket is
    readable - with 16 deliveries in flight over 32 connections that was ~1,100
    connection checks per ping and the largest single cost of a ping
    (bench/federation.py). A per-origin pool walks only its own few connections. Every
    pool connects through the same :class:`_VettingBackend`, so each connection is still
    vetted when it is opened and stays bound to the address vetted then.
    """

    def __init__(
        self,
        config: OutboundConfig,
        *,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._backend = _VettingBackend(
            config.policy,
            resolver or system_resolver,
            network_backend or httpcore.AnyIOBackend(),
        )
        self._ssl_context = ssl_context or httpcore.default_ssl_context()
        self._pools: OrderedDict[_Origin, httpcore.AsyncConnectionPool] = OrderedDict()
        self._busy: dict[_Origin, int] = {}
        self._slots = asyncio.Semaphore(config.max_connections)

    def _pool(self, origin: _Origin) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(origin)
        if pool is None:
            per_origin = min(self.config.max_connections_per_origin,
                             self.config.max_connections)
            pool = self._pools[origin] = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=per_origin,
                max_keepalive_connections=per_origin,
                keepalive_expiry=self.config.keepalive_expiry,
                http1=True,
                http2=False,
                retries=0,  # retrying is the delivery worker's decision, with its policy
                network_backend=self._backend,
            )
        else:
            self._pools.move_to_end(origin)
        return pool

    async def _trim(self) -> None:
        """Close idle pools, least recently used first, while more connections are open
        than ``max_connections`` (a pool in use is never closed under its caller)."""
        # Chosen and removed without an await in between, so concurrent calls never
        # pick the same pool, nor one that a request has started to use meanwhile.
        closing = []
        open_now = sum(len(p.connections) for p in self._pools.values())
        for origin, pool in list(self._pools.items()):
            if self._busy.get(origin):
                continue
            if open_now > self.config.max_connections or not pool.connections:
                # Pools left without connections go too, so that origins seen once do
                # not pile up.
                del self._pools[origin]
                open_now -= len(pool.connections)
                closing.append(pool)
        for pool in closing:
            await pool.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        max_bytes: int | None = None,
    ) -> OutboundResponse:
        """Send one request and read the whole answer, at most ``max_bytes`` of body.

        A 3xx is returned, not followed. Network and policy problems raise
        :class:`OutboundError` subclasses only; ``ValueError`` means a bad argument (a
        lower-case method, a negative limit, a header that is not Latin-1), a bug in the
        caller rather than something the peer did.
        """
        limit = self.config.max_response_bytes if max_bytes is None else max_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
        if not method or not set(method) <= _METHOD_CHARS:
            raise ValueError(f"method must be an upper-case token, got {method!r}")
        try:
            target = check_url(url, self.config.policy)
        except AddressPolicyError as exc:
            raise AddressRefused(exc) from None
        try:
            async with asyncio.timeout(self.config.total_timeout):
                return await self._send(method, target, headers, body, limit)
        except TimeoutError:
            raise OutboundTimeout(
                f"{target.host} did not answer completely within "
                f"{self.config.total_timeout} s"
            ) from None
        except OutboundError:
            raise
        except httpcore.TimeoutException as exc:
            raise OutboundTimeout(_timeout_reason(exc, target, self.config)) from None
        except httpcore.ConnectError as exc:
            raise ConnectFailed(f"could not connect to {target.host}: {exc}") from None
        except httpcore.RemoteProtocolError as exc:
            raise OutboundError(f"{target.host} sent an answer that is not valid HTTP/1.1: "
                                f"{exc}") from None
        except httpcore.LocalProtocolError as exc:
            raise OutboundError(f"could not send the request to {target.host}: {exc}") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                OSError) as exc:
            raise OutboundError(f"the connection to {target.host} failed: "
                                f"{exc or type(exc).__name__}") from None

    async def _send(
        self,
        method: str,
        target: Target,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        limit: int,
    ) -> OutboundResponse:
        # Built from our own parse (Target), never re-parsed from the string: the host
        # httpcore connects to is the host check_url approved.
        url = httpcore.URL(
            scheme=target.scheme.encode("ascii"),
            host=target.host.encode("ascii"),
            port=target.port,
            target=target.target.encode("ascii"),
        )
        names = {name.lower() for name, _ in headers}
        wire = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        if "host" not in names:
            wire.insert(0, (b"Host", target.host_header.encode("ascii")))
        if "user-agent" not in names:
            wire.append((b"User-Agent", self.config.user_agent.encode("ascii")))
        timeouts = {
            "connect": self.config.connect_timeout,
            "read": self.config.read_timeout,
            "write": self.config.read_timeout,
            "pool": self.config.total_timeout,
        }
        # RFC 9110 §8.6: no Content-Length on a GET without content (some servers
        # refuse one); a POST always says how long it is, even when empty.
        content = body if body or method in {"POST", "PUT", "PATCH"} else None
        origin = (target.scheme, target.host, target.port)
        async with self._slots:
            self._busy[origin] = self._busy.get(origin, 0) + 1
            try:
                return await self._exchange(self._pool(origin), method, url, wire, content,
                                            timeouts, target, limit)
            finally:
                self._busy[origin] -= 1
                if not self._busy[origin]:
                    del self._busy[origin]
                await self._trim()

    async def _exchange(
        self,
        pool: httpcore.AsyncConnectionPool,
        method: str,
        url: httpcore.URL,
        wire: list[tuple[bytes, bytes]],
        content: bytes | None,
        timeouts: dict[str, float],
        target: Target,
        limit: int,
    ) -> OutboundResponse:
        async with pool.stream(
            method.encode("ascii"), url, headers=wire, content=content,
            extensions={"timeout": timeouts},
        ) as response:
            answer = [
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in response.headers
            ]
            declared = _content_length(answer)
            if declared is not None and declared > limit:
                raise ResponseTooLarge(
                    f"{target.host} announced a {declared}-byte body; the limit is {limit}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_stream():
                size += len(chunk)
                if size > limit:
                    # Leaving the context closes the half-read connection, so the
                    # rest is never read and the connection is not reused.
                    raise ResponseTooLarge(
                        f"{target.host} sent more than {limit} bytes of body"
                    )
                chunks.append(chunk)
        return OutboundResponse(status=response.status, headers=answer, body=b"".join(chunks))

    async def aclose(self) -> None:
        """Close every pooled connection."""
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()

    async def __aenter__(self) -> Outbound:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name == "content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def _timeout_reason(
    exc: httpcore.TimeoutException, target: Target, config: OutboundConfig
) -> str:
    if isinstance(exc, httpcore.ConnectTimeout):
        return f"connecting to {target.host} took longer than {config.connect_timeout} s"
    if isinstance(exc, httpcore.PoolTimeout):
        return f"no free connection for {target.host} within {config.total_timeout} s"
    return f"{target.host} sent nothing for {config.read_timeout} s"

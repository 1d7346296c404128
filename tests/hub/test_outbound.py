"""The outgoing HTTP client against real loopback servers, spy resolvers and spy backends.

Only 127.0.0.1 is ever connected to. Names are answered by injected resolvers (never
real DNS), and a "public" address only ever reaches :class:`SpyBackend`, which answers
from a canned buffer without touching the network.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import h11
import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.outbound import (
    AddressRefused,
    ConnectFailed,
    Outbound,
    OutboundConfig,
    OutboundError,
    OutboundResponse,
    OutboundTimeout,
    ResponseTooLarge,
    system_resolver,
)
from protocol.addresses import AddressPolicy

PUBLIC_IP = "93.184.216.34"
CANNED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\npublic"


class Server:
    """A small HTTP/1.1 server on 127.0.0.1 (h11 over asyncio streams)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.huge_sent = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0,
                                                  ssl=self.ssl_context)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                await self._route(conn, writer, request, body)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader
                            ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data and conn.their_state is h11.IDLE:
                    return None, b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                self.requests.append({
                    "method": request.method.decode(),
                    "target": request.target.decode(),
                    "headers": [(k.decode(), v.decode()) for k, v in request.headers],
                    "body": body.decode("latin-1"),
                })
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _route(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                     request: h11.Request, body: bytes) -> None:
        path = request.target.decode().split("?")[0]

        async def send(*events: h11.Event) -> None:
            for event in events:
                data = conn.send(event)
                if data:
                    writer.write(data)
            await writer.drain()

        if path == "/echo":
            payload = json.dumps(self.requests[-1]).encode()
            await send(h11.Response(status_code=200, headers=[
                ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                ("X-Multi", "one"), ("X-Multi", "two")]),
                h11.Data(data=payload), h11.EndOfMessage())
        elif path == "/redirect":
            await send(h11.Response(status_code=302, headers=[
                ("Location", "/echo"), ("Content-Length", "5")]),
                h11.Data(data=b"moved"), h11.EndOfMessage())
        elif path == "/gone":
            await send(h11.Response(status_code=410, headers=[("Content-Length", "0")]),
                       h11.EndOfMessage())
        elif path == "/hang":
            await asyncio.sleep(3600)
        elif path == "/drip":
            await send(h11.Response(status_code=200, headers=[
                ("Transfer-Encoding", "chunked")]))
            while True:
                await send(h11.Data(data=b"."))
                await asyncio.sleep(0.1)
        elif path == "/huge":
            await send(h11.Response(status_code=200, headers=[
                ("Transfer-Encoding", "chunked")]))
            chunk = b"x" * 65536
            for _ in range(160):  # 10 MiB if anyone read it all
                await send(h11.Data(data=chunk))
                self.huge_sent += len(chunk)
            await send(h11.EndOfMessage())
        elif path == "/huge-cl":
            await send(h11.Response(status_code=200, headers=[
                ("Content-Length", str(10 * 1024 * 1024))]))
            await asyncio.sleep(3600)
        else:
            await send(h11.Response(status_code=404, headers=[("Content-Length", "0")]),
                       h11.EndOfMessage())


class SpyResolver:
    """Answers names from a script and records every lookup; never real DNS."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class SpyBackend(httpcore.AsyncNetworkBackend):
    """Records every connect. Loopback goes to the real network; anything else gets a
    canned answer and never leaves the process."""

    def __init__(self, canned: bytes = CANNED) -> None:
        self.calls: list[tuple[str, int]] = []
        self.canned = canned
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        self.calls.append((host, port))
        ip = ipaddress.ip_address(host)  # raises on a name: only vetted IPs arrive here
        if ip.is_loopback:
            return await self.real.connect_tcp(host, port, timeout=timeout)
        return httpcore.AsyncMockStream([self.canned])

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    await srv.start()
    yield srv
    await srv.stop()


def make(allow_private: bool = True, allow_http: bool = True, **limits: Any
         ) -> tuple[Outbound, SpyResolver, SpyBackend]:
    resolver = SpyResolver(["127.0.0.1"])
    backend = SpyBackend()
    config = OutboundConfig(AddressPolicy(allow_private=allow_private, allow_http=allow_http),
                            **limits)
    return Outbound(config, resolver=resolver, network_backend=backend), resolver, backend


# --------------------------------------------------------------------------- happy paths


async def test_get_and_post_pass_headers_and_body(server: Server) -> None:
    out, _, backend = make()
    try:
        got = await out.request("GET", f"http://127.0.0.1:{server.port}/echo?a=1",
                                headers=[("Accept", "application/json"), ("X-Two", "a"),
                                         ("X-Two", "b")])
        assert got.status == 200
        seen = json.loads(got.body)
        assert (seen["method"], seen["target"], seen["body"]) == ("GET", "/echo?a=1", "")
        sent = [(k.lower(), v) for k, v in seen["headers"]]
        assert ("host", f"127.0.0.1:{server.port}") in sent
        assert ("user-agent", "fieldcast") in sent
        assert [v for k, v in sent if k == "x-two"] == ["a", "b"]
        assert "content-length" not in dict(sent)  # no body, no length (RFC 9110 §8.6)
        assert got.header("X-MULTI") == "one"
        assert got.header_values("x-multi") == ["one", "two"]
        assert got.header("absent") is None
        assert all(k == k.lower() for k, _ in got.headers)

        posted = await out.request("POST", f"http://127.0.0.1:{server.port}/echo",
                                   headers=[("Content-Type", "application/json"),
                                            ("User-Agent", "fieldcast/1 (+https://a.example)")],
                                   body=b'{"x": 1}')
        seen = json.loads(posted.body)
        assert (seen["method"], seen["body"]) == ("POST", '{"x": 1}')
        sent = [(k.lower(), v) for k, v in seen["headers"]]
        assert ("content-length", "8") in sent
        assert [v for k, v in sent if k == "user-agent"] == ["fieldcast/1 (+https://a.example)"]
    finally:
        await out.aclose()
    assert backend.calls == [("127.0.0.1", server.port)]  # keep-alive: one connection
    assert server.connections == 1


async def test_names_resolve_through_the_injected_resolver(server: Server) -> None:
    out, resolver, backend = make()
    async with out:
        got = await out.request("GET", f"http://hooks.test:{server.port}/echo")
    assert got.status == 200
    assert resolver.calls == [("hooks.test", server.port)]
    assert backend.calls == [("127.0.0.1", server.port)]
    assert ("host", f"hooks.test:{server.port}") in [tuple(h) for h in
                                                     json.loads(got.body)["headers"]]


async def test_redirects_are_returned_not_followed(server: Server) -> None:
    out, _, _ = make()
    async with out:
        got = await out.request("GET", f"http://127.0.0.1:{server.port}/redirect")
    assert (got.status, got.header("location"), got.body) == (302, "/echo", b"moved")
    assert [r["target"] for r in server.requests] == ["/redirect"]


async def test_410_is_a_response(server: Server) -> None:
    out, _, _ = make()
    async with out:
        got = await out.request("POST", f"http://127.0.0.1:{server.port}/gone", body=b"x")
    assert got == OutboundResponse(status=410, headers=[("content-length", "0")], body=b"")


# --------------------------------------------------------------------------- limits


async def test_a_server_that_hangs_times_out(server: Server) -> None:
    out, _, _ = make(read_timeout=0.5, total_timeout=5.0)
    start = time.monotonic()
    async with out:
        with pytest.raises(OutboundTimeout) as info:
            await out.request("GET", f"http://127.0.0.1:{server.port}/hang")
    assert time.monotonic() - start < 2.0
    assert "sent nothing for 0.5 s" in info.value.reason


async def test_a_trickle_hits_the_overall_deadline(server: Server) -> None:
    # Each read makes progress within read_timeout; only the deadline stops it.
    out, _, _ = make(read_timeout=1.0, total_timeout=0.8)
    start = time.monotonic()
    async with out:
        with pytest.raises(OutboundTimeout, match=re.escape("within 0.8 s")):
            await out.request("GET", f"http://127.0.0.1:{server.port}/drip")
    assert time.monotonic() - start < 2.0


async def test_a_slow_lookup_is_a_connect_timeout() -> None:
    async def never(host: str, port: int) -> list[str]:
        await asyncio.sleep(3600)
        return []

    backend = SpyBackend()
    out = Outbound(OutboundConfig(AddressPolicy(allow_http=True), connect_timeout=0.3),
                   resolver=never, network_backend=backend)
    async with out:
        with pytest.raises(OutboundTimeout, match=re.escape("looking up slow.test")):
            await out.request("GET", "http://slow.test/")
    assert backend.calls == []


async def test_a_huge_body_is_cut(server: Server) -> None:
    out, _, _ = make(max_response_bytes=100_000)
    async with out:
        with pytest.raises(ResponseTooLarge, match="more than 100000 bytes"):
            await out.request("GET", f"http://127.0.0.1:{server.port}/huge")
        # The connection was dropped, not drained: the next call opens a new one.
        assert (await out.request("GET", f"http://127.0.0.1:{server.port}/echo")).status == 200
    await asyncio.sleep(0.1)
    assert server.huge_sent < 10 * 1024 * 1024
    assert server.connections == 2


async def test_an_announced_huge_body_is_refused_unread(server: Server) -> None:
    out, _, _ = make()
    async with out:
        with pytest.raises(ResponseTooLarge, match="announced a 10485760-byte body"):
            await out.request("GET", f"http://127.0.0.1:{server.port}/huge-cl")


async def test_max_bytes_per_call(server: Server) -> None:
    out, _, _ = make()
    async with out:
        with pytest.raises(ResponseTooLarge):
            await out.request("GET", f"http://127.0.0.1:{server.port}/echo", max_bytes=10)
        got = await out.request("GET", f"http://127.0.0.1:{server.port}/redirect", max_bytes=5)
        assert got.body == b"moved"


async def test_connection_refused_is_connect_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out, _, _ = make()
    async with out:
        with pytest.raises(ConnectFailed, match=re.escape("could not connect to 127.0.0.1")):
            await out.request("GET", f"http://127.0.0.1:{port}/")


async def test_broken_http_is_an_outbound_error() -> None:
    backend = SpyBackend(canned=b"SMTP ready\r\n\r\n")
    out = Outbound(OutboundConfig(AddressPolicy(allow_http=True)),
                   resolver=SpyResolver([PUBLIC_IP]), network_backend=backend)
    async with out:
        with pytest.raises(OutboundError, match=re.escape("not valid HTTP/1.1")):
            await out.request("GET", "http://public.test/")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("url", "ip"),
    [
        ("http://127.0.0.1:{port}/echo", "127.0.0.1"),
        ("http://10.1.2.3/", "10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]:{port}/echo", "::1"),
        ("http://[::ffff:127.0.0.1]:{port}/echo", "::ffff:7f00:1"),
    ],
)
async def test_private_literals_are_refused_before_any_connection(server: Server, url: str,
                                                                  ip: str) -> None:
    out, resolver, backend = make(allow_private=False)
    async with out:
        with pytest.raises(AddressRefused) as info:
            await out.request("GET", url.format(port=server.port))
    assert info.value.reason.startswith(f"URL names {ip},")
    assert info.value.status_hint == 400
    assert resolver.calls == [] and backend.calls == []
    assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        (["127.0.0.1"], "127.0.0.1, a loopback address"),
        ([PUBLIC_IP, "10.0.0.5"], "10.0.0.5, a private address"),
        (["10.0.0.5", PUBLIC_IP], "10.0.0.5, a private address"),
        ([PUBLIC_IP, "::ffff:127.0.0.1"], "::ffff:7f00:1, an IPv4-mapped address"),
    ],
)
async def test_names_resolving_to_private_addresses_are_refused(server: Server,
                                                                answers: list[str],
                                                                refused: str) -> None:
    resolver = SpyResolver(answers)
    backend = SpyBackend()
    out = Outbound(OutboundConfig(AddressPolicy(allow_http=True)), resolver=resolver,
                   network_backend=backend)
    async with out:
        with pytest.raises(AddressRefused) as info:
            await out.request("GET", f"http://cb.test:{server.port}/echo")
    assert info.value.reason == (f"host cb.test resolves to {refused}"
                                 + info.value.reason.split(refused, 1)[1])
    assert info.value.reason.endswith("; set allow_private_callbacks to allow it")
    assert resolver.calls == [("cb.test", server.port)]
    assert backend.calls == []  # every answer is judged before any connect
    assert server.connections == 0


async def test_http_refused_unless_allowed(server: Server) -> None:
    out, resolver, backend = make(allow_private=True, allow_http=False)
    async with out:
        with pytest.raises(AddressRefused, match="plain http"):
            await out.request("GET", f"http://127.0.0.1:{server.port}/echo")
    assert resolver.calls == [] and backend.calls == [] and server.connections == 0


async def test_dns_rebinding_never_reaches_loopback(server: Server) -> None:
    # First answer public, every later one loopback (a zero-TTL rebinding attack). If
    # anything resolved twice — once to check, once to connect — the second lookup
    # would lead to the real loopback server at this port.
    resolver = SpyResolver([PUBLIC_IP], ["127.0.0.1"])
    backend = SpyBackend()
    out = Outbound(OutboundConfig(AddressPolicy(allow_http=True)), resolver=resolver,
                   network_backend=backend)
    url = f"http://rebind.test:{server.port}/echo"
    async with out:
        first = await out.request("GET", url)
        assert (first.status, first.body) == (200, b"public")
        assert resolver.calls == [("rebind.test", server.port)]  # one lookup per connection
        assert backend.calls == [(PUBLIC_IP, server.port)]  # connected to what was judged
        # The canned answer said Connection: close, so the next call connects anew.
        with pytest.raises(AddressRefused, match=re.escape("resolves to 127.0.0.1")):
            await out.request("GET", url)
    assert len(resolver.calls) == 2
    assert backend.calls == [(PUBLIC_IP, server.port)]
    assert server.connections == 0 and server.requests == []


# --------------------------------------------------------------------------- TLS


def _certificate(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture
async def tls_server(tmp_path: Any) -> AsyncIterator[tuple[Server, bytes, list[str | None]]]:
    cert, key = _certificate("fieldcast.test")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    ctx.sni_callback = lambda _obj, name, _ctx: names.append(name)
    srv = Server(ssl_context=ctx)
    await srv.start()
    yield srv, cert, names
    await srv.stop()


async def test_tls_verifies_the_name_and_sends_sni(
    tls_server: tuple[Server, bytes, list[str | None]],
) -> None:
    srv, cert, names = tls_server
    trust = ssl.create_default_context(cadata=cert.decode())
    resolver = SpyResolver(["127.0.0.1"])
    backend = SpyBackend()
    out = Outbound(OutboundConfig(AddressPolicy(allow_private=True)), resolver=resolver,
                   network_backend=backend, ssl_context=trust)
    async with out:
        got = await out.request("GET", f"https://fieldcast.test:{srv.port}/echo")
        assert got.status == 200
        assert names == ["fieldcast.test"]  # SNI carries the name, not the IP
        assert backend.calls == [("127.0.0.1", srv.port)]  # while the socket went to the IP
        # The same vetted IP under another name: the certificate does not match.
        with pytest.raises(ConnectFailed, match=re.escape("could not connect to other.test")):
            await out.request("GET", f"https://other.test:{srv.port}/echo")
    assert len(srv.requests) == 1


# --------------------------------------------------------------------------- misc


async def test_bad_arguments_are_value_errors() -> None:
    out, _, _ = make()
    async with out:
        with pytest.raises(ValueError):
            await out.request("get", "http://127.0.0.1/")
        with pytest.raises(ValueError):
            await out.request("GET", "http://127.0.0.1/", max_bytes=-1)
    with pytest.raises(ValueError):
        OutboundConfig(AddressPolicy(), total_timeout=0)
    with pytest.raises(ValueError):
        OutboundConfig(AddressPolicy(), max_response_bytes=0)


def test_address_refused_can_be_made_from_a_sentence() -> None:
    error = AddressRefused("callback host is on the block list")
    assert (error.reason, error.status_hint) == ("callback host is on the block list", 400)


async def test_system_resolver_shape() -> None:
    # A numeric host: getaddrinfo answers without asking any DNS server.
    assert await system_resolver("127.0.0.1", 80) == ["127.0.0.1"]


async def test_pools_per_origin_keep_the_total_bound(server: Server) -> None:
    # One small pool per origin; once more than max_connections are open, idle pools
    # close (least recently used first) and their next call connects (and is vetted) anew.
    resolver = SpyResolver(["127.0.0.1"])
    backend = SpyBackend()
    out = Outbound(OutboundConfig(AddressPolicy(allow_http=True, allow_private=True),
                                  max_connections=2), resolver=resolver,
                   network_backend=backend)
    names = ["a.test", "b.test", "c.test", "a.test", "c.test"]
    async with out:
        for name in names:
            got = await out.request("GET", f"http://{name}:{server.port}/echo")
            assert got.status == 200
            assert sum(len(p.connections) for p in out._pools.values()) <= 2
        # a.test's pool was closed when c.test opened the third connection; c.test's
        # connection was kept and reused.
        assert [host for host, _ in resolver.calls] == ["a.test", "b.test", "c.test",
                                                         "a.test"]
        assert server.connections == 4
    assert out._pools == {}

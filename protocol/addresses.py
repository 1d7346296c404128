"""Where fieldcast may send a request: the callback / fetch address policy, sans-IO.

Every outgoing call (a distribution POST, a verification GET, a topic or key fetch) goes
to a URL that someone on another instance chose. Without a policy, a subscriber could
name ``http://169.254.169.254/`` (cloud metadata), ``http://10.0.0.5:6379/`` (a Redis
next door) or a name that resolves to either, and our server would do the request for
them (server-side request forgery). Two checks, both pure:

* :func:`check_url` before any IO: scheme, host, port, no userinfo, a length bound. It
  returns a :class:`Target`, the one parse of the URL the caller then connects with, so
  no second URL parser can disagree about which host is meant.
* :func:`check_address` for each IP the host resolves to (and for an IP literal in the
  URL): refuses every address that is not a public unicast address, unless
  ``allow_private``. IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64,
  Teredo) are judged by the IPv4 address they lead to.

The tables below are explicit rather than ``ipaddress``'s ``is_private``/``is_global``:
those flags changed meaning between Python patch releases (CVE-2024-4032), and a refusal
message should name the range and the RFC that make an address unsuitable.

Doing the IO — resolving, and connecting only to an address this module approved — is
``hub.outbound``'s job.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from protocol.errors import LocalProtocolError

__all__ = [
    "HTTP_SETTING",
    "MAX_URL_LENGTH",
    "PRIVATE_SETTING",
    "AddressPolicy",
    "AddressPolicyError",
    "IPAddress",
    "Target",
    "check_address",
    "check_url",
    "non_public_reason",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Longer URLs are refused before parsing. Callbacks are stored and sent back to their
#: owner on every distribution; RFC 9110 §4.1 only asks for 8000 octets of support, and
#: real callbacks are a fraction of this.
MAX_URL_LENGTH: Final = 4096
#: The settings a refusal message points the administrator to.
PRIVATE_SETTING: Final = "allow_private_callbacks"
HTTP_SETTING: Final = "allow_http_callbacks"

_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
# Control characters, space and backslash: browsers and servers disagree on what a
# backslash or a tab in an authority means, and that disagreement is how policy checks
# get bypassed (``http://public.example\@10.0.0.1/``). A callback has no reason to
# contain any of them unescaped.
_FORBIDDEN_CHARS: Final = frozenset(chr(c) for c in range(0x21)) | {"\x7f", "\\"}


class AddressPolicyError(LocalProtocolError):
    """A URL or an address the policy refuses; ``status_hint`` 400 (the sender's callback).

    ``address`` is the refused IP when the refusal is about one, else ``None``.
    """

    def __init__(
        self, message: str, *, address: IPAddress | None = None, status_hint: int = 400
    ) -> None:
        super().__init__(message, status_hint=status_hint)
        self.address = address


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """What outgoing calls may reach. The defaults are the only safe ones on the Internet.

    ``allow_private``: also private, loopback, link-local … addresses (a test setup, or
    instances on one private network). ``allow_http``: plain ``http://`` as well as https.
    """

    allow_private: bool = False
    allow_http: bool = False

    def __post_init__(self) -> None:
        for name in ("allow_private", "allow_http"):
            if not isinstance(getattr(self, name), bool):
                raise LocalProtocolError(f"AddressPolicy.{name} must be a bool")


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed :func:`check_url`, split into what a connection needs.

    ``host`` is lower-case ASCII, without brackets for an IPv6 literal; ``ip`` is set when
    the URL names an IP literal (already judged by :func:`check_address`); ``target`` is
    the request target (path and query, at least ``/``; the fragment is dropped, it is
    never sent).
    """

    scheme: str
    host: str
    port: int
    target: str
    ip: IPAddress | None = None

    def __post_init__(self) -> None:
        if self.scheme not in _DEFAULT_PORTS:
            raise LocalProtocolError(f"scheme must be http or https, got {self.scheme!r}")
        if not self.host or not self.host.isascii():
            raise LocalProtocolError(f"host must be non-empty ASCII, got {self.host!r}")
        if isinstance(self.port, bool) or not 0 < self.port < 65536:
            raise LocalProtocolError(f"port must be 1..65535, got {self.port!r}")
        if not self.target.startswith("/"):
            raise LocalProtocolError(f"request target must start with '/', got {self.target!r}")

    @property
    def host_header(self) -> str:
        """The ``Host`` value (RFC 9110 §7.2): brackets for IPv6, the port unless default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"


# --------------------------------------------------------------------------- tables

# (network, what it is). First match wins, so narrower entries come first. Everything
# here is refused unless allow_private; an address in none of them is public.
_IPV4_RANGES: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = tuple(
    (ipaddress.IPv4Network(net), what)
    for net, what in (
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "a 'this network' address (RFC 791)"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a shared address space address (carrier-grade NAT, RFC 6598)"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (RFC 3927; cloud metadata lives here)"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.0.0.0/24", "an IETF protocol assignment (RFC 6890)"),
        ("192.0.2.0/24", "a documentation address (RFC 5737)"),
        ("192.88.99.0/24", "a 6to4 relay anycast address (RFC 7526)"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
        ("198.51.100.0/24", "a documentation address (RFC 5737)"),
        ("203.0.113.0/24", "a documentation address (RFC 5737)"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address (RFC 1112)"),
    )
)
_IPV6_RANGES: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = tuple(
    (ipaddress.IPv6Network(net), what)
    for net, what in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "a deprecated IPv4-compatible address (RFC 4291)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
        ("100::/64", "a discard-only address (RFC 6666)"),
        ("2001:2::/48", "a benchmarking address (RFC 5180)"),
        ("2001:10::/28", "an ORCHID address (RFC 4843)"),
        ("2001:20::/28", "an ORCHIDv2 address (RFC 7343)"),
        ("2001:db8::/32", "a documentation address (RFC 3849)"),
        ("3fff::/20", "a documentation address (RFC 9637)"),
        ("fc00::/7", "a unique local (private) address (RFC 4193)"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a deprecated site-local address (RFC 3879)"),
        ("ff00::/8", "a multicast address"),
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 form leads to, and the form's name, if it carries one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "an IPv4-mapped address"
    if ip.sixtofour is not None:
        return ip.sixtofour, "a 6to4 address"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "a NAT64 address"
    if ip.teredo is not None:
        # (server, client): packets are relayed to the client's (de-obfuscated) address.
        return ip.teredo[1], "a Teredo address"
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (a phrase for a message), or ``None``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return "a scoped address (it names a local network interface)"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner, form = embedded
            reason = non_public_reason(inner)
            return None if reason is None else f"{form} that embeds {inner}, {reason}"
        for net6, what in _IPV6_RANGES:
            if ip in net6:
                return what
    else:
        for net4, what in _IPV4_RANGES:
            if ip in net4:
                return what
    # Backstop for ranges the tables do not name (e.g. the rest of 2001::/23, IETF
    # protocol assignments): anything Python does not consider global is refused too.
    if not ip.is_global:
        return "not a globally routable address"
    return None


def check_address(
    address: str | IPAddress, policy: AddressPolicy, *, host: str | None = None
) -> IPAddress:
    """Judge one address: return it parsed, or raise :class:`AddressPolicyError`.

    ``host`` is the name it was resolved from, for the message; ``None`` means the URL
    named the address itself.
    """
    if isinstance(address, str):
        try:
            ip: IPAddress = ipaddress.ip_address(address)
        except ValueError as exc:
            raise AddressPolicyError(f"{address!r} is not an IP address") from exc
    else:
        ip = address
    if policy.allow_private:
        return ip
    reason = non_public_reason(ip)
    if reason is None:
        return ip
    where = f"host {host} resolves to {ip}" if host is not None else f"URL names {ip}"
    raise AddressPolicyError(
        f"{where}, {reason}; set {PRIVATE_SETTING} to allow it", address=ip
    )


def check_url(url: str, policy: AddressPolicy) -> Target:
    """Check ``url`` before any IO; raise :class:`AddressPolicyError` with the reason.

    An IP literal is judged here already, so a refused one never reaches a resolver or
    a socket. A name is not resolved here: that is IO, and only the connection that
    resolves it can make sure the address it checks is the one it connects to.
    """
    if not isinstance(url, str):
        raise AddressPolicyError(f"a URL must be a string, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise AddressPolicyError(
            f"URL is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed"
        )
    if any(ch in _FORBIDDEN_CHARS for ch in url):
        raise AddressPolicyError(
            f"URL {url!r} contains a space, a control character or a backslash; "
            "percent-encode them"
        )
    if not url.isascii():
        raise AddressPolicyError(
            f"URL {url!r} contains non-ASCII characters; use the xn-- (IDNA) form of the "
            "host and percent-encode the rest"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressPolicyError(f"URL {url!r} is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme == "http":
        if not policy.allow_http:
            raise AddressPolicyError(
                f"URL {url!r} is plain http; only https is allowed "
                f"(set {HTTP_SETTING} to allow http)"
            )
    elif scheme != "https":
        raise AddressPolicyError(f"URL {url!r} must start with https://")
    if "@" in parts.netloc:
        # Userinfo is deprecated (RFC 9110 §4.2.4) and is the classic way to make a URL
        # look like it points somewhere it does not.
        raise AddressPolicyError(f"URL {url!r} contains a user name or password; remove it")
    host = parts.hostname  # lower-cased, brackets removed
    if not host:
        raise AddressPolicyError(f"URL {url!r} has no host")
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise AddressPolicyError(f"URL {url!r} has an empty or zero port")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")
    ip: IPAddress | None = None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if bracketed:
            raise AddressPolicyError(f"URL {url!r}: [{host}] is not an IPv6 address") from None
        if not _is_hostname(host):
            raise AddressPolicyError(f"URL {url!r}: {host!r} is not a valid host name") from None
    else:
        if isinstance(ip, ipaddress.IPv6Address) and not bracketed:
            raise AddressPolicyError(f"URL {url!r}: an IPv6 address must be in brackets")
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            raise AddressPolicyError(f"URL {url!r} names a scoped IPv6 address; remove %zone")
        ip = check_address(ip, policy)
    return Target(
        scheme=scheme, host=host, port=port or _DEFAULT_PORTS[scheme], target=target, ip=ip
    )


def _is_hostname(host: str) -> bool:
    """RFC 1123 labels; one trailing dot allowed. Shorthand IPv4 (``127.1``) is refused:
    resolvers turn it into an address, which only :func:`check_address` may judge."""
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return False  # 127.1, 2130706433, 0x7f.1: numeric forms getaddrinfo accepts
    for label in labels:
        if not 0 < len(label) <= 63 or label.startswith("-") or label.endswith("-"):
            return False
        if not all(ch.isalnum() or ch in "-_" for ch in label):
            return False
    return True

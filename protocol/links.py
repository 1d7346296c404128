"""RFC 8288 ``Link`` headers and WebSub discovery (REC §4).

The publisher side builds one combined header (:func:`build_link_header`); the
subscriber side parses any number of them (:func:`parse_link_header`) and finds the
hubs and the self URL (:func:`discover`).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.urls import check_url

__all__ = ["Discovery", "Link", "build_link_header", "discover", "parse_link_header"]


@dataclass(frozen=True)
class Link:
    """One link-value: the target and its parameters (names lower-cased)."""

    target: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def rels(self) -> tuple[str, ...]:
        # RFC 8288 §3.3: rel is a space-separated list, compared case-insensitively;
        # occurrences after the first MUST be ignored.
        for name, value in self.params:
            if name == "rel":
                return tuple(r.lower() for r in value.split())
        return ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name.lower():
                return value
        return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_link_header(*, hub: str | Sequence[str], self_url: str) -> str:
    """One combined ``Link`` value with every hub and the self URL (REC §7: SHOULD combine)."""
    hubs = [hub] if isinstance(hub, str) else list(hub)
    if not hubs:
        raise LocalProtocolError("a Link header needs at least one hub (REC §4)")
    for url in [*hubs, self_url]:
        check_url("link target", url)
        if ">" in url or "<" in url:
            raise LocalProtocolError(f"link target must not contain < or >: {url!r}")
    parts = [f"<{url}>; rel={_quote('hub')}" for url in hubs]
    parts.append(f"<{self_url}>; rel={_quote('self')}")
    return ", ".join(parts)


# RFC 9110 §5.6.2 tchar.
_TOKEN_CHARS: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


class _LinkParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> RemoteProtocolError:
        # 502: the header came from the server we fetched, and it is that server's bug.
        return RemoteProtocolError(
            f"malformed Link header at character {self.pos}: {what} in {self.text!r}",
            status_hint=502,
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected a token")
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.pos += 1  # opening quote
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise self.fail("unterminated quoted string")

    def links(self) -> list[Link]:
        result: list[Link] = []
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                return result
            if self.peek() == ",":  # RFC 9110 #rule: empty list elements are allowed
                self.pos += 1
                continue
            result.append(self.link())
            self.skip_ws()
            if self.pos < len(self.text):
                if self.peek() != ",":
                    raise self.fail("expected ',' between links")
                self.pos += 1

    def link(self) -> Link:
        if self.peek() != "<":
            raise self.fail("expected '<'")
        end = self.text.find(">", self.pos)
        if end < 0:
            raise self.fail("missing '>'")
        target = self.text[self.pos + 1 : end].strip()
        self.pos = end + 1
        params: list[tuple[str, str]] = []
        while True:
            self.skip_ws()
            if self.peek() != ";":
                return Link(target, tuple(params))
            self.pos += 1
            self.skip_ws()
            if self.peek() in (",", ""):  # a stray trailing ';'
                return Link(target, tuple(params))
            name = self.token().lower()
            self.skip_ws()
            value = ""
            if self.peek() == "=":
                self.pos += 1
                self.skip_ws()
                value = self.quoted() if self.peek() == '"' else self.token()
            params.append((name, value))


def parse_link_header(values: str | Iterable[str], *, base_url: str | None = None) -> list[Link]:
    """Parse one or more ``Link`` header values (RFC 8288 §3) into links, in order.

    Relative targets are resolved against ``base_url`` (RFC 8288 §3.2) when given.
    """
    texts = [values] if isinstance(values, str) else list(values)
    links: list[Link] = []
    for text in texts:
        links.extend(_LinkParser(text).links())
    if base_url is not None:
        links = [Link(urljoin(base_url, link.target), link.params) for link in links]
    return links


@dataclass(frozen=True)
class Discovery:
    """Hubs (in header order) and the self URL from a topic's ``Link`` headers."""

    hubs: tuple[str, ...]
    self_url: str | None


def discover(values: str | Iterable[str], *, base_url: str | None = None) -> Discovery:
    """REC §4 discovery from HTTP ``Link`` headers; more than one ``rel=self`` is refused."""
    hubs: list[str] = []
    selves: list[str] = []
    for link in parse_link_header(values, base_url=base_url):
        if "hub" in link.rels:
            hubs.append(link.target)
        if "self" in link.rels:
            selves.append(link.target)
    if len(set(selves)) > 1:
        raise RemoteProtocolError(
            f"the topic advertises {len(selves)} different rel=self URLs; WebSub allows one",
            status_hint=502,
        )
    return Discovery(tuple(hubs), selves[0] if selves else None)



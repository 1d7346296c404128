"""Every fenced example in PROTOCOL.md, parsed by the project's own code.

Each block's info string names what it is (```json notification, ```http hub-request,
…); this test picks the parser by that tag, so the text cannot drift from the code. An
untagged block, or a tag this test does not know, fails. Signed requests are verified
with the keys the examples publish (the ```json well-known and ```json key blocks), at
the time they say they were signed, so a signature example is a real signature.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from keys.publish import ForeignKey, parse_key, parse_well_known
from protocol import rfc9421
from protocol.digest import header_value
from protocol.documents import dumps, etag, parse_item, parse_notification
from protocol.hubsignature import verify_hub_signature
from protocol.links import discover
from protocol.signatures import (
    CAVAGE_RSA_SHA256,
    RFC9421_ED25519,
    VerifiedSignature,
    detect_profile,
    verify_request,
)
from protocol.websub import (
    Denial,
    SubscribeRequest,
    VerificationRequest,
    decode_form,
    parse_callback_request,
    parse_hub_request,
)

PROTOCOL = Path(__file__).resolve().parent.parent / "PROTOCOL.md"
FENCE = re.compile(r"^(?P<fence>```|~~~)(?P<info>[^\n]*)\n(?P<text>.*?)^(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    line: int
    info: str
    text: str

    @property
    def tag(self) -> str:
        words = self.info.split()
        return " ".join(words[:2])

    def __str__(self) -> str:
        return f"PROTOCOL.md line {self.line}: ```{self.info}"


def blocks() -> list[Block]:
    source = PROTOCOL.read_text(encoding="utf-8")
    return [Block(source.count("\n", 0, m.start()) + 1, m.group("info").strip(), m.group("text"))
            for m in FENCE.finditer(source)]


@dataclass
class Message:
    """An HTTP/1.1 message as PROTOCOL.md writes one: start line, headers, blank, body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, text: str) -> Message:
        head, _, body = text.rstrip("\n").partition("\n\n")
        start, *lines = head.split("\n")
        headers = []
        for line in lines:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip() and name, f"not a header line: {line!r}"
            headers.append((name.lower(), value.strip()))
        return cls(start, headers, body.encode("utf-8"))

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def request(self) -> tuple[str, str]:
        """(method, absolute URL as the client addressed it: https + Host + target)."""
        method, target, version = self.start.split(" ")
        assert version == "HTTP/1.1" and target.startswith("/"), self.start
        host = self.header("host")
        assert host, "a request example needs a Host header"
        return method, f"https://{host}{target}"


class Examples:
    """What the blocks publish, for the blocks that refer to it."""

    def __init__(self, all_blocks: list[Block]) -> None:
        self.keys: dict[str, ForeignKey] = {}
        self.secrets: dict[str, str] = {}  # callback -> hub.secret, from hub requests
        for block in all_blocks:
            if block.tag == "json well-known":
                for key in parse_well_known(json.loads(block.text)).keys:
                    self.keys[key.key_id] = key
            elif block.tag == "json key":
                key = parse_key(json.loads(block.text))
                self.keys[key.key_id] = key
            elif block.tag == "http hub-request":
                request = parse_hub_request(decode_form(Message.parse(block.text).body))
                if isinstance(request, SubscribeRequest) and request.secret:
                    self.secrets[request.callback] = request.secret

    def verify(self, message: Message) -> VerifiedSignature:
        """Verify a signed request at the moment it was signed; any failure raises."""
        method, url = message.request()
        profile = detect_profile(message.headers)
        if profile == RFC9421_ED25519:
            now = float(rfc9421.parse_signature_input(message.headers).created)
        else:
            date = message.header("date")
            assert date, "a draft-cavage example needs its Date header"
            now = email.utils.parsedate_to_datetime(date).timestamp()

        def lookup(key_id: str) -> object | None:
            found = self.keys.get(key_id)
            return None if found is None else found.public_key

        return verify_request(method, url, message.headers, message.body, resolve_key=lookup,
                              now=now, replay_cache=None)


def _same_document(parsed: Any, text: str | bytes) -> None:
    # The example holds exactly the members the code writes: nothing missing, nothing
    # extra, no value the parser read differently.
    assert json.loads(dumps(parsed)) == json.loads(text)


def check_well_known(block: Block, ex: Examples) -> None:
    doc = json.loads(block.text)
    instance = parse_well_known(doc)
    assert instance.hub == f"{instance.base_url}/federation/hub"
    assert {k.algorithm for k in instance.keys} == {"ed25519", "rsa"}
    assert list(instance.profiles) == [RFC9421_ED25519, CAVAGE_RSA_SHA256]


def check_key(block: Block, ex: Examples) -> None:
    key = parse_key(json.loads(block.text))
    assert "/.well-known/fieldcast/keys/" in key.key_id


def check_notification_json(block: Block, ex: Examples) -> None:
    _same_document(parse_notification(block.text.encode()), block.text)


def check_item_json(block: Block, ex: Examples) -> None:
    _same_document(parse_item(block.text.encode()), block.text)


def check_hub_request(block: Block, ex: Examples) -> None:
    message = Message.parse(block.text)
    method, url = message.request()
    assert method == "POST" and urlsplit(url).path == "/federation/hub"
    assert message.header("content-type") == "application/x-www-form-urlencoded"
    request = parse_hub_request(decode_form(message.body))
    if message.header("signature") is not None:
        signed = ex.verify(message)
        # A signed request names a callback on the signer's own origin.
        assert urlsplit(signed.key_id).netloc == urlsplit(request.callback).netloc


def check_callback_get(block: Block, ex: Examples) -> None:
    message = Message.parse(block.text)
    method, url = message.request()
    assert method == "GET" and not message.body
    parsed = parse_callback_request(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    assert isinstance(parsed, VerificationRequest | Denial)


def check_notification_post(block: Block, ex: Examples) -> None:
    message = Message.parse(block.text)
    method, url = message.request()
    assert method == "POST" and message.header("content-type") == "application/json"
    assert urlsplit(url).path.startswith("/federation/callback/"), url
    signed = ex.verify(message)
    ping = parse_notification(message.body)
    _same_document(ping, message.body)
    links = discover([v for n, v in message.headers if n == "link"])
    assert links.self_url == ping.topic and links.hubs
    assert urlsplit(signed.key_id).netloc == urlsplit(ping.topic).netloc


def check_topic_get(block: Block, ex: Examples) -> None:
    message = Message.parse(block.text)
    method, _ = message.request()
    assert method == "GET" and not message.body
    ex.verify(message)


def _response(block: Block) -> tuple[Message, Any]:
    message = Message.parse(block.text)
    assert message.start == "HTTP/1.1 200 OK", message.start
    assert message.header("content-type") == "application/json"
    doc = parse_item(message.body)
    _same_document(doc, message.body)
    links = discover([v for n, v in message.headers if n == "link"])
    assert links.self_url == doc.topic and links.hubs
    return message, doc


def check_topic_response(block: Block, ex: Examples) -> None:
    message, doc = _response(block)
    assert message.header("etag") == etag(doc)


def check_fat_ping(block: Block, ex: Examples) -> None:
    message = Message.parse(block.text)
    method, url = message.request()
    assert method == "POST"
    doc = parse_item(message.body)
    _same_document(doc, message.body)
    assert discover([v for n, v in message.headers if n == "link"]).self_url == doc.topic
    # Signed with the hub.secret the subscriber's own example request gave.
    secret = ex.secrets.get(url)
    assert secret, f"no hub-request example subscribes {url} with a hub.secret"
    verify_hub_signature(message.header("x-hub-signature"), message.body, secret)


CHECKS: dict[str, Callable[[Block, Examples], None]] = {
    "json well-known": check_well_known,
    "json key": check_key,
    "json notification": check_notification_json,
    "json item": check_item_json,
    "http hub-request": check_hub_request,
    "http callback-get": check_callback_get,
    "http notification": check_notification_post,
    "http topic-get": check_topic_get,
    "http topic-response": check_topic_response,
    "http fat-ping": check_fat_ping,
}

BLOCKS = blocks()


@pytest.fixture(scope="module")
def examples() -> Examples:
    return Examples(BLOCKS)


def test_every_block_is_tagged_with_a_known_kind() -> None:
    untagged = [str(b) for b in BLOCKS if b.tag not in CHECKS]
    assert not untagged, ("PROTOCOL.md has fenced blocks without a known tag (give each an "
                          f"info string from {sorted(CHECKS)}): {untagged}")


def test_every_kind_has_an_example() -> None:
    assert {b.tag for b in BLOCKS} == set(CHECKS)


def test_both_signature_profiles_have_a_verified_example(examples: Examples) -> None:
    profiles = {detect_profile(Message.parse(b.text).headers) for b in BLOCKS
                if b.tag == "http notification"}
    assert profiles == {RFC9421_ED25519, CAVAGE_RSA_SHA256}


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_example_parses(block: Block, examples: Examples) -> None:
    check = CHECKS.get(block.tag)
    assert check is not None, f"{block}: untagged or unknown kind"
    check(block, examples)

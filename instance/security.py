"""Password hashes (Argon2id) and the random secrets behind sessions and API tokens."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from instance.config import Settings

SESSION_COOKIE = "fieldcast_session"
TOKEN_PREFIX = "fc_"  # noqa: S105 -- a prefix that marks tokens in logs, not a secret


class Passwords:
    """Hashing runs in a thread: Argon2 is slow on purpose and would stall the loop."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Verifying against this when the user does not exist keeps the response time
        # the same, so timing does not reveal which usernames exist.
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, stored, password)


def check_password_strength(password: str) -> str | None:
    """A reason the password is refused, or None."""
    if len(password) < 8:
        return "a password needs at least 8 characters"
    if len(password) > 1024:
        return "a password may have at most 1024 characters"
    return None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What we store for a session or token: a leaked table does not grant access."""
    return hashlib.sha256(secret.encode()).hexdigest()

"""Password hashing with Argon2id (cryptography's implementation).

Hashes are PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``), so
the cost parameters travel with each hash and can be raised later without
invalidating stored passwords. A check against an unknown account runs the
same work against a dummy hash, so the time taken does not tell whether an
account exists.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import string

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

MIN_LENGTH = 10
MAX_LENGTH = 1024
_ALPHABET = string.ascii_letters + string.digits
_SALT_BYTES = 16
_HASH_BYTES = 32


class PasswordError(ValueError):
    """A password does not meet the rules."""


@dataclasses.dataclass(frozen=True)
class Argon2Cost:
    memory_kib: int = 19456
    iterations: int = 2
    lanes: int = 1


class PasswordHasher:
    """Hashes and checks passwords at one configured cost."""

    def __init__(self, cost: Argon2Cost = Argon2Cost()) -> None:
        self.cost = cost
        self._dummy = self.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        kdf = Argon2id(
            salt=os.urandom(_SALT_BYTES),
            length=_HASH_BYTES,
            iterations=self.cost.iterations,
            lanes=self.cost.lanes,
            memory_cost=self.cost.memory_kib,
        )
        return kdf.derive_phc_encoded(password.encode("utf-8"))

    def verify(self, password: str, phc: str | None) -> bool:
        """True if ``password`` matches ``phc``; ``None`` means no account.

        Never raises on a malformed hash: that is a failed check.
        """
        candidate = password.encode("utf-8", "surrogatepass")
        if phc is None:
            self._check(candidate, self._dummy)
            return False
        return self._check(candidate, phc)

    @staticmethod
    def _check(candidate: bytes, phc: str) -> bool:
        try:
            Argon2id.verify_phc_encoded(candidate, phc)
        except (InvalidKey, ValueError):
            return False
        return True


def check_new_password(password: str) -> None:
    """Raise ``PasswordError`` unless ``password`` is acceptable."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"password must have at most {MAX_LENGTH} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in password):
        raise PasswordError("password must not contain control characters")


def generate_password(length: int = 16) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))

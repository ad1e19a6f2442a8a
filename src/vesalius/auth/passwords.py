"""Password hashing (argon2id), the password policy, and generated passwords.

Examples
--------
>>> digest = hash_password("correct horse battery")
>>> verify_password(digest, "correct horse battery")
True
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()

# A hash of a random password: verified against when the account does not exist, so that an
# unknown user name takes as long to refuse as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

# The most common passwords of public breach lists that pass the length rule.
COMMON = frozenset(
    {
        "1234567890",
        "0123456789",
        "qwertyuiop",
        "password12",
        "password123",
        "password1234",
        "iloveyou123",
        "administrator",
        "qwerty12345",
        "1q2w3e4r5t",
        "letmein123",
        "welcome123",
        "changeme123",
        "vesalius123",
    }
)


class PasswordPolicyError(ValueError):
    """The password is refused; the message says why, in words a user can act on."""


def check_policy(password: str, username: str, min_length: int) -> None:
    """Refuse passwords that are short, common, one repeated character or hold the user name."""
    if len(password) < min_length:
        raise PasswordPolicyError(f"the password must have at least {min_length} characters")
    if len(set(password)) < 4:
        raise PasswordPolicyError("the password must use at least 4 different characters")
    if password.lower() in COMMON:
        raise PasswordPolicyError("this password is too common; choose another one")
    if username and username.lower() in password.lower():
        raise PasswordPolicyError("the password must not contain the user name")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(digest: str | None, password: str) -> bool:
    """Whether *password* matches *digest*; ``None`` (no such account) always fails, slowly."""
    try:
        return _HASHER.verify(digest or _DUMMY_HASH, password) and digest is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(digest: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(digest)


def generate_password() -> str:
    """A random password of 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)

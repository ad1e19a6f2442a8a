"""Secret tokens: login session cookies, CSRF tokens and API tokens.

Only SHA-256 digests of session and API tokens are stored. The tokens carry 256 bits of
randomness, so a fast unsalted digest is safe and lets a request be authenticated with one
indexed lookup (argon2 is for low-entropy passwords).

Examples
--------
>>> token = new_api_token()
>>> token.startswith(API_TOKEN_PREFIX) and looks_like_api_token(token)
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "ves_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_token(value: str) -> bool:
    return value.startswith(API_TOKEN_PREFIX) and 40 <= len(value) <= 64


def display_prefix(token: str) -> str:
    """The first characters of a token, shown in lists so users can tell tokens apart."""
    return token[: len(API_TOKEN_PREFIX) + 6]


def same(a: str, b: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode(), b.encode())

"""Errors of the records service; the HTTP layer maps each to a 4xx answer with its message."""

from __future__ import annotations

from vesalius.errors import VesaliusError


class InvalidRecord(VesaliusError):
    """The request is well-formed but cannot be accepted (HTTP 422); the message says why."""


class TooLarge(InvalidRecord):
    """An upload is over its size limit (HTTP 413)."""


class UnsafeContent(InvalidRecord):
    """An upload was refused by a safety check: zip bomb, escaping path, XML entities."""

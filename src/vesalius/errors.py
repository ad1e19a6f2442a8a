"""Domain errors. Protocol adapters map them to DIMSE statuses and HTTP answers."""

from __future__ import annotations


class VesaliusError(Exception):
    """Base class of the errors the services raise on purpose."""


class InvalidInstance(VesaliusError):
    """An incoming instance cannot be archived; the message says why."""


class UidConflict(InvalidInstance):
    """The instance's UIDs contradict the request or what the archive holds.

    DIMSE answers 0xA900, STOW-RS a FailedSOPSequence item with FailureReason 0xA900.
    """

    def __init__(self, message: str, uids: tuple[str, str, str, str]) -> None:
        super().__init__(message)
        # SOP class, SOP instance, study and series UIDs of the refused instance
        self.uids = uids


class StudyMismatch(UidConflict):
    """The instance belongs to another study than the one the request names."""


class SeriesConflict(UidConflict):
    """The instance's series is already archived under another study than the one it names."""


class InstanceRejected(InvalidInstance):
    """An instance filter (a plugin) refused the instance; the message gives its reason."""


class Conflict(VesaliusError):
    """The request contradicts what the archive already holds."""


class NotFound(VesaliusError):
    """The requested object does not exist."""


class InvalidQuery(VesaliusError):
    """A query with a malformed key or value; the message names it."""

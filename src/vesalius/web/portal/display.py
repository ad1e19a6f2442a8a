"""How the portal shows values: one format for each kind, the same on every page.

Dates and times are ISO 8601 (``2024-01-05``, ``2024-01-05 10:15:03 UTC``: no microseconds,
the zone said), person names "Family, Given Middle". ``static/vesalius.js`` does the same for
what the pages draw in the browser (``V.date``, ``V.when``, ``V.person``).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote


def person_name(value: str | None) -> str:
    """A DICOM person name (``Family^Given^Middle^Prefix^Suffix``) as "Family, Given Middle".

    Only the alphabetic group is shown (ideographic and phonetic groups follow an ``=``).

    Examples
    --------
    >>> person_name("Müller^José"), person_name("DOE^JOHN^A^Dr^Jr"), person_name("SMITH")
    ('Müller, José', 'DOE, JOHN A, Dr, Jr', 'SMITH')
    >>> person_name("^Anna"), person_name(None), person_name("Yamada^Tarou=山田^太郎")
    ('Anna', '', 'Yamada, Tarou')
    """
    parts = [p.strip() for p in (value or "").split("=")[0].split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    first = " ".join(p for p in (given, middle) if p)
    return ", ".join(p for p in (family, first, prefix, suffix) if p)


def timestamp(value: dt.datetime | str | None) -> str:
    """A moment as ``YYYY-MM-DD HH:MM:SS UTC`` (stored times are UTC; naive means UTC).

    Examples
    --------
    >>> timestamp("2026-12-02T10:30:46.123456"), timestamp(None)
    ('2026-12-02 10:30:46 UTC', '')
    >>> timestamp(dt.datetime(2026, 12, 2, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    '2026-12-02 10:30:00 UTC'
    """
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def url_part(value: str | None) -> str:
    """A value as one path segment of a URL: ``/``, ``%``, ``#``, ``?`` and spaces escaped.

    Examples
    --------
    >>> url_part("A 1/%#?")
    'A%201%2F%25%23%3F'
    """
    return quote(value or "", safe="")

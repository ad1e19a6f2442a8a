"""Attribute matching, PS3.4 C.2.2.2: the one implementation used by C-FIND and QIDO-RS.

A query value is parsed once into a :class:`Constraint`. The index turns constraints on its
columns into SQL (``vesalius.index.lookup``); :func:`matches` applies the same rules in Python
to attributes the index does not keep as columns.

Examples
--------
>>> c = parse_constraint("PatientName", "PN", "DOE^J*")
>>> matches(c, "Doe^John", fold=True)
True
>>> matches(parse_constraint("StudyDate", "DA", "20200101-20201231"), "20200615")
True
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# VRs whose query values may be ranges (C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})
# VRs for which wildcards have no meaning (C.2.2.2.4): matched as single values.
NO_WILDCARD_VRS = frozenset(
    {
        "DA",
        "TM",
        "DT",
        "SL",
        "SS",
        "US",
        "UL",
        "FL",
        "FD",
        "OB",
        "OW",
        "UN",
        "AT",
        "UV",
        "SV",
        "UI",
        "DS",
        "IS",
    }
)


class MatchingError(ValueError):
    """A query value that breaks the matching rules (e.g. a malformed date range)."""


@dataclass(frozen=True)
class Single:
    """Single value matching: equal, after normalisation."""

    value: str


@dataclass(frozen=True)
class Wildcard:
    """Wildcard matching: ``*`` any sequence, ``?`` any one character."""

    pattern: str

    def regex(self, fold: bool = False) -> re.Pattern[str]:
        pattern = fold_text(self.pattern) if fold else self.pattern
        parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
        return re.compile("".join(parts) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class Range:
    """Range matching of dates, times and date-times; either end may be open (None)."""

    low: str | None
    high: str | None


@dataclass(frozen=True)
class AnyOf:
    """List matching: a UID list, or several values of a multi-valued key; any one may match."""

    options: tuple[Single | Wildcard, ...]


Matcher = Single | Wildcard | Range | AnyOf


@dataclass(frozen=True)
class Constraint:
    """One attribute of a query with its parsed matching rule."""

    keyword: str
    vr: str
    matcher: Matcher


# Letters with a stroke or ligatures have no Unicode decomposition into a base letter.
_NO_DECOMPOSITION = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ħ": "h",
        "Ħ": "H",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "þ": "th",
        "Þ": "TH",
        "ß": "ss",
        "\u0131": "i",  # dotless i
    }
)


def fold_text(value: str) -> str:
    """Case- and accent-insensitive form of a string, for person name matching.

    Examples
    --------
    >>> fold_text("Müller^JOSÉ")
    'muller^jose'
    >>> fold_text("Ødegård^Łukasz")
    'odegard^lukasz'
    """
    decomposed = unicodedata.normalize("NFKD", value.translate(_NO_DECOMPOSITION))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def normalize_date(value: str) -> str:
    """A DA value as ``YYYYMMDD`` (accepting the old ``YYYY.MM.DD`` form)."""
    value = value.strip().replace(".", "")
    if value and not (len(value) == 8 and value.isdigit()):
        raise MatchingError(f"{value!r} is not a date (DA): use YYYYMMDD")
    return value


def normalize_time(value: str, *, upper: bool = False) -> str:
    """A TM value padded to ``HHMMSS.FFFFFF`` so that times compare as strings.

    An upper range bound is padded with the largest values, so ``1200`` ends at 12:00:59.999999.

    Examples
    --------
    >>> normalize_time("0830")
    '083000.000000'
    >>> normalize_time("12", upper=True)
    '125959.999999'
    """
    value = value.strip().replace(":", "")
    if not value:
        return value
    whole, _, fraction = value.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        raise MatchingError(f"{value!r} is not a time (TM): use HHMMSS.FFFFFF")
    fill = "5959" if upper else "0000"
    whole = whole + fill[len(whole) - 2 :]
    fraction = (fraction + ("9" if upper else "0") * 6)[:6]
    return f"{whole}.{fraction}"


def normalize_datetime(value: str, *, upper: bool = False) -> str:
    """A DT value as ``YYYYMMDDHHMMSS.FFFFFF`` (timezone offsets are ignored)."""
    value = re.sub(r"[+-]\d{4}$", "", value.strip())
    date, time = value[:8], value[8:]
    if len(date) < 4 or not date.isdigit():
        raise MatchingError(f"{value!r} is not a date-time (DT)")
    pad = "1231" if upper else "0101"
    date = date + pad[len(date) - 4 :] if len(date) < 8 else date
    return normalize_date(date) + normalize_time(time or ("23" if upper else "00"), upper=upper)


def normalize(vr: str, value: str, *, upper: bool = False) -> str:
    """The comparable form of a stored or queried value of this VR."""
    if vr == "DA":
        return normalize_date(value)
    if vr == "TM":
        return normalize_time(value, upper=upper)
    if vr == "DT":
        return normalize_datetime(value, upper=upper)
    return value


def _parse_one(vr: str, value: str) -> Single | Wildcard:
    if vr not in NO_WILDCARD_VRS and ("*" in value or "?" in value):
        return Wildcard(value)
    return Single(normalize(vr, value))


def parse_constraint(keyword: str, vr: str, value: str | None) -> Constraint | None:
    """Parse a query value; ``None`` means universal matching (the key is a return key only).

    Raises
    ------
    MatchingError
        When the value cannot be a query value of this VR (for example ``2020-13-45``).
    """
    if value is None:
        return None
    value = value.strip() if vr not in ("UI",) else value.strip().strip("\0")
    if value == "" or value == "*" or (vr in RANGE_VRS and value == "-"):
        return None
    if vr in RANGE_VRS and "-" in value and not (vr == "DT" and _is_tz_only(value)):
        low, _, high = value.partition("-")
        return Constraint(
            keyword,
            vr,
            Range(
                normalize(vr, low) if low else None,
                normalize(vr, high, upper=True) if high else None,
            ),
        )
    values = [v for v in value.split("\\")]
    if vr == "PN" and any("=" in v for v in values):
        values = [_alphabetic_group(v) for v in values]
        value = "\\".join(values)
        if value == "*":
            return None
    if len(values) > 1:
        return Constraint(keyword, vr, AnyOf(tuple(_parse_one(vr, v) for v in values if v)))
    return Constraint(keyword, vr, _parse_one(vr, value))


def _alphabetic_group(value: str) -> str:
    """The alphabetic group of a person-name query value ``A=I=P``, the one the index matches.

    Raises
    ------
    MatchingError
        When only the ideographic or phonetic group is given.
    """
    alphabetic, _, others = value.partition("=")
    if not alphabetic and others.strip("=*"):
        raise MatchingError(
            "person names are matched on their alphabetic group; give it before the '=' "
            f"(e.g. Yamada*=山田*), not only the ideographic or phonetic one ({value!r})"
        )
    return alphabetic or "*"


def _is_tz_only(value: str) -> bool:
    """A DT like ``20200101120000-0500`` carries a timezone, not a range."""
    return bool(re.fullmatch(r"\d{8,14}(\.\d+)?-\d{4}", value))


def matches(
    constraint: Constraint,
    stored: str | Iterable[str] | None,
    *,
    fold: bool = False,
) -> bool:
    """Whether a stored value (or any of several stored values) satisfies *constraint*.

    *fold* makes person-name comparisons case- and accent-insensitive.
    """
    if stored is None:
        return False
    values = [stored] if isinstance(stored, str) else list(stored)
    fold = fold and constraint.vr == "PN"
    return any(_matches_one(constraint.matcher, constraint.vr, v, fold) for v in values if v)


def _matches_one(matcher: Matcher, vr: str, value: str, fold: bool) -> bool:
    if isinstance(matcher, AnyOf):
        return any(_matches_one(option, vr, value, fold) for option in matcher.options)
    if isinstance(matcher, Wildcard):
        return bool(matcher.regex(fold).match(fold_text(value) if fold else value))
    try:
        comparable = normalize(vr, value)
    except MatchingError:
        return False
    if isinstance(matcher, Single):
        if fold:
            return fold_text(comparable) == fold_text(matcher.value)
        return comparable == matcher.value
    low_ok = matcher.low is None or comparable >= matcher.low
    high_ok = matcher.high is None or comparable <= matcher.high
    return low_ok and high_ok

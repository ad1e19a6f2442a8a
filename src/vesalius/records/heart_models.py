"""Heart models (the seeds' ``CAP_MODEL``): a zip of model data plus XML metadata.

The XML is parsed by defusedxml with entity declarations and external references refused, so
neither a billion-laughs expansion nor an external entity (``SYSTEM "file:///etc/passwd"``)
gets anywhere. Every attribute and every leaf element's text become searchable fields; a few
well-known ones are lifted out:

* ``name`` from a field called name, modelname or title;
* ``version`` from version or modelversion;
* ``frames`` (time points) from frames, numframes, framecount, timepoints or nframes;
* the studies the model was fitted to: every StudyInstanceUID/StudyUID element or attribute,
  and the ``uid`` attribute of a ``Study`` element.

Field names are the element's local name for text (``<Author>`` -> ``Author``) and
``element.attribute`` for attributes (``<Study uid=..>`` -> ``Study.uid``); the root's own
attributes keep their bare names. A name met twice collects its values in a list.

Examples
--------
>>> meta = parse_metadata(b'<Model name="LV" version="2"><Frames>20</Frames></Model>')
>>> (meta.name, meta.version, meta.frames)
('LV', '2', 20)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from vesalius.records.errors import InvalidRecord, UnsafeContent

MAX_FIELDS = 2000
MAX_VALUE = 4096
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

_NAME_KEYS = ("name", "modelname", "title")
_VERSION_KEYS = ("version", "modelversion")
_FRAME_KEYS = ("frames", "numframes", "framecount", "timepoints", "numtimepoints", "nframes")
_STUDY_KEYS = ("studyinstanceuid", "studyuid", "study.uid")


@dataclass
class ModelMetadata:
    """What a heart model's XML declares."""

    root: str
    fields: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    version: str | None = None
    frames: int | None = None
    study_uids: list[str] = field(default_factory=list)

    def field_pairs(self) -> list[tuple[str, str]]:
        """(name, value) for each value, for the search table."""
        pairs = []
        for name, value in self.fields.items():
            for item in value if isinstance(value, list) else [value]:
                pairs.append((name, str(item)))
        return pairs


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _norm(key: str) -> str:
    return re.sub(r"[_\-\s]", "", key).lower()


def parse_metadata(xml: bytes) -> ModelMetadata:
    """Parse and read a heart model's XML metadata.

    Raises
    ------
    UnsafeContent
        When the XML declares entities or references external resources.
    InvalidRecord
        When it is not well-formed XML.
    """
    try:
        root = fromstring(xml, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise UnsafeContent(
            f"heart model XML refused: it declares entities or external references ({exc}); "
            "entity expansion and external entities are not accepted"
        ) from None
    except (ParseError, ValueError) as exc:
        raise InvalidRecord(f"heart model XML is not well-formed: {exc}") from None
    meta = ModelMetadata(root=_local(root.tag))
    _collect(root, meta)
    _lift(meta)
    return meta


def _collect(root: Element, meta: ModelMetadata) -> None:
    count = 0

    def add(name: str, value: str | None) -> None:
        nonlocal count
        value = (value or "").strip()
        if not value or count >= MAX_FIELDS:
            return
        count += 1
        value = value[:MAX_VALUE]
        existing = meta.fields.get(name)
        if existing is None:
            meta.fields[name] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            meta.fields[name] = [existing, value]

    for key, value in root.attrib.items():
        add(_local(key), value)
    for element in root.iter():
        if element is root:
            continue
        tag = _local(element.tag)
        for key, value in element.attrib.items():
            add(f"{tag}.{_local(key)}", value)
        if len(element) == 0:
            add(tag, element.text)


def _values(meta: ModelMetadata, keys: tuple[str, ...], *, nested: bool = False) -> list[str]:
    """Values of the fields named by *keys*; with *nested*, also ``element.<key>`` attributes."""
    out: list[str] = []
    for name, value in meta.fields.items():
        normal = _norm(name)
        if normal in keys or (nested and normal.rsplit(".", 1)[-1] in keys):
            out += value if isinstance(value, list) else [value]
    return out


def _lift(meta: ModelMetadata) -> None:
    names = _values(meta, _NAME_KEYS)
    meta.name = names[0][:256] if names else None
    versions = _values(meta, _VERSION_KEYS)
    meta.version = versions[0][:64] if versions else None
    for value in _values(meta, _FRAME_KEYS):
        if value.isdigit():
            meta.frames = int(value)
            break
    uids = [v for v in _values(meta, _STUDY_KEYS, nested=True) if len(v) <= 64 and _UID.match(v)]
    meta.study_uids = list(dict.fromkeys(uids))

"""pydicom's data dictionary, looked up by plain ``int``.

pydicom's own lookups turn a tag into a ``BaseTag``, and a dictionary lookup with a
``BaseTag`` key compares keys through ``BaseTag.__eq__``, in Python: on the path of every query
(a dozen keys, each looked up three or four times) that cost more than the lookups themselves.
"""

from __future__ import annotations

import functools

from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR


@functools.lru_cache(maxsize=8192)  # the dictionary has ~5,000 tags; hostile ones evict
def dictionary_entry(tag: int) -> tuple[str, str] | None:
    """(keyword, VR) of *tag* (a plain ``int``) in pydicom's dictionary; None when unknown."""
    if not dictionary_has_tag(tag):
        return None
    return dictionary_keyword(tag), dictionary_VR(tag)

"""Shipped plugin: the audit trail.

Every protocol announces what it did through ``AuditLog.record`` as an ``Accessed`` event;
this plugin is what writes them to the trail (``AuditLog.write``: batched by its own writer
thread). It subscribes *inline*: the event bus hands it every ``Accessed`` in the publisher's
thread and never drops one when other handlers fall behind, because invariant 5 wants every
access of patient data in the trail. Another plugin can subscribe to ``Accessed`` as well, e.g.
to forward the trail to a SIEM, without touching this one.
"""

from __future__ import annotations

from typing import Any

from vesalius.auth.audit import from_accessed
from vesalius.events import Accessed


def setup(plugin: Any) -> None:
    audit = plugin.container.audit

    def write_to_trail(event: Accessed) -> None:
        audit.write(from_accessed(event))

    plugin.subscribe(Accessed, write_to_trail, inline=True)

"""Builds the parts of a running Vesalius from its settings, once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vesalius.archive.service import Archive
from vesalius.auth.accounts import Auth
from vesalius.auth.audit import AuditLog
from vesalius.config import Settings
from vesalius.events import EventBus
from vesalius.federation.central import Central
from vesalius.federation.jobs import push_soon_hook, push_soon_on_changes
from vesalius.federation.mirror import Mirror
from vesalius.index.engine import Database
from vesalius.index.migrate import upgrade
from vesalius.records.service import Records
from vesalius.storage.base import BlobStore
from vesalius.storage.filesystem import open_store


@dataclass
class Container:
    settings: Settings
    db: Database
    blobs: BlobStore
    archive: Archive
    records: Records
    audit: AuditLog
    auth: Auth
    central: Central
    events: EventBus
    plugins: list[Any] = field(default_factory=list)  # vesalius.plugins.PluginContext
    mirror: Mirror | None = None  # the [[remote_pacs]] mirror (set by build)
    # Called first by close(): what plugins started (threads) stops here.
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for closer in self.closers:
            closer()
        self.archive.close()
        self.events.close()
        self.audit.close()
        self.db.dispose()


def build(settings: Settings, *, migrate: bool = False, load_plugins: bool = True) -> Container:
    """Open the index and the blob store; apply migrations first when *migrate* is set."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(
        settings.effective_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        flush_interval=settings.index_flush_interval_s,
    )
    if migrate:
        upgrade(db.engine)
    blobs = open_store(settings.effective_storage_dir, settings.storage_write_cache_mb << 20)
    events = EventBus()
    archive = Archive(settings, db, blobs, events)
    records = Records(settings, db, blobs, archive)
    if settings.indexer_url:
        # A site of a federation: a new study queues a push to the central index ...
        archive.add_study_hook("federation.push_soon", push_soon_hook(settings))
        # ... and so do instances added to an existing study, and deletions.
        push_soon_on_changes(settings, db, events)
    audit = AuditLog(db, settings.audit_retention_days)
    audit.events = events
    auth = Auth(settings, db, audit)
    central = Central(settings, db)
    container = Container(settings, db, blobs, archive, records, audit, auth, central, events)
    container.mirror = Mirror(settings, db)
    if load_plugins:
        # The shipped plugins (the records' link to new studies, routing), then the installed
        # and configured ones; raises PluginError naming a plugin that cannot be loaded.
        from vesalius.plugins import load_and_setup

        try:
            load_and_setup(container)
        except Exception:
            container.close()
            raise
    return container

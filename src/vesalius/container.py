"""Builds the parts of a running Vesalius from its settings, once per process."""

from __future__ import annotations

from dataclasses import dataclass

from vesalius.archive.service import Archive
from vesalius.auth.accounts import Auth
from vesalius.auth.audit import AuditLog
from vesalius.config import Settings
from vesalius.federation.central import Central
from vesalius.federation.jobs import push_soon_hook
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

    def close(self) -> None:
        self.archive.close()
        self.audit.close()
        self.db.dispose()


def build(settings: Settings, *, migrate: bool = False) -> Container:
    """Open the index and the blob store; apply migrations first when *migrate* is set."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    if migrate:
        upgrade(db.engine)
    blobs = open_store(settings.effective_storage_dir)
    archive = Archive(settings, db, blobs)
    records = Records(settings, db, blobs, archive)
    # Every new study gives its subject an imaging session, in the same transaction.
    archive.new_study_hooks.append(records.on_instance_indexed)
    if settings.indexer_url:
        # A site of a federation: a new study queues a push to the central index.
        archive.new_study_hooks.append(push_soon_hook(settings))
    audit = AuditLog(db, settings.audit_retention_days)
    auth = Auth(settings, db, audit)
    central = Central(settings, db)
    return Container(settings, db, blobs, archive, records, audit, auth, central)

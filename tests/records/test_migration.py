"""The records migration runs up, down and up again on every database, and matches the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from vesalius.index import records_models  # noqa: F401  (registers the tables on Base)
from vesalius.index.engine import Database
from vesalius.index.migrate import MIGRATIONS, current_revision, upgrade
from vesalius.index.models import Base

RECORD_TABLES = {
    "subjects",
    "record_events",
    "record_study_links",
    "record_notes",
    "record_files",
    "record_heart_models",
    "record_heart_model_fields",
    "record_diagnoses",
}


def _downgrade(db: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _records_diff(db: Database) -> list[object]:
    """Differences between the records models and the migrated schema."""
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    return [d for d in diff if any(t in repr(d) for t in RECORD_TABLES)]


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine, "0002")
        assert current_revision(db.engine) == "0002"
        assert set(inspect(db.engine).get_table_names()) >= RECORD_TABLES
        assert _records_diff(db) == []
        _downgrade(db, "0001")
        assert current_revision(db.engine) == "0001"
        assert not set(inspect(db.engine).get_table_names()) & RECORD_TABLES
        upgrade(db.engine)
        assert set(inspect(db.engine).get_table_names()) >= RECORD_TABLES
        assert _records_diff(db) == []
    finally:
        db.dispose()

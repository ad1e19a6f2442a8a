"""The whole migration chain runs up, down to nothing and up again on every database, has one
head, and leaves exactly the schema the models describe."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text

import vesalius.index.federation_models
import vesalius.index.jobs_models
import vesalius.index.people_models
import vesalius.index.records_models  # noqa: F401
from vesalius.index.engine import Database
from vesalius.index.migrate import MIGRATIONS, current_revision, head_revision, upgrade
from vesalius.index.models import Base

IMAGING_TABLES = {"patients", "studies", "series", "instances"}


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_one_head() -> None:
    assert len(ScriptDirectory.from_config(_config()).get_heads()) == 1


def test_up_down_up_matches_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine)
        assert current_revision(db.engine) == head_revision()
        assert set(inspect(db.engine).get_table_names()) >= IMAGING_TABLES
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        config = _config()
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert current_revision(db.engine) is None
        assert not set(inspect(db.engine).get_table_names()) & IMAGING_TABLES
        upgrade(db.engine)
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()


def test_0009_keeps_each_instance_digest_with_its_algorithm(database_url: str) -> None:
    """instances.sha256 becomes instances.digest: an existing row's SHA-256 is kept, written
    ``sha256:<hex>``, and a downgrade gives it back as it was."""
    db = Database(database_url)
    sha256 = "ab" * 32
    try:
        upgrade(db.engine, "0008")
        tables = MetaData()
        tables.reflect(db.engine, only=["patients", "studies", "series", "instances"])
        rows = {
            "patients": {"id": 1, "patient_id": "P"},
            "studies": {"id": 1, "patient_pk": 1, "study_instance_uid": "1.2"},
            "series": {"id": 1, "study_pk": 1, "series_instance_uid": "1.2.3"},
            "instances": {
                "id": 1,
                "series_pk": 1,
                "sop_instance_uid": "1.2.3.4",
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                "blob_key": "dicom/x.dcm",
                "size": 1,
                "sha256": sha256,
                "metadata_json": "{}",
            },
        }
        with db.engine.begin() as connection:
            for name, values in rows.items():
                table = tables.tables[name]
                for column in table.columns:  # zero the counters, fill what else is required
                    if not column.nullable and column.server_default is None:
                        values.setdefault(column.name, 0 if column.name.startswith("num_") else "")
                connection.execute(table.insert().values(**values))
        upgrade(db.engine)
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT digest FROM instances")).scalar_one() == (
                f"sha256:{sha256}"
            )
        config = _config()
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0008")
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT sha256 FROM instances")).scalar_one() == sha256
    finally:
        with db.engine.begin() as connection:
            config = _config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        db.dispose()

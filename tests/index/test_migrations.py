"""The whole migration chain runs up, down to nothing and up again on every database, has one
head, and leaves exactly the schema the models describe."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

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

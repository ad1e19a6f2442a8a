"""Alembic environment: runs on the connection that ``vesalius.index.migrate`` passes in."""

from alembic import context

from vesalius.index import (  # noqa: F401  (register tables)
    federation_models,
    jobs_models,
    mirror_models,
    people_models,
    records_models,
)
from vesalius.index.models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

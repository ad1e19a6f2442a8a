"""instances.sha256 becomes instances.digest, written <algorithm>:<hex>: new instances are
hashed with BLAKE3 (vesalius.storage.digest), the rows indexed before keep their SHA-256

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 03:20:00

Existing values are prefixed ``sha256:`` in one UPDATE (a few seconds for a million rows).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.alter_column(
            "sha256",
            new_column_name="digest",
            existing_type=sa.String(64),
            type_=sa.String(80),
            existing_nullable=False,
        )
    digest = sa.table("instances", sa.column("digest", sa.String(80)))
    op.execute(digest.update().values(digest=sa.literal("sha256:").concat(digest.c.digest)))


def downgrade() -> None:
    # A BLAKE3 row keeps its hex, which is not its file's SHA-256: the older server then
    # takes an identical re-send of that instance for a changed one (its duplicate policy).
    digest = sa.table("instances", sa.column("digest", sa.String(80)))
    op.execute(digest.update().values(digest=sa.func.substr(digest.c.digest, 8)))
    with op.batch_alter_table("instances") as batch:
        batch.alter_column(
            "digest",
            new_column_name="sha256",
            existing_type=sa.String(80),
            type_=sa.String(64),
            existing_nullable=False,
        )

"""route watermarks: how far each forwarding route has read the change feed

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02 16:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "route_watermarks",
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("route", name=op.f("pk_route_watermarks")),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("route_watermarks")

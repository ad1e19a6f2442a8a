"""federation: central index sites and study records, site push watermarks, remote sources

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "federation_sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_push_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_sites")),
        sa.UniqueConstraint("code", name=op.f("uq_federation_sites_code")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_federation_sites_key_hash")),
        **MYSQL,
    )
    op.create_table(
        "federation_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_pk", sa.Integer(), nullable=False),
        sa.Column("study_iuid", sa.String(length=64), nullable=False),
        sa.Column("patient_pk", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.String(length=256), nullable=True),
        sa.Column("patient_name_folded", sa.String(length=256), nullable=True),
        sa.Column("study_pk", sa.String(length=64), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("study_description", sa.String(length=1024), nullable=True),
        sa.Column("study_modality", sa.String(length=64), nullable=True),
        sa.Column("modalities", sa.String(length=128), nullable=True),
        sa.Column("study_series", sa.Integer(), nullable=True),
        sa.Column("study_instances", sa.Integer(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_pk"],
            ["federation_sites.id"],
            name=op.f("fk_federation_studies_site_pk_federation_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_studies")),
        sa.UniqueConstraint(
            "site_pk", "study_iuid", name=op.f("uq_federation_studies_site_pk_study_iuid")
        ),
        **MYSQL,
    )
    op.create_index(
        "ix_federation_studies_patient_id",
        "federation_studies",
        ["deleted", "patient_id", "study_date", "study_time"],
    )
    op.create_index(
        "ix_federation_studies_name_folded",
        "federation_studies",
        ["deleted", "patient_name_folded", "study_date", "study_time", "modalities"],
    )
    op.create_index(
        "ix_federation_studies_date",
        "federation_studies",
        ["deleted", "study_date", "study_time", "modalities"],
    )
    op.create_index("ix_federation_studies_study_iuid", "federation_studies", ["study_iuid"])
    op.create_table(
        "indexer_state",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("initial_done", sa.Boolean(), nullable=False),
        sa.Column("pushed_total", sa.BigInteger(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_indexer_state")),
        **MYSQL,
    )
    op.create_table(
        "indexer_remote_studies",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("study_iuid", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("source", "study_iuid", name=op.f("pk_indexer_remote_studies")),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("indexer_remote_studies")
    op.drop_table("indexer_state")
    op.drop_table("federation_studies")
    op.drop_table("federation_sites")

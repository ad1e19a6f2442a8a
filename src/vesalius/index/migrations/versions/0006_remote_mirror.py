"""remote PACS mirror: remote patients, studies and series, sync state, retrievals

Revision ID: 0006
Revises: 0007
Create Date: 2026-12-02 15:47:46

Numbered 0006 as assigned, but applied after 0007 (route watermarks), which landed first and
revises 0005: databases already at 0007 go on to 0006, the head.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mirror_state",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("watermark", sa.String(length=8), nullable=True),
        sa.Column("sync_number", sa.BigInteger(), nullable=False),
        sa.Column("studies", sa.Integer(), nullable=False),
        sa.Column("last_full_at", sa.DateTime(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_mirror_state")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_table(
        "remote_patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=256), nullable=True),
        sa.Column("patient_name_folded", sa.String(length=256), nullable=True),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("num_studies", sa.Integer(), nullable=False),
        sa.Column("last_study_date", sa.String(length=8), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_patients")),
        sa.UniqueConstraint(
            "source", "patient_id", name=op.f("uq_remote_patients_source_patient_id")
        ),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("remote_patients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_remote_patients_last_study_date", ["last_study_date"], unique=False
        )
        batch_op.create_index(
            "ix_remote_patients_name_folded", ["patient_name_folded"], unique=False
        )

    op.create_table(
        "remote_retrievals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_retrievals")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("remote_retrievals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_remote_retrievals_study", ["source", "study_instance_uid"], unique=False
        )

    op.create_table(
        "remote_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("study_id", sa.String(length=64), nullable=True),
        sa.Column("study_description", sa.String(length=64), nullable=True),
        sa.Column("referring_physician_name", sa.String(length=256), nullable=True),
        sa.Column("referring_physician_name_folded", sa.String(length=256), nullable=True),
        sa.Column("modalities_in_study", sa.String(length=64), nullable=True),
        sa.Column("num_series", sa.Integer(), nullable=False),
        sa.Column("num_instances", sa.Integer(), nullable=False),
        sa.Column(
            "attributes",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("seen_sync", sa.BigInteger(), nullable=False),
        sa.Column("synced_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["remote_patients.id"],
            name=op.f("fk_remote_studies_patient_pk_remote_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_studies")),
        sa.UniqueConstraint(
            "source", "study_instance_uid", name=op.f("uq_remote_studies_source_study_instance_uid")
        ),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("remote_studies", schema=None) as batch_op:
        batch_op.create_index("ix_remote_studies_date", ["source", "study_date"], unique=False)
        batch_op.create_index("ix_remote_studies_patient", ["patient_pk"], unique=False)
        batch_op.create_index("ix_remote_studies_uid", ["study_instance_uid"], unique=False)

    op.create_table(
        "remote_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.String(length=16), nullable=True),
        sa.Column("series_description", sa.String(length=64), nullable=True),
        sa.Column("num_instances", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["remote_studies.id"],
            name=op.f("fk_remote_series_study_pk_remote_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_series")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("remote_series", schema=None) as batch_op:
        batch_op.create_index("ix_remote_series_study", ["study_pk"], unique=False)


def downgrade() -> None:
    # tables only (their indexes go with them; MariaDB refuses to drop an index a foreign
    # key needs)
    op.drop_table("remote_series")
    op.drop_table("remote_studies")
    op.drop_table("remote_patients")
    op.drop_table("remote_retrievals")
    op.drop_table("mirror_state")

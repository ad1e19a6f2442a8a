"""research records: subjects, timeline events, notes, files, heart models, diagnoses, study links

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 04:50:16.539485
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("cohort", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "extra",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
        sa.UniqueConstraint("subject_id", name=op.f("uq_subjects_subject_id")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.create_index("ix_subjects_cohort", ["cohort"], unique=False)

    op.create_table(
        "record_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("event_date", sa.Date(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=True),
        sa.Column(
            "description",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column("session_number", sa.Integer(), nullable=True),
        sa.Column("session_study_uid", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_pk"],
            ["subjects.id"],
            name=op.f("fk_record_events_subject_pk_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_events")),
        sa.UniqueConstraint("session_study_uid", name=op.f("uq_record_events_session_study_uid")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("record_events", schema=None) as batch_op:
        batch_op.create_index("ix_record_events_kind", ["kind"], unique=False)
        batch_op.create_index(
            "ix_record_events_order", ["subject_pk", "event_date", "position"], unique=False
        )

    op.create_table(
        "record_diagnoses",
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("height_cm", sa.Double(), nullable=True),
        sa.Column("weight_kg", sa.Double(), nullable=True),
        sa.Column("heart_rate_bpm", sa.Integer(), nullable=True),
        sa.Column("systolic_bp_mmhg", sa.Integer(), nullable=True),
        sa.Column("diastolic_bp_mmhg", sa.Integer(), nullable=True),
        sa.Column("diagnosis", sa.Text(), nullable=True),
        sa.Column(
            "extra",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["record_events.id"],
            name=op.f("fk_record_diagnoses_event_pk_record_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_record_diagnoses")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_table(
        "record_files",
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_key", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["record_events.id"],
            name=op.f("fk_record_files_event_pk_record_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_record_files")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_table(
        "record_heart_models",
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column(
            "fields",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("data_filename", sa.String(length=255), nullable=False),
        sa.Column("data_key", sa.String(length=255), nullable=False),
        sa.Column("data_size", sa.BigInteger(), nullable=False),
        sa.Column("data_sha256", sa.String(length=64), nullable=False),
        sa.Column("xml_filename", sa.String(length=255), nullable=False),
        sa.Column("xml_key", sa.String(length=255), nullable=False),
        sa.Column("xml_size", sa.BigInteger(), nullable=False),
        sa.Column("xml_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["record_events.id"],
            name=op.f("fk_record_heart_models_event_pk_record_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_record_heart_models")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("record_heart_models", schema=None) as batch_op:
        batch_op.create_index("ix_record_heart_models_name", ["name"], unique=False)

    op.create_table(
        "record_notes",
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=True),
        sa.Column("note_kind", sa.String(length=64), nullable=True),
        sa.Column(
            "text",
            sa.Text()
            .with_variant(mysql.LONGTEXT(), "mariadb")
            .with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["record_events.id"],
            name=op.f("fk_record_notes_event_pk_record_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_record_notes")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_table(
        "record_study_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["record_events.id"],
            name=op.f("fk_record_study_links_event_pk_record_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_study_links")),
        sa.UniqueConstraint(
            "event_pk",
            "study_instance_uid",
            name=op.f("uq_record_study_links_event_pk_study_instance_uid"),
        ),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("record_study_links", schema=None) as batch_op:
        batch_op.create_index("ix_record_study_links_study", ["study_instance_uid"], unique=False)

    op.create_table(
        "record_heart_model_fields",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["record_heart_models.event_pk"],
            name=op.f("fk_record_heart_model_fields_event_pk_record_heart_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_heart_model_fields")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    with op.batch_alter_table("record_heart_model_fields", schema=None) as batch_op:
        batch_op.create_index("ix_record_heart_model_fields_event", ["event_pk"], unique=False)
        batch_op.create_index(
            "ix_record_heart_model_fields_name_value", ["name", "value"], unique=False
        )


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key uses.
    for table in (
        "record_heart_model_fields",
        "record_study_links",
        "record_notes",
        "record_heart_models",
        "record_files",
        "record_diagnoses",
        "record_events",
        "subjects",
    ):
        op.drop_table(table)

"""events, jobs and the change feed: change_log and its counter, jobs, job schedules, and the
study completeness columns (studies.updated_at, studies.stable_at)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
LONG_TEXT = (
    sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")
)


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("series_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_uid", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_change_log")),
        **MYSQL,
    )
    op.create_index("ix_change_log_study", "change_log", ["study_uid"])
    counter = op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_counter")),
        **MYSQL,
    )
    op.bulk_insert(counter, [{"id": 1, "last_seq": 0}])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", LONG_TEXT, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=191), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_jobs_dedupe_key")),
        **MYSQL,
    )
    op.create_index("ix_jobs_ready", "jobs", ["state", "run_at"])
    op.create_index("ix_jobs_kind", "jobs", ["kind", "state"])
    op.create_table(
        "job_schedules",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("next_run_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_schedules")),
        **MYSQL,
    )

    with op.batch_alter_table("studies") as batch_op:
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("stable_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_studies_unstable", ["stable_at", "updated_at"])
    # Studies archived before this version are complete: no StudyStable (nor a forward on
    # "stable") for each of them after the upgrade.
    op.execute("UPDATE studies SET updated_at = created_at, stable_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch_op:
        batch_op.drop_index("ix_studies_unstable")
        batch_op.drop_column("stable_at")
        batch_op.drop_column("updated_at")
    op.drop_table("job_schedules")
    op.drop_table("jobs")
    op.drop_table("change_counter")
    op.drop_table("change_log")

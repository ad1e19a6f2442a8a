"""central search: the patient ID and name indexes of federation_studies use the pattern
operator class on PostgreSQL, so that a prefix wildcard is an index range in any collation;
an index leading with the modalities, for a modality search

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02 16:55:00

The operator classes change on PostgreSQL only: SQLite (with ``case_sensitive_like``) and
MySQL/MariaDB (binary collation) already use these indexes for a prefix LIKE.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {
    "ix_federation_studies_patient_id": ["deleted", "patient_id", "study_date", "study_time"],
    "ix_federation_studies_name_folded": [
        "deleted",
        "patient_name_folded",
        "study_date",
        "study_time",
        "modalities",
    ],
}
_PATTERN = {
    "ix_federation_studies_patient_id": {"patient_id": "varchar_pattern_ops"},
    "ix_federation_studies_name_folded": {"patient_name_folded": "varchar_pattern_ops"},
}


def _recreate(pattern: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, columns in _INDEXES.items():
        op.drop_index(name, table_name="federation_studies")
        op.create_index(
            name,
            "federation_studies",
            columns,
            postgresql_ops=_PATTERN[name] if pattern else {},
        )


def upgrade() -> None:
    _recreate(pattern=True)
    op.create_index(
        "ix_federation_studies_modalities",
        "federation_studies",
        ["deleted", "modalities", "study_date", "study_time"],
    )


def downgrade() -> None:
    op.drop_index("ix_federation_studies_modalities", table_name="federation_studies")
    _recreate(pattern=False)

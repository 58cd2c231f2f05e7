"""Datasets: what each run's manifest names (``run_data``) and ``ArtifactRevoked`` events.

Revision ID: 0003
Revises: 0002

Runs indexed before this revision have their manifests read again (their
``manifest_state`` goes back to ``pending``) so that their datasets are indexed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

HEX32 = sa.String(66)
ADDRESS = sa.String(42)


def upgrade() -> None:
    op.create_table(
        "run_data",
        sa.Column(
            "run_id",
            HEX32,
            sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("digest", HEX32, primary_key=True),
        sa.Column("cid", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("part_of", sa.String(120), nullable=True),
    )
    op.create_index("ix_run_data_digest", "run_data", ["digest"])
    op.create_table(
        "artifact_revocations",
        sa.Column("digest", HEX32, primary_key=True),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", HEX32, nullable=False),
        sa.Column("revoker", ADDRESS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_artifact_revocations_block_number", "artifact_revocations", ["block_number"]
    )
    op.execute("UPDATE runs SET manifest_state = 'pending' WHERE manifest_state = 'loaded'")


def downgrade() -> None:
    op.drop_table("artifact_revocations")
    op.drop_table("run_data")

"""Replay attestations (``ReplayAttested``, registry 3): who replayed which checkpoints
of a run, and whether they reproduced.

Revision ID: 0004
Revises: 0003 (the datasets tables)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

HEX32 = sa.String(66)
ADDRESS = sa.String(42)


def upgrade() -> None:
    op.create_table(
        "replay_attestations",
        sa.Column("block_number", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("log_index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column(
            "run_id",
            HEX32,
            sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attester", ADDRESS, nullable=False),
        sa.Column("from_step", sa.BigInteger(), nullable=False),
        sa.Column("to_step", sa.BigInteger(), nullable=False),
        sa.Column("reproduced", sa.Boolean(), nullable=False),
        sa.Column("report_digest", HEX32, nullable=False),
        sa.Column("tx_hash", HEX32, nullable=False),
    )
    op.create_index("ix_replay_attestations_run_id", "replay_attestations", ["run_id"])
    op.create_index("ix_replay_attestations_attester", "replay_attestations", ["attester"])


def downgrade() -> None:
    op.drop_table("replay_attestations")

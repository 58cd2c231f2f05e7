"""The first index schema: meta, blocks, events, runs, parents, weights, metrics.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

HEX32 = sa.String(66)
ADDRESS = sa.String(42)


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(40), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "blocks",
        sa.Column("number", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", HEX32, nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("block_number", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("log_index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("tx_hash", HEX32, nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("run_id", HEX32, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index("ix_events_run_id", "events", ["run_id"])
    op.create_table(
        "runs",
        sa.Column("run_id", HEX32, primary_key=True),
        sa.Column("committer", ADDRESS, nullable=False),
        sa.Column("manifest_digest", HEX32, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("started_block", sa.BigInteger(), nullable=False),
        sa.Column("started_log", sa.Integer(), nullable=False),
        sa.Column("started_tx", HEX32, nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_block", sa.BigInteger(), nullable=True),
        sa.Column("ended_tx", HEX32, nullable=True),
        sa.Column("failed_reason", sa.Text(), nullable=True),
        sa.Column("revoked_block", sa.BigInteger(), nullable=True),
        sa.Column("revoked_tx", HEX32, nullable=True),
        sa.Column("revoked_by", ADDRESS, nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.Column("checkpoint_count", sa.Integer(), nullable=False),
        sa.Column("checkpoint_root", HEX32, nullable=True),
        sa.Column("final_weights_digest", HEX32, nullable=True),
        sa.Column("final_tensor_root", HEX32, nullable=True),
        sa.Column("final_metrics_digest", HEX32, nullable=True),
        sa.Column("manifest_state", sa.String(8), nullable=False),
        sa.Column("manifest_cid", sa.String(120), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("sweep_id", sa.String(200), nullable=True),
        sa.Column("sweep_trial", sa.Integer(), nullable=True),
        sa.Column("world_size", sa.Integer(), nullable=True),
        sa.Column("metrics_state", sa.String(8), nullable=False),
    )
    for column in (
        "revoked",
        "manifest_state",
        "name",
        "metrics_state",
    ):
        op.create_index(f"ix_runs_{column}", "runs", [column])
    op.create_index("ix_runs_started", "runs", ["started_at", "run_id"])
    for column in ("status", "committer", "sweep_id"):
        name = column.removesuffix("_id")
        op.create_index(f"ix_runs_{name}_started", "runs", [column, "started_at", "run_id"])
    op.create_table(
        "parents",
        sa.Column(
            "child_id",
            HEX32,
            sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("parent_id", HEX32, primary_key=True),
        sa.Column("relation", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    op.create_index("ix_parents_parent_id", "parents", ["parent_id"])
    op.create_table(
        "weights",
        sa.Column("block_number", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("log_index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column(
            "run_id", HEX32, sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("is_final", sa.Boolean(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("weights_digest", HEX32, nullable=False),
        sa.Column("tensor_root", HEX32, nullable=False),
        sa.Column("metrics_digest", HEX32, nullable=False),
        sa.Column("tx_hash", HEX32, nullable=False),
    )
    for column in ("run_id", "weights_digest", "tensor_root"):
        op.create_index(f"ix_weights_{column}", "weights", [column])
    op.create_table(
        "metrics",
        sa.Column(
            "run_id",
            HEX32,
            sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index("ix_metrics_name_value", "metrics", ["name", "value"])


def downgrade() -> None:
    for table in ("metrics", "weights", "parents", "runs", "events", "blocks", "meta"):
        op.drop_table(table)

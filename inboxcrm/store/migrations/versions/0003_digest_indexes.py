"""Indexes for the digest's queries: a rep's open deals, and the open next steps a rep holds.

Both are (rep, closed_at), so "open deals of rep N" is one index range on SQLite and PostgreSQL.
The composite index on the owner replaces the single-column one (its prefix serves the same
lookups). The team totals read (closed_at, stage_id, value) from an index alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:00:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.drop_index('ix_deals_owner_rep_id')
        batch_op.create_index('ix_deals_owner_open', ['owner_rep_id', 'closed_at'], unique=False)
        batch_op.create_index('ix_deals_next_step_owner_open', ['next_step_owner_id', 'closed_at'], unique=False)
        batch_op.create_index('ix_deals_open_stage', ['closed_at', 'stage_id', 'value'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.drop_index('ix_deals_open_stage')
        batch_op.drop_index('ix_deals_next_step_owner_open')
        batch_op.drop_index('ix_deals_owner_open')
        batch_op.create_index('ix_deals_owner_rep_id', ['owner_rep_id'], unique=False)

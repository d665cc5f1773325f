"""Commands by email: a rep's reply-token generation, and snoozed deals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('command_token_generation', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snoozed_until', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.drop_column('snoozed_until')
    with op.batch_alter_table('reps', schema=None) as batch_op:
        batch_op.drop_column('command_token_generation')

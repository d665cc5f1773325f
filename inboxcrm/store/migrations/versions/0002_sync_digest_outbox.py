"""IMAP connections and sync state, rep digest schedules, the outbox.

Existing rows get server defaults so an upgrade of a populated database works.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:10:48.133225
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('rep_id', sa.Integer(), nullable=True),
    sa.Column('deal_id', sa.Integer(), nullable=True),
    sa.Column('to_address', sa.String(length=320), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('message_id', sa.String(length=300), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['deal_id'], ['deals.id'], name=op.f('fk_outbox_deal_id_deals'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rep_id'], ['reps.id'], name=op.f('fk_outbox_rep_id_reps'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('key', name=op.f('uq_outbox_key')),
    sa.UniqueConstraint('message_id', name=op.f('uq_outbox_message_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_deal_id'), ['deal_id'], unique=False)
        batch_op.create_index('ix_outbox_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_rep_id'), ['rep_id'], unique=False)

    with op.batch_alter_table('folder_positions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('uidnext', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('message_count', sa.Integer(), nullable=True))

    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('connection', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('reps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest_time', sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column('digest_days', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('digest_always', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('digest_enabled', sa.Boolean(), nullable=False, server_default=sa.true()))



def downgrade() -> None:
    with op.batch_alter_table('reps', schema=None) as batch_op:
        batch_op.drop_column('digest_enabled')
        batch_op.drop_column('digest_always')
        batch_op.drop_column('digest_days')
        batch_op.drop_column('digest_time')

    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('failing_since')
        batch_op.drop_column('failures')
        batch_op.drop_column('last_error')
        batch_op.drop_column('last_error_at')
        batch_op.drop_column('last_success_at')
        batch_op.drop_column('connection')

    with op.batch_alter_table('folder_positions', schema=None) as batch_op:
        batch_op.drop_column('message_count')
        batch_op.drop_column('uidnext')
        batch_op.drop_column('role')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_rep_id'))
        batch_op.drop_index('ix_outbox_due')
        batch_op.drop_index(batch_op.f('ix_outbox_deal_id'))

    op.drop_table('outbox')

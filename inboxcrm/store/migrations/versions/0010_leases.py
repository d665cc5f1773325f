"""Several daemons on one database: the daemons that are alive, and who holds each mailbox and
each run-once job (leases with an owner and an expiry, renewed while the holder works).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('daemons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_daemons')),
    sa.UniqueConstraint('name', name=op.f('uq_daemons_name'))
    )
    op.create_table('leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource', sa.String(length=200), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=True),
    sa.Column('holder', sa.String(length=100), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_leases_mailbox_id_mailboxes'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leases')),
    sa.UniqueConstraint('resource', name=op.f('uq_leases_resource'))
    )
    op.create_index(op.f('ix_leases_mailbox_id'), 'leases', ['mailbox_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_leases_mailbox_id'), table_name='leases')
    op.drop_table('leases')
    op.drop_table('daemons')

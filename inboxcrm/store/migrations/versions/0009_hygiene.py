"""What keeping the CRM clean needs: bouncing addresses, deals in Nurture, merges that can be
undone, forgotten addresses kept only as keyed hashes, and an index on when messages arrived for
the [retention] raw_days sweep, and one on the outbox's kind and status for the metrics scrape.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 20:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite, batch mode would copy and drop contact_addresses
    # and deals, which the foreign keys of other tables refuse.
    op.add_column('contact_addresses', sa.Column('bounced_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('contact_addresses', sa.Column('bounce_reason', sa.String(length=500), nullable=True))
    op.create_index('ix_contact_addresses_bounced_at', 'contact_addresses', ['bounced_at'], unique=False)
    op.add_column('deals', sa.Column('nurtured_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_deals_nurtured_at', 'deals', ['nurtured_at'], unique=False)
    op.create_index('ix_messages_received_at', 'messages', ['received_at'], unique=False)
    op.create_index('ix_outbox_kind_status', 'outbox', ['kind', 'status'], unique=False)
    op.create_table('merges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('kept_id', sa.Integer(), nullable=False),
    sa.Column('merged_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('undo', sa.JSON(), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('undone_by', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_merges'))
    )
    op.create_table('forgotten_addresses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('then', sa.String(length=10), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_forgotten_addresses')),
    sa.UniqueConstraint('address_hash', name=op.f('uq_forgotten_addresses_address_hash'))
    )


def downgrade() -> None:
    op.drop_table('forgotten_addresses')
    op.drop_table('merges')
    op.drop_index('ix_outbox_kind_status', table_name='outbox')
    op.drop_index('ix_messages_received_at', table_name='messages')
    op.drop_index('ix_contact_addresses_bounced_at', table_name='contact_addresses')
    op.drop_index('ix_deals_nurtured_at', table_name='deals')
    for table, column in (('deals', 'nurtured_at'), ('contact_addresses', 'bounce_reason'),
                          ('contact_addresses', 'bounced_at')):
        _drop_column(table, column)


def _drop_column(table: str, column: str) -> None:
    """SQLite's own DROP COLUMN (3.35+), as in 0008: batch mode would copy and drop the table."""
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(f'ALTER TABLE {table} DROP COLUMN {column}')
    else:
        op.drop_column(table, column)

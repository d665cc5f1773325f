"""What the manager's reports and the weekly review need: stage win probabilities and the
qualifying mark, expected close dates with their history and slips, source costs, managers, and
indexes so a report reads only the period it covers.

Stages with the built-in names get the usual probabilities (New 10 % ... Negotiation 80 %, Won
100 %, Lost 0 %) and Qualified is marked qualifying; other stages keep NULL, which means the
default for their place in the pipeline. Copied here, not imported, like every migration's data.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

PROBABILITIES = {'new': 10, 'contacted': 20, 'qualified': 40, 'proposal': 60, 'negotiation': 80,
                 'won': 100, 'lost': 0}


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite, batch mode would copy and drop reps, stages and
    # deals, which the foreign keys of other tables refuse.
    op.add_column('reps', sa.Column('manager', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('stages', sa.Column('probability', sa.Integer(), nullable=True))
    op.add_column('stages', sa.Column('qualifying', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('deals', sa.Column('expected_close', sa.Date(), nullable=True))
    op.add_column('deals', sa.Column('close_slips', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_deals_created_at', 'deals', ['created_at'], unique=False)
    op.create_index('ix_deals_open_close', 'deals', ['closed_at', 'expected_close'], unique=False)
    op.create_index('ix_stage_history_at', 'stage_history', ['at'], unique=False)
    op.create_table('close_date_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deal_id', sa.Integer(), nullable=False),
    sa.Column('close_date', sa.Date(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('slipped', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.ForeignKeyConstraint(['deal_id'], ['deals.id'], name=op.f('fk_close_date_history_deal_id_deals'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_close_date_history'))
    )
    with op.batch_alter_table('close_date_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_close_date_history_at'), ['at'], unique=False)
    op.create_index('ix_close_date_history_deal_at', 'close_date_history', ['deal_id', 'at', 'id'], unique=False)
    op.create_index('ix_close_date_history_close_at', 'close_date_history', ['close_date', 'at'], unique=False)
    op.create_index('ix_deals_open_id', 'deals', ['id'], unique=False,
                    postgresql_where=sa.text('closed_at IS NULL'), sqlite_where=sa.text('closed_at IS NULL'))
    op.create_table('source_costs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_costs')),
    sa.UniqueConstraint('source', 'month', name=op.f('uq_source_costs_source'))
    )
    stages = sa.table('stages', sa.column('name', sa.String), sa.column('probability', sa.Integer),
                      sa.column('qualifying', sa.Boolean))
    for name, percent in PROBABILITIES.items():
        op.execute(stages.update().where(sa.func.lower(stages.c.name) == name).values(probability=percent))
    op.execute(stages.update().where(sa.func.lower(stages.c.name) == 'qualified').values(qualifying=True))


def downgrade() -> None:
    op.drop_table('source_costs')
    op.drop_index('ix_deals_open_id', table_name='deals')
    op.drop_index('ix_close_date_history_close_at', table_name='close_date_history')
    op.drop_index('ix_close_date_history_deal_at', table_name='close_date_history')
    with op.batch_alter_table('close_date_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_close_date_history_at'))
    op.drop_table('close_date_history')
    op.drop_index('ix_stage_history_at', table_name='stage_history')
    op.drop_index('ix_deals_open_close', table_name='deals')
    op.drop_index('ix_deals_created_at', table_name='deals')
    for table, column in (('deals', 'close_slips'), ('deals', 'expected_close'), ('stages', 'qualifying'),
                          ('stages', 'probability'), ('reps', 'manager')):
        _drop_column(table, column)


def _drop_column(table: str, column: str) -> None:
    """SQLite's own DROP COLUMN (3.35+): batch mode would copy and drop the table, which the
    foreign keys pointing at reps, stages and deals refuse."""
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(f'ALTER TABLE {table} DROP COLUMN {column}')
    else:
        op.drop_column(table, column)

"""Gmail's thread id and labels on a message's copy (X-GM-THRID, X-GM-LABELS).

Kept per copy, not per message: they are what one Gmail account says about its copy, and the
same message in another mailbox has other ones (or none). Existing copies get NULL: they were
read without the extension, and matching by thread id simply finds nothing for them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message_copies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gmail_thread_id', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('gmail_labels', sa.JSON(), nullable=True))
        batch_op.create_index('ix_message_copies_gmail_thread', ['mailbox_id', 'gmail_thread_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('message_copies', schema=None) as batch_op:
        batch_op.drop_index('ix_message_copies_gmail_thread')
        batch_op.drop_column('gmail_labels')
        batch_op.drop_column('gmail_thread_id')

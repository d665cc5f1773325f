"""Alembic environment: the engine is handed in by inboxcrm.store.db, never read from a file."""
from alembic import context

from inboxcrm.store.models import Base, UTCDateTime


def render_item(type_, obj, autogen_context):
    """Write UTCDateTime as the plain column type it is in the database: a migration must not
    import application code, which changes after the migration is written."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
    )
    context.run_migrations()

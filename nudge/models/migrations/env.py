"""Alembic environment: the URL comes from `nudge.models.db.migrate`, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from nudge.models.tables import Base

url = context.config.attributes["sqlalchemy_url"]
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()

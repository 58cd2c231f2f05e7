"""Alembic environment: migrations run on the connection :func:`ledger.index.db.migrate`
hands over in ``config.attributes["connection"]``; there is no ``alembic.ini``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from ledger.index.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if _connection is None:
    raise RuntimeError("run the index migrations through ledger.index.db.migrate")
_run(_connection)

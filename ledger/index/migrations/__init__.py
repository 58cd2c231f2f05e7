"""Alembic migrations of the index schema, shipped inside the package and run by
:func:`ledger.index.db.migrate` on start (never ``create_all`` on a real database)."""

"""The ``ledger`` command line.

:mod:`~ledger.cli.main` is the console script (and maps errors to exit codes),
:mod:`~ledger.cli.app` the typer app, :mod:`~ledger.cli.options` what the
commands share; one module per command group: :mod:`~ledger.cli.chain`,
:mod:`~ledger.cli.verify`, :mod:`~ledger.cli.runs`, :mod:`~ledger.cli.outbox`,
:mod:`~ledger.cli.store`, :mod:`~ledger.cli.audit`.
"""

"""The ``ledger`` command line: one typer app (:mod:`ledger.cli.app`), the console
script's entry (:mod:`ledger.cli.main`), and one module per command group."""

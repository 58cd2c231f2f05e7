"""``python -m ledger`` runs the CLI."""

from ledger.cli.main import main

main()

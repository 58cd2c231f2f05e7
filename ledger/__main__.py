"""``python -m ledger`` runs the CLI."""

from ledger._entry import main

main()

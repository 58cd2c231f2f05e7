"""Runnable examples of training with the ledger hook."""

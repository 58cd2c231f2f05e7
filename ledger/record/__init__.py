"""The recording side: the run's manifest (:mod:`~ledger.record.manifest`), the
documents stored for a weights file (:mod:`~ledger.record.artifacts`) and the
outbox between training and the chain (:mod:`~ledger.record.outbox`)."""

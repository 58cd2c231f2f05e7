"""Training integrations for ledger: adopt provenance in a training loop.

:class:`LedgerRun` wraps a plain PyTorch loop; it hands the run's manifest,
its checkpoints and its final weights to the durable outbox
(:mod:`ledger.record.outbox`), whose worker stores and commits them.
:func:`fingerprint` describes a data source (a file, folder, glob, array or
dataset) for ``LedgerRun(data=...)``, e.g. from a dataset's
``ledger_fingerprint()`` method. Examples live in :mod:`examples`.
"""

from ledger.ids import Relation
from ledger.record.data import fingerprint
from ledger.training.hook import LedgerRun, save_weights

__all__ = ["LedgerRun", "Relation", "fingerprint", "save_weights"]

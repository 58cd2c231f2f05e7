"""Training integrations for ledger: adopt provenance in a training loop.

:class:`LedgerRun` wraps a plain PyTorch loop; it commits the run's manifest,
its checkpoints and its final weights through :mod:`ledger.record.artifacts`.
Examples live in :mod:`examples`.
"""

from ledger.ids import Relation
from ledger.training.hook import LedgerRun, save_weights

__all__ = ["LedgerRun", "Relation", "save_weights"]

"""ledger: tamper-evident provenance for machine-learning training.

A training run, its checkpoints and its final weights are recorded on an EVM
registry contract; the documents behind each record (the run's manifest, the
metrics of each checkpoint) are kept in a content-addressed store under IPFS
CIDs. Three flows use this package:

* **commit** -- :mod:`ledger.training` (``LedgerRun``, the hook a training loop
  holds; needs the ``torch`` extra) builds the run's documents with
  :mod:`ledger.record`, files them in :mod:`ledger.store`, and hands each record
  to the durable outbox (:mod:`ledger.record.outbox`), whose worker signs and
  sends it to the registry (:mod:`ledger.chain`).
* **verify** -- :class:`Verifier` (:mod:`ledger.verify`, ``ledger verify``)
  hashes a weights file (:mod:`ledger.hashing`: its CID, and its tensor root
  when the file itself is unknown), looks the record up over plain JSON-RPC
  (:class:`RegistryReader`) and re-checks it against the stored documents. It
  never imports web3, torch or the CLI framework.
* **audit** -- :mod:`ledger.index` copies the registry's events into a SQL
  database and :mod:`ledger.api` serves them (FastAPI, ``ledger serve``);
  :mod:`ledger.catalog` reads runs and lineage straight from the chain.

:mod:`ledger.cli` is the ``ledger`` command; :mod:`ledger.config` resolves the
settings (:func:`load_settings`); :mod:`ledger.errors` holds the one exception
tree (:class:`LedgerError`), whose classes carry the CLI's exit code and the
API's HTTP status. Imports go one way only: errors, config and hashing at the
bottom; then the store and the chain; then record, verify and catalog; then the
index, the API, the training hook and the CLI on top.

The names below load on first use (PEP 562), so ``import ledger`` stays cheap:
every ``ledger verify`` pays for it.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # verify
    "Verifier": "ledger.verify",
    "VerifyReport": "ledger.verify",
    "Outcome": "ledger.verify",
    "Check": "ledger.verify",
    "RegistryReader": "ledger.chain.reader",
    # hashing: CIDs and tensor roots
    "Cid": "ledger.hashing.cid",
    "file_cid": "ledger.hashing.cid",
    "bytes_cid": "ledger.hashing.cid",
    "TensorDigest": "ledger.hashing.tensors",
    "tensor_digest": "ledger.hashing.tensors",
    "state_dict_digest": "ledger.hashing.tensors",
    # settings and the store
    "Settings": "ledger.config",
    "load_settings": "ledger.config",
    "ArtifactStore": "ledger.store",
    "LocalStore": "ledger.store",
    "open_store": "ledger.store",
    # what the registry records
    "Relation": "ledger.ids",
    "RunStatus": "ledger.chain.records",
    # the error tree: its root and main branches
    "LedgerError": "ledger.errors",
    "ConfigError": "ledger.errors",
    "InputError": "ledger.errors",
    "StoreError": "ledger.errors",
    "ChainError": "ledger.errors",
    "RecordError": "ledger.errors",
    "AuditIndexError": "ledger.errors",
    "AuthError": "ledger.errors",
}

# written out (not built from _EXPORTS) so that type checkers and IDEs read it
__all__ = [
    "ArtifactStore",
    "AuditIndexError",
    "AuthError",
    "ChainError",
    "Check",
    "Cid",
    "ConfigError",
    "InputError",
    "LedgerError",
    "LocalStore",
    "Outcome",
    "RecordError",
    "RegistryReader",
    "Relation",
    "RunStatus",
    "Settings",
    "StoreError",
    "TensorDigest",
    "Verifier",
    "VerifyReport",
    "__version__",
    "bytes_cid",
    "file_cid",
    "load_settings",
    "open_store",
    "state_dict_digest",
    "tensor_digest",
]

# `typing` costs more to import than this module: mypy reads the block, Python skips it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ledger.chain.reader import RegistryReader
    from ledger.chain.records import RunStatus
    from ledger.config import Settings, load_settings
    from ledger.errors import (
        AuditIndexError,
        AuthError,
        ChainError,
        ConfigError,
        InputError,
        LedgerError,
        RecordError,
        StoreError,
    )
    from ledger.hashing.cid import Cid, bytes_cid, file_cid
    from ledger.hashing.tensors import TensorDigest, state_dict_digest, tensor_digest
    from ledger.ids import Relation
    from ledger.store import ArtifactStore, LocalStore, open_store
    from ledger.verify import Check, Outcome, Verifier, VerifyReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

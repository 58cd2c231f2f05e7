"""Portable provenance: a run's evidence bundle, and its check without a store or node.

:mod:`ledger.bundle.export` writes it (``ledger export``), :mod:`ledger.bundle.check`
checks a model against it (``ledger verify MODEL --bundle FILE``),
:mod:`ledger.bundle.statement` maps a run into an in-toto Statement v1 with a
SLSA provenance v1 predicate, and :mod:`ledger.bundle.evidence` checks block
headers, receipt proofs and EIP-1186 state proofs (ledger.chain.rlp and .mpt build and
check them).
"""

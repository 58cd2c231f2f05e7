"""Hashing for ledger: IPFS CIDs of files (:mod:`ledger.hashing.cid`) and more."""

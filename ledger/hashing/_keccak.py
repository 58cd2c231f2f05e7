"""Ethereum's keccak-256 (not NIST SHA3-256), without importing web3."""

from __future__ import annotations

from Crypto.Hash import keccak as _keccak


def keccak256(data: bytes) -> bytes:
    return _keccak.new(data=data, digest_bits=256).digest()

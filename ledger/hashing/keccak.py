"""Ethereum's keccak-256 (not NIST SHA3-256), without importing web3."""

from __future__ import annotations

import struct
import sys


def _skip_platform_probe() -> None:
    """Spare pycryptodome its ``platform.architecture()`` call on Linux.

    Its ctypes loader asks for the architecture only to tell Windows linkage
    from the rest, and ``platform.architecture()`` finds it by running the
    ``file`` command in a subprocess: a fork and an exec in the middle of
    ``ledger verify``, while the file is being hashed on every core. On Linux
    the answer is known (ELF, the pointer width); elsewhere, or if the
    library's cache is not where it used to be, nothing is touched.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        from Crypto.Util import _raw_api
    except ImportError:  # pragma: no cover - pycryptodome is a dependency
        return
    cache = getattr(_raw_api, "cached_architecture", None)
    if isinstance(cache, list) and not cache:
        cache[:] = [f"{struct.calcsize('P') * 8}bit", "ELF"]


_skip_platform_probe()

from Crypto.Hash import keccak as _keccak  # noqa: E402  after the probe is settled


def keccak256(data: bytes) -> bytes:
    return _keccak.new(data=data, digest_bits=256).digest()

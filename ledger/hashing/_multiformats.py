"""The few multiformats pieces ledger needs: varints, base32, base58btc and CIDs.

Only what IPFS file CIDs use is supported: CID version 0 or 1, the codecs raw
(0x55) and dag-pb (0x70), and sha2-256 multihashes (code 0x12, 32-byte digest).

References: the multiformats specs for unsigned-varint, multibase, multihash and
CID (https://github.com/multiformats); RFC 4648 for base32.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass

from ledger.errors import InputError

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
SHA2_256_LENGTH = 32

_CODECS = {RAW: "raw", DAG_PB: "dag-pb"}
_ACCEPTED = (
    "accepted forms: CIDv0 'Qm...' (base58btc, dag-pb), CIDv1 'b...' (base32) or "
    "'z...' (base58btc) with codec raw or dag-pb and a sha2-256 multihash"
)

# -- unsigned varint ------------------------------------------------------------


def varint_encode(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError(f"varint_encode needs a non-negative integer, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_decode(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode one unsigned varint at ``offset``; return ``(value, next_offset)``.

    Rejects truncated input, values over 63 bits and non-minimal encodings, as
    the unsigned-varint spec asks.
    """
    value = 0
    shift = 0
    pos = offset
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - offset > 1:
                raise ValueError("varint is not minimally encoded")
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint is longer than 9 bytes")


# -- base32 (RFC 4648, lower case, no padding) ----------------------------------


def base32_encode(data: bytes) -> str:
    """RFC 4648 base32 in lower case without ``=`` padding (multibase ``b`` body)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def base32_decode(text: str) -> bytes:
    """Inverse of :func:`base32_encode`; raises ``ValueError`` on bad input."""
    if text != text.lower() or "=" in text:
        raise ValueError("base32 text must be lower case and unpadded")
    if len(text) % 8 in (1, 3, 6):
        raise ValueError("impossible base32 length")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except binascii.Error as exc:
        raise ValueError(f"invalid base32: {exc}") from exc


# -- base58btc ------------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}


def base58_encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (multibase ``z`` body); leading zero bytes become ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def base58_decode(text: str) -> bytes:
    """Inverse of :func:`base58_encode`; raises ``ValueError`` on a foreign character."""
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a base58btc character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


# -- CID ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cid:
    """A content identifier for a sha2-256-addressed raw or dag-pb block."""

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InputError(f"unsupported CID version {self.version!r}: only 0 and 1 exist")
        if self.codec not in _CODECS:
            raise InputError(
                f"unsupported CID codec 0x{self.codec:x}: ledger handles raw (0x55) "
                "and dag-pb (0x70)"
            )
        if self.version == 0 and self.codec != DAG_PB:
            raise InputError("a CIDv0 is always dag-pb (0x70); use version 1 for raw blocks")
        if not isinstance(self.digest, bytes) or len(self.digest) != SHA2_256_LENGTH:
            raise InputError("a CID digest must be the 32 bytes of a sha2-256 hash")

    @classmethod
    def from_digest(cls, digest: bytes, codec: int, version: int = 1) -> Cid:
        """Build a CID from a raw sha2-256 digest."""
        return cls(version=version, codec=codec, digest=bytes(digest))

    @property
    def multihash(self) -> bytes:
        """The binary multihash: ``0x12 0x20`` followed by the digest."""
        return bytes((SHA2_256, SHA2_256_LENGTH)) + self.digest

    def to_bytes(self) -> bytes:
        """The binary CID, as used inside dag-pb links."""
        if self.version == 0:
            return self.multihash
        return varint_encode(1) + varint_encode(self.codec) + self.multihash

    def to_v1(self) -> Cid:
        """The same block named by a CIDv1 (what ``ipfs cid base32`` prints)."""
        return Cid(version=1, codec=self.codec, digest=self.digest)

    def __str__(self) -> str:
        return self._text

    @functools.cached_property
    def _text(self) -> str:
        # kept on the instance: the outbox and the indexer name the same CID often
        if self.version == 0:
            return base58_encode(self.multihash)
        return "b" + base32_encode(self.to_bytes())

    def __repr__(self) -> str:
        return f"Cid({str(self)!r})"

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse ``Qm...`` (v0), ``b...`` (base32 v1) or ``z...`` (base58btc v1)."""
        if not isinstance(text, str):
            raise InputError(f"a CID must be given as text, got {type(text).__name__}; {_ACCEPTED}")
        if cls is Cid:
            return _parse_cached(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Cid:
        try:
            if len(text) == 46 and text.startswith("Qm"):
                raw = base58_decode(text)
                if raw[:2] != bytes((SHA2_256, SHA2_256_LENGTH)) or len(raw) != 34:
                    raise ValueError("not a sha2-256 multihash")
                return cls(version=0, codec=DAG_PB, digest=raw[2:])
            if text.startswith("Qm"):
                raise ValueError(f"a CIDv0 has 46 characters, not {len(text)}")
            if text.startswith("b"):
                return cls._from_v1_bytes(base32_decode(text[1:]))
            if text.startswith("z"):
                return cls._from_v1_bytes(base58_decode(text[1:]))
            raise ValueError("unknown prefix")
        except ValueError as exc:  # InputError is a ValueError too
            shown = text if len(text) <= 120 else text[:117] + "..."
            reason = exc.message if isinstance(exc, InputError) else str(exc)
            raise InputError(
                f"{shown!r} is not a CID ledger can read ({reason}); {_ACCEPTED}"
            ) from exc

    @classmethod
    def _from_v1_bytes(cls, raw: bytes) -> Cid:
        version, pos = varint_decode(raw)
        if version != 1:
            raise ValueError(f"CID version {version} is not 1")
        codec, pos = varint_decode(raw, pos)
        if codec not in _CODECS:
            raise ValueError(f"codec 0x{codec:x} is neither raw nor dag-pb")
        code, pos = varint_decode(raw, pos)
        length, pos = varint_decode(raw, pos)
        if code != SHA2_256 or length != SHA2_256_LENGTH:
            raise ValueError("multihash is not sha2-256")
        digest = raw[pos:]
        if len(digest) != SHA2_256_LENGTH:
            raise ValueError("multihash digest has the wrong length")
        return cls(version=1, codec=codec, digest=digest)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Cid:
    """:meth:`Cid.parse` of the CIDs read most (records in the journal and the index)."""
    return Cid._parse(text)

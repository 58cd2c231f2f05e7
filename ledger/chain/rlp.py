"""RLP, Ethereum's serialisation (yellow paper, appendix B): encode, and a strict decode.

Our own, not the ``rlp`` package: that package imports ``eth_utils``, which
imports pydantic, about 0.25 s of CPU on every start of ``ledger verify
--bundle`` (measured with ``python -X importtime``), half the time the issue
allows that command over hashing the file. The format is small and fixed, and
the tests hold this module to the ``rlp`` package on the same inputs.

:func:`decode` accepts only the canonical encoding (shortest length prefixes,
a single byte below 0x80 as itself, nothing after the item), so one value has
one encoding and a crafted proof node cannot pass for another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from ledger.errors import InputError

__all__ = ["MAX_DEPTH", "Item", "RlpError", "decode", "encode"]

Item: TypeAlias = "bytes | list[Item]"
"""A decoded RLP item: a byte string or a list of items."""


class RlpError(InputError):
    """Bytes that are not the canonical RLP encoding of one item."""


def encode(item: bytes | int | Sequence[Any]) -> bytes:
    """RLP of a byte string, a non-negative integer (big-endian, no leading zeros)
    or a list of such items."""
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP encodes non-negative integers only")
        return encode(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    if isinstance(item, bytes | bytearray):
        raw = bytes(item)
        if len(raw) == 1 and raw[0] < 0x80:
            return raw
        return _length_prefix(len(raw), 0x80) + raw
    payload = b"".join(encode(part) for part in item)
    return _length_prefix(len(payload), 0xC0) + payload


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def decode(data: bytes) -> Item:
    """The one item ``data`` encodes; :class:`RlpError` unless ``data`` is exactly
    its canonical encoding."""
    item, end = _decode_at(bytes(data), 0, 0)
    if end != len(data):
        raise RlpError(f"RLP: {len(data) - end} bytes after the item")
    return item


MAX_DEPTH = 16
"""Lists nested deeper are refused: Ethereum's structures nest three or four deep,
and a crafted input of nested empty lists must not exhaust the interpreter's stack."""


def _decode_at(data: bytes, start: int, depth: int) -> tuple[Item, int]:
    """The item at ``start`` and the offset after it."""
    if depth > MAX_DEPTH:
        raise RlpError(f"RLP: lists nested more than {MAX_DEPTH} deep")
    if start >= len(data):
        raise RlpError("RLP: input ends before the item")
    is_list, offset, length = _header(data, start)
    end = offset + length
    if end > len(data):
        raise RlpError("RLP: input ends inside the item")
    if not is_list:
        return data[offset:end], end
    items: list[Item] = []
    position = offset
    while position < end:
        item, position = _decode_at(data, position, depth + 1)
        items.append(item)
    if position != end:
        raise RlpError("RLP: a list's items overrun its length")
    return items, end


def _header(data: bytes, start: int) -> tuple[bool, int, int]:
    """(is a list, payload offset, payload length) of the item at ``start``."""
    first = data[start]
    if first < 0x80:
        return False, start, 1
    if first <= 0xB7:
        length = first - 0x80
        if length == 1 and start + 1 < len(data) and data[start + 1] < 0x80:
            raise RlpError("RLP: a single byte below 0x80 must encode as itself")
        return False, start + 1, length
    if first <= 0xBF:
        return False, *_long_length(data, start, first - 0xB7)
    if first <= 0xF7:
        return True, start + 1, first - 0xC0
    return True, *_long_length(data, start, first - 0xF7)


def _long_length(data: bytes, start: int, size: int) -> tuple[int, int]:
    raw = data[start + 1 : start + 1 + size]
    if len(raw) != size:
        raise RlpError("RLP: input ends inside a length")
    if raw[0] == 0:
        raise RlpError("RLP: a length with leading zeros")
    length = int.from_bytes(raw, "big")
    if length < 56:
        raise RlpError("RLP: a short length in the long form")
    return start + 1 + size, length

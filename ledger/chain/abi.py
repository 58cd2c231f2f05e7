"""The part of the Solidity ABI codec the read-only client needs, without web3.

Encodes call arguments (static words, static tuples, ``bytes``/``string`` and
dynamic arrays ``T[]``) and decodes return data and event data of the types the
registry uses: static words, ``string``/``bytes``, dynamic arrays ``T[]`` and
tuples (decoded to dicts keyed by component name, as web3 does for events).
Written from the Solidity ABI specification (docs.soliditylang.org, "Contract
ABI Specification").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from ledger.chain.records import checksum_address
from ledger.hashing.keccak import keccak256

Param = Mapping[str, Any]
"""One ABI parameter as the artifact's JSON describes it (``type``, ``components``...)."""

WORD = 32


def canonical_type(param: Param) -> str:
    """The type as it appears in a signature: tuples spelled out, ``(bytes32,uint8)[]``."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def signature(item: Param) -> str:
    """``name(type,...)`` of a function, event or error."""
    return f"{item['name']}({','.join(canonical_type(p) for p in item['inputs'])})"


def selector(item: Param) -> bytes:
    return _signature_hash(signature(item))[:4]


def topic(item: Param) -> bytes:
    return _signature_hash(signature(item))


@functools.cache
def _signature_hash(text: str) -> bytes:
    """keccak256 of a signature; a client asks for the same few again and again."""
    return keccak256(text.encode())


def encode_static(kind: str, value: Any) -> bytes:
    """One 32-byte word for a static argument."""
    if kind == "address":
        return bytes(12) + bytes.fromhex(checksum_address(str(value))[2:])
    if kind == "bool":
        return int(bool(value)).to_bytes(WORD, "big")
    if kind.startswith("uint"):
        return int(value).to_bytes(WORD, "big")
    if kind.startswith("bytes") and kind != "bytes":
        raw = bytes(value)
        if len(raw) != int(kind[5:]):
            raise ValueError(f"{kind} needs {kind[5:]} bytes, got {len(raw)}")
        return raw.ljust(WORD, b"\x00")
    raise ValueError(f"encoding {kind} is not supported here")


def encode_call(function: Param, args: Sequence[Any]) -> bytes:
    params = function["inputs"]
    if len(params) != len(args):
        raise ValueError(f"{function['name']} takes {len(params)} arguments, got {len(args)}")
    return selector(function) + encode_params(params, args)


def encode_params(params: Sequence[Param], values: Sequence[Any]) -> bytes:
    """Values laid out as one ABI tuple: static heads inline, dynamic ones by offset."""
    head_size = sum(_head_size(p) for p in params)
    heads: list[bytes] = []
    tails: list[bytes] = []
    for param, value in zip(params, values, strict=True):
        encoded = _encode_value(param, value)
        if _is_dynamic(param):
            offset = head_size + sum(len(t) for t in tails)
            heads.append(offset.to_bytes(WORD, "big"))
            tails.append(encoded)
        else:
            heads.append(encoded)
    return b"".join(heads) + b"".join(tails)


def _encode_value(param: Param, value: Any) -> bytes:
    kind = str(param["type"])
    if kind.endswith("[]"):
        element = {**param, "type": kind[:-2]}
        items = list(value)
        return len(items).to_bytes(WORD, "big") + encode_params([element] * len(items), items)
    if kind == "tuple":
        items = list(value.values()) if isinstance(value, Mapping) else list(value)
        return encode_params(param["components"], items)
    if kind in ("string", "bytes"):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        padded = raw + bytes(-len(raw) % WORD)
        return len(raw).to_bytes(WORD, "big") + padded
    return encode_static(kind, value)


def _is_dynamic(param: Param) -> bool:
    kind = str(param["type"])
    if kind in ("string", "bytes") or kind.endswith("[]"):
        return True
    if kind == "tuple":
        return any(_is_dynamic(c) for c in param["components"])
    return False


def _word(data: bytes, at: int) -> bytes:
    if at + WORD > len(data):
        raise ValueError("ABI data is shorter than its types need")
    return data[at : at + WORD]


def _uint(data: bytes, at: int) -> int:
    return int.from_bytes(_word(data, at), "big")


def _decode_one(param: Param, data: bytes, at: int) -> Any:
    """Decode ``param`` whose head is at ``at`` (offsets are relative to ``data``)."""
    kind = str(param["type"])
    if kind.endswith("[]"):
        start = _uint(data, at)
        count = _uint(data, start)
        element = {**param, "type": kind[:-2]}
        return decode_params([element] * count, data[start + WORD :])
    if kind == "tuple":
        if _is_dynamic(param):
            return decode_tuple(param["components"], data[_uint(data, at) :])
        return decode_tuple(param["components"], data[at:])
    if kind in ("string", "bytes"):
        start = _uint(data, at)
        length = _uint(data, start)
        raw = data[start + WORD : start + WORD + length]
        if len(raw) != length:
            raise ValueError("ABI data is shorter than its types need")
        return raw.decode("utf-8", errors="replace") if kind == "string" else raw
    word = _word(data, at)
    if kind == "address":
        return checksum_address(word[12:])
    if kind == "bool":
        return word[-1] == 1
    if kind.startswith("uint"):
        return int.from_bytes(word, "big")
    if kind.startswith("bytes"):
        return word[: int(kind[5:])]
    raise ValueError(f"decoding {kind} is not supported here")


def _head_size(param: Param) -> int:
    if _is_dynamic(param):
        return WORD
    if param["type"] == "tuple":
        return sum(_head_size(c) for c in param["components"])
    return WORD


def decode_params(params: Sequence[Param], data: bytes) -> list[Any]:
    """Decode a sequence of values laid out as one ABI tuple."""
    values = []
    at = 0
    for param in params:
        values.append(_decode_one(param, data, at))
        at += _head_size(param)
    return values


def decode_tuple(components: Sequence[Param], data: bytes) -> dict[str, Any]:
    values = decode_params(components, data)
    return {str(c["name"]): v for c, v in zip(components, values, strict=True)}

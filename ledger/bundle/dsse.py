"""The bundle's Statement as a DSSE envelope, signed with the committer's key.

DSSE (the envelope in-toto attestations travel in) signs the pre-authentication
encoding ``PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body``
of the payload, never the payload alone. Here the signature is an Ethereum one:
recoverable secp256k1 (libsecp256k1 via ``coincurve``, the library the outbox
signs transactions with) over ``keccak256(PAE)``, 65 bytes ``r || s || v`` (``v``
27 or 28), base64 in ``sig``; ``keyid`` is the signer's address. Whoever checks
it recovers the address from the signature, as ``ecrecover`` does, and compares
it with the run's committer the chain proves: no key needs to be distributed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ledger.chain.records import checksum_address
from ledger.errors import InputError
from ledger.hashing.keccak import keccak256

if TYPE_CHECKING:
    from ledger.chain.sender import Signer

PAYLOAD_TYPE = "application/vnd.in-toto+json"

__all__ = ["PAYLOAD_TYPE", "Signature", "pae", "read_envelope", "sign_statement"]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of ``payload`` (DSSE v1 protocol)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def statement_payload(statement: Mapping[str, Any]) -> bytes:
    """The bytes of the Statement that are signed (sorted keys, no spaces, UTF-8)."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sign_statement(statement: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """A DSSE envelope of ``statement`` signed by ``signer`` (``keyid``: its address)."""
    payload = statement_payload(statement)
    signature = signer.sign_digest(keccak256(pae(PAYLOAD_TYPE, payload)))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {"keyid": signer.address, "sig": base64.b64encode(signature).decode("ascii")}
        ],
    }


class Signature:
    """One signature of an envelope: the address it recovers to, and its ``keyid``."""

    def __init__(self, signer: str, keyid: str | None) -> None:
        self.signer = signer
        self.keyid = keyid


def read_envelope(envelope: Mapping[str, Any]) -> tuple[dict[str, Any], list[Signature]]:
    """The Statement an envelope carries and who signed it.

    An :class:`InputError` names what is wrong: another payload type, a payload
    that is not base64 JSON, no signatures, a signature that recovers no key.
    """
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise InputError(
            f"the envelope's payloadType is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE!r}"
        )
    try:
        payload = base64.b64decode(str(envelope["payload"]), validate=True)
        statement = json.loads(payload)
    except (KeyError, binascii.Error, ValueError, RecursionError) as exc:
        raise InputError("the envelope's payload is not base64 of a JSON Statement") from exc
    if not isinstance(statement, dict):
        raise InputError("the envelope's payload is not a JSON Statement")
    entries = envelope.get("signatures")
    if not isinstance(entries, list) or not entries:
        raise InputError("the envelope has no signatures")
    digest = keccak256(pae(PAYLOAD_TYPE, payload))
    out = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise InputError(f"signature {n} of the envelope is not an object")
        keyid = entry.get("keyid")
        out.append(Signature(_recover(digest, entry.get("sig"), n), str(keyid) if keyid else None))
    return statement, out


def _recover(digest: bytes, sig: object, n: int) -> str:
    from coincurve import PublicKey

    try:
        raw = base64.b64decode(str(sig), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"signature {n} of the envelope is not base64") from exc
    if len(raw) != 65 or raw[64] not in (0, 1, 27, 28):
        raise InputError(f"signature {n} of the envelope is not a 65-byte r || s || v signature")
    try:
        public = PublicKey.from_signature_and_message(
            raw[:64] + bytes([raw[64] % 27]), digest, hasher=None
        )
    except ValueError as exc:
        raise InputError(f"signature {n} of the envelope recovers no public key") from exc
    return checksum_address(keccak256(public.format(compressed=False)[1:])[-20:])

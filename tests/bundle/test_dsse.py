"""The bundle's Statement signed as a DSSE envelope with the committer's key.

The envelope is checked here against an independent implementation: the PAE
is built by hand from the DSSE spec and the signer recovered with eth_account.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from ledger.bundle.dsse import sign_statement
from ledger.bundle.export import Exporter
from ledger.chain.sender import Signer
from ledger.config import ANVIL_DEV_KEY, Secret
from ledger.errors import InputError
from ledger.hashing.keccak import keccak256
from ledger.store import LocalStore
from ledger.verify import Outcome
from tests.bundle.test_bundle import check, lineage, reader
from tests.conftest import Chain

OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1


@pytest.fixture
def signed(chain: Chain, store: LocalStore, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    _, child = lineage(chain.registry, store)
    model = tmp_path / "model.safetensors"
    model.write_bytes(child.weights[-1])
    signer = Signer(Secret(ANVIL_DEV_KEY))
    bundle = Exporter(reader(chain), store).export(child.run_id, weights=model, signer=signer)
    return model, bundle


def _signature(report: Any) -> Any:
    return next(c for c in report.checks if c.name == "signature")


def test_envelope_is_dsse_signed_by_the_committer(
    signed: tuple[Path, dict[str, Any]], chain: Chain
) -> None:
    model, bundle = signed
    envelope = bundle["envelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    assert json.loads(payload) == bundle["statement"]
    kind = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)  # the DSSE spec
    [entry] = envelope["signatures"]
    sig = base64.b64decode(entry["sig"])
    recovered = Account._recover_hash(keccak256(pae), signature=sig)
    assert recovered == entry["keyid"] == chain.admin.address
    report = check(model, bundle)
    assert report.outcome is Outcome.PROVEN, report.failed
    assert _signature(report).ok
    assert chain.admin.address in _signature(report).detail


def test_unsigned_bundle_still_verifies(signed: tuple[Path, dict[str, Any]]) -> None:
    model, bundle = signed
    unsigned = {k: v for k, v in bundle.items() if k != "envelope"}
    report = check(model, unsigned)
    assert report.outcome is Outcome.PROVEN, report.failed
    assert _signature(report).ok and _signature(report).detail.startswith("unsigned")


def test_foreign_signature_is_mismatch_naming_the_signer(
    signed: tuple[Path, dict[str, Any]],
) -> None:
    model, bundle = signed
    other = Signer(Secret(OTHER_KEY))
    forged = copy.deepcopy(bundle)
    forged["envelope"] = sign_statement(bundle["statement"], other)
    report = check(model, forged)
    assert report.outcome is Outcome.MISMATCH
    assert [c.name for c in report.failed] == ["signature"]
    assert other.address in _signature(report).detail
    assert "not by the run's committer" in _signature(report).detail
    # a second, foreign signature beside the committer's is refused too
    both = copy.deepcopy(bundle)
    both["envelope"]["signatures"] += forged["envelope"]["signatures"]
    assert check(model, both).outcome is Outcome.MISMATCH


def _flip_sig(b: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(b["envelope"]["signatures"][0]["sig"]))
    raw[10] ^= 1
    b["envelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()


def _resign_other_statement(b: dict[str, Any]) -> None:
    other = copy.deepcopy(b["statement"])
    other["predicate"]["buildDefinition"]["externalParameters"]["seed"] = 8
    b["envelope"] = sign_statement(other, Signer(Secret(ANVIL_DEV_KEY)))


BAD = {
    "flipped signature byte": _flip_sig,
    "payload of another Statement": _resign_other_statement,
    "payload type": lambda b: b["envelope"].update(payloadType="application/json"),
    "payload not base64": lambda b: b["envelope"].update(payload="not base64!"),
    "no signatures": lambda b: b["envelope"].update(signatures=[]),
    "short signature": lambda b: b["envelope"]["signatures"][0].update(sig="AAAA"),
    "keyid of another": lambda b: b["envelope"]["signatures"][0].update(keyid="0x" + "11" * 20),
    "not an object": lambda b: b.update(envelope="signed"),
    "payload nested too deep": lambda b: b["envelope"].update(
        payload=base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    ),
}


@pytest.mark.parametrize("edit", list(BAD))
def test_bad_envelopes_are_mismatch(signed: tuple[Path, dict[str, Any]], edit: str) -> None:
    model, bundle = signed
    edited = copy.deepcopy(bundle)
    BAD[edit](edited)
    report = check(model, edited)
    assert report.outcome is Outcome.MISMATCH, (edit, report.checks)
    assert [c.name for c in report.failed] == ["signature"], report.failed


def test_export_refuses_a_key_that_is_not_the_committers(
    chain: Chain, store: LocalStore, tmp_path: Path
) -> None:
    _, child = lineage(chain.registry, store)
    with pytest.raises(InputError, match=r"not run .* committer"):
        Exporter(reader(chain), store).export(child.run_id, signer=Signer(Secret(OTHER_KEY)))


def test_cli_signs_by_default_only_with_the_committers_key(
    chain: Chain, store: LocalStore, tmp_path: Path
) -> None:
    from dataclasses import replace

    from ledger.cli.bundle import _signer

    _, child = lineage(chain.registry, store)
    settings = chain.settings(tmp_path / "home")  # no key configured: Anvil's dev key
    registry = reader(chain)
    default = _signer(settings, registry, child.run_id, None)
    assert default is not None and default.address == chain.admin.address
    assert _signer(settings, registry, child.run_id, False) is None
    foreign = replace(settings, private_key=Secret(OTHER_KEY))
    assert _signer(foreign, registry, child.run_id, None) is None  # unsigned, not forged
    with pytest.raises(InputError, match=r"not run .* committer"):
        _signer(foreign, registry, child.run_id, True)

"""The committed registry artifact is what the sources compile to, byte for byte."""

from __future__ import annotations

import hashlib

from ledger.chain.compiler import ARTIFACT_PATH, compile_registry, load_artifact, project_root
from tests.conftest import Chain


def test_artifact_rebuilds_bit_for_bit_from_source() -> None:
    committed = load_artifact()
    rebuilt = compile_registry()
    assert rebuilt["bytecode"] == committed["bytecode"]
    assert rebuilt["deployedBytecode"] == committed["deployedBytecode"]
    assert rebuilt["abi"] == committed["abi"]
    assert rebuilt["compiler"] == committed["compiler"]
    assert rebuilt["settings"] == committed["settings"]
    assert rebuilt["sourceDigests"] == committed["sourceDigests"]


def test_artifact_names_its_sources_by_digest() -> None:
    artifact = load_artifact()
    root = project_root()
    assert "contracts/ProvenanceRegistry.sol" in artifact["sourceDigests"]
    for path, digest in artifact["sourceDigests"].items():
        assert digest == "sha256:" + hashlib.sha256((root / path).read_bytes()).hexdigest(), path
    assert artifact["compiler"]["version"].startswith("0.8.30")
    assert ARTIFACT_PATH.is_file()


def test_the_deployed_code_is_the_artifact(chain: Chain) -> None:
    artifact = load_artifact()
    code = bytearray(chain.w3.eth.get_code(chain.registry.address))
    expected = bytes.fromhex(artifact["deployedBytecode"][2:])
    assert len(code) == len(expected)
    ranges = [r for refs in artifact["immutableReferences"].values() for r in refs]
    assert ranges, "EIP712 caches its domain in immutables"
    for r in ranges:  # the constructor fills these in; the rest must match byte for byte
        start, length = r["start"], r["length"]
        assert expected[start : start + length] == bytes(length)
        code[start : start + length] = bytes(length)
    assert bytes(code) == expected
    assert chain.registry.version() == "3.0.0"

"""The web3-free read-only client answers exactly what the web3 client answers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ledger.chain.reader import RegistryReader
from ledger.chain.records import checksum_address, run_id_for
from ledger.config import Settings
from ledger.errors import ConfigError, RegistryNotDeployedError
from ledger.hashing.merkle import CheckpointLeaf, MerkleTree, checkpoint_root
from ledger.ids import Relation
from tests.chain.web3_registry import FinalRecord, Registry
from tests.conftest import Chain

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = ("RunStarted", "CheckpointCommitted", "RunFinalized", "RunFailed", "RunRevoked")


def plain(value: Any) -> Any:
    """web3's AttributeDict/HexBytes/tuples as plain dicts, bytes and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return bytes(value)
    return value


def reader_for(chain: Chain, tmp_path: Path) -> RegistryReader:
    return RegistryReader.connect(chain.settings(tmp_path / "ledger"))


def test_reader_and_web3_client_agree_on_every_view_and_event(chain: Chain, tmp_path: Path) -> None:
    registry = chain.registry
    parent, _ = registry.start_run(os.urandom(32))
    leaves = [CheckpointLeaf(s, os.urandom(32), os.urandom(32), os.urandom(32)) for s in (3, 4, 5)]
    registry.commit_checkpoints([(parent, leaf) for leaf in leaves])
    registry.commit_checkpoint(parent, leaves[1])  # a re-send: listed once
    weights, root = os.urandom(32), os.urandom(32)
    final = FinalRecord(weights, root, os.urandom(32), checkpoint_root(leaves), len(leaves))
    registry.finalize_run(parent, final)
    other, _ = registry.start_run(os.urandom(32))
    child, _ = registry.start_run(
        os.urandom(32), [(parent, Relation.FINE_TUNE), (other, Relation.OTHER)]
    )
    registry.mark_failed(child, "diverged: ünïcode reason")
    registry.revoke_run(parent, "leaked test data")

    reader = reader_for(chain, tmp_path)
    assert reader.address == registry.address
    for run_id in (parent, child, os.urandom(32)):
        assert reader.get_run(run_id) == registry.get_run(run_id)
        for name in EVENTS:
            assert plain(reader.events(name, run_id)) == plain(registry.events(name, run_id)), name
    assert reader.find_by_weights(weights) == registry.find_by_weights(weights) != []
    assert reader.find_by_tensor_root(root) == registry.find_by_tensor_root(root) != []
    digest = leaves[0].weights_digest
    assert reader.find_by_weights(digest) == registry.find_by_weights(digest) != []
    assert reader.find_by_weights(os.urandom(32)) == []
    assert reader.find_by_tensor_root(b"\x00" * 32) == []
    assert reader.checkpoints(parent) == registry.checkpoints(parent)
    assert len(reader.checkpoints(parent)) == 3
    assert reader.final_record(parent) == registry.final_record(parent) is not None
    assert reader.is_final_record(parent, final) and registry.is_final_record(parent, final)
    assert not reader.is_final_record(child, final)
    tree = MerkleTree([leaf.hash for leaf in leaves])
    for leaf in leaves:
        proof = tree.proof(leaf.hash)
        assert reader.verify_checkpoint(parent, final, leaf, proof)
        assert registry.verify_checkpoint(parent, final, leaf, proof)
    assert not reader.verify_checkpoint(parent, final, leaves[0], tree.proof(leaves[1].hash))
    for account in (chain.admin.address, chain.alice.address):
        assert reader.is_committer(account) == registry.is_committer(account)
    started = reader.events("RunStarted", child)[0]
    assert [p["relation"] for p in started["parents"]] == [1, 7]
    assert reader.events("RunFailed", child)[0]["reason"] == "diverged: ünïcode reason"


def test_run_id_and_checksum_match_the_contract_and_web3(chain: Chain) -> None:
    from eth_utils.address import to_checksum_address

    digest = os.urandom(32)
    on_chain = chain.registry.contract.functions.computeRunId(chain.alice.address, digest).call()
    assert run_id_for(chain.alice.address, digest) == bytes(on_chain)
    assert Registry.run_id_for(chain.alice.address.lower(), digest) == bytes(on_chain)
    for _ in range(50):
        address = "0x" + os.urandom(20).hex()
        assert checksum_address(address) == to_checksum_address(address)


def test_reader_refuses_a_missing_registry_and_a_wrong_chain(chain: Chain, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ledger deploy"):
        RegistryReader.connect(Settings(data_dir=tmp_path, rpc_url=chain.rpc_url))
    nobody = Settings(data_dir=tmp_path, rpc_url=chain.rpc_url, registry_address="0x" + "11" * 20)
    with pytest.raises(RegistryNotDeployedError, match="no contract"):
        RegistryReader.connect(nobody)
    # code that is not a registry: it reverts every call (PUSH 0, PUSH 0, REVERT)
    init = bytes.fromhex("6005600c60003960056000f3" + "60006000fd")
    tx = chain.w3.eth.send_transaction({"from": chain.admin.address, "data": init})
    other = chain.w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    foreign = Settings(data_dir=tmp_path, rpc_url=chain.rpc_url, registry_address=other)
    with pytest.raises(RegistryNotDeployedError, match="not a ledger registry"):
        RegistryReader.connect(foreign)
    wrong = Settings(
        data_dir=tmp_path,
        rpc_url=chain.rpc_url,
        registry_address=chain.registry.address,
        chain_id=1,
    )
    with pytest.raises(ConfigError, match="chain id 1"):
        RegistryReader.connect(wrong)


def assert_loads_none(imports: str, heavy: set[str]) -> None:
    """In a fresh interpreter, ``import {imports}`` loads none of ``heavy``."""
    code = (
        "import sys\n"
        f"import {imports}\n"
        f"found = sorted({set(heavy)!r} & set(sys.modules))\n"
        "assert not found, found\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_verify_path_imports_neither_web3_nor_torch() -> None:
    assert_loads_none(
        "ledger.cli.app, ledger.verify, ledger.chain.reader, ledger.store",
        {"web3", "eth_account", "torch", "rich"},
    )


def test_verify_without_the_parser_loads_no_cli_framework_nor_http_client() -> None:
    """What ``ledger verify FILE`` loads while the file is hashed: no typer, click or rich,
    and HTTP on a socket (``http.client`` would bring ``email`` and ``ssl``)."""
    assert_loads_none(
        "ledger.cli.main, ledger.cli._early, ledger.cli.check, ledger.config, ledger.verify, "
        "ledger.chain.reader, ledger.store, ledger.hashing.cid",
        {"typer", "click", "rich", "http.client", "ssl", "email", "concurrent.futures"}
        | {"web3", "torch", "zipfile"},
    )

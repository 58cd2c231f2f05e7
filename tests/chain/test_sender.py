"""The outbox's web3-free sender against eth_account and a real Anvil."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account

from ledger.chain.records import run_id_for
from ledger.chain.rpc import JsonRpc
from ledger.chain.sender import Receipt, RegistrySender, Signer, address_of
from ledger.config import ANVIL_DEV_KEY, Secret
from ledger.errors import ConfigError, NonceTooLowError, RpcError, TransactionRevertedError
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import Relation
from tests.conftest import OTHER_KEYS, Chain

ROOT = Path(__file__).resolve().parents[2]


def sender(chain: Chain, tmp_path: Path, key: str = ANVIL_DEV_KEY) -> RegistrySender:
    return RegistrySender.connect(chain.settings(tmp_path / "ledger"), Secret(key))


class CountingRpc(JsonRpc):
    """The real client, counting the HTTP requests it makes."""

    requests = 0

    def _post(self, body: bytes) -> bytes:
        self.requests += 1
        return super()._post(body)


def mined(client: RegistrySender, tx_hash: str) -> Receipt:
    """The receipt, polled: Anvil answers the broadcast before the receipt exists."""
    deadline = time.monotonic() + 30
    while (receipt := client.receipt(tx_hash)) is None:
        assert time.monotonic() < deadline, f"{tx_hash} not mined"
        time.sleep(0.02)
    return receipt


def send(client: RegistrySender, data: bytes) -> Receipt:
    prepared = client.prepare(data, nonce=client.pending_nonce())
    client.broadcast(prepared.raw)
    return mined(client, prepared.tx_hash)


@pytest.mark.parametrize("key", [ANVIL_DEV_KEY, *OTHER_KEYS])
def test_signed_bytes_equal_eth_accounts(key: str) -> None:
    fields = {"gas": 123_456, "maxPriorityFeePerGas": 1_000_000_000, "maxFeePerGas": 3_000_000_007}
    to = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    data = bytes(range(200))
    ours = Signer(Secret(key)).sign_1559(31337, 7, fields, to, data)
    theirs = Account.from_key(key).sign_transaction(
        {**fields, "chainId": 31337, "nonce": 7, "to": to, "data": data, "value": 0}
    )
    assert ours == bytes(theirs.raw_transaction)
    assert address_of(Secret(key)) == Account.from_key(key).address


def test_a_bad_key_is_a_config_error_that_hides_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        Signer(Secret("0x1234"))
    assert "1234" not in str(caught.value)
    assert "0x" not in repr(Signer(Secret(ANVIL_DEV_KEY))).replace(
        Signer(Secret(ANVIL_DEV_KEY)).address, ""
    )


def test_batches_land_and_refusals_name_the_contract_error(chain: Chain, tmp_path: Path) -> None:
    client = sender(chain, tmp_path)
    digest = bytes(range(32))
    data = client.batch_call("start", [(digest, [])])
    receipt = send(client, data)
    assert receipt.ok
    assert client.block_hash(receipt.block_number) == receipt.block_hash
    assert client.block_hash(receipt.block_number + 1000) is None
    run_id = run_id_for(client.signer.address, digest)
    assert [e["runId"] for e in client.events("RunStarted", run_id)] == [run_id]
    leaf = CheckpointLeaf(3, bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32)
    send(client, client.batch_call("checkpoint", [(run_id, leaf)]))
    assert [int(e["step"]) for e in chain.registry.events("CheckpointCommitted", run_id)] == [3]
    with pytest.raises(TransactionRevertedError) as refused:  # the same start again
        client.prepare(data, nonce=client.pending_nonce())
    assert refused.value.error_name == "RegistryRunExists"
    assert refused.value.error_args == (run_id,)
    with pytest.raises(NonceTooLowError):
        client.broadcast(client.prepare(client.batch_call("fail", [(run_id, "x")]), nonce=0).raw)
    assert client.mined_nonce(client.signer.address) == client.pending_nonce()


def test_a_batch_on_anvil_answers_each_call_or_its_error(chain: Chain, tmp_path: Path) -> None:
    client = sender(chain, tmp_path)
    digest = bytes([7]) * 32
    data = client.batch_call("start", [(digest, [])])
    send(client, data)
    again = {"from": client.signer.address, "to": client.address, "data": "0x" + data.hex()}
    answers = client.rpc.batch(
        [
            ("eth_chainId", []),
            ("eth_estimateGas", [again]),  # refused: RegistryRunExists(run id)
            ("eth_getTransactionCount", [client.signer.address, "pending"]),
            ("eth_noSuchMethod", []),
            ("eth_getBlockByNumber", ["latest", False]),
        ]
    )
    assert int(answers[0], 16) == 31337
    assert int(answers[2], 16) == client.pending_nonce()
    assert answers[4]["hash"] == client.block_hash(int(answers[4]["number"], 16))
    with pytest.raises(RpcError) as single:
        client.rpc("eth_estimateGas", again)
    with pytest.raises(RpcError) as batched:
        answers[1]
    run_id = run_id_for(client.signer.address, digest)
    assert isinstance(batched.value.data, str) and batched.value.data.endswith(run_id.hex())
    assert (batched.value.code, batched.value.data) == (single.value.code, single.value.data)
    assert str(batched.value) == str(single.value)
    unknown = answers.error(3)
    assert unknown is not None and unknown.code == -32601


def test_prepare_asks_nonce_gas_and_fees_in_one_request(chain: Chain, tmp_path: Path) -> None:
    connected = sender(chain, tmp_path)
    rpc = CountingRpc(chain.rpc_url)
    client = RegistrySender(rpc, connected.address, connected.signer, connected.chain_id)
    first = client.batch_call("start", [(bytes([5]) * 32, [])])
    nonce = client.pending_nonce()
    rpc.requests = 0
    prepared = client.prepare(first)
    assert rpc.requests == 1 and prepared.nonce == nonce
    client.broadcast(prepared.raw)
    assert mined(client, prepared.tx_hash).ok
    other = client.batch_call("start", [(bytes([6]) * 32, [])])
    assert client.prepare(other).nonce == nonce + 1  # asked again: the pending nonce moved on
    rpc.requests = 0
    assert client.prepare(other, nonce=41).nonce == 41  # a nonce given is used as it is
    assert rpc.requests == 1
    rpc.requests = 0
    with pytest.raises(TransactionRevertedError) as refused:  # the same start again
        client.prepare(first)
    assert rpc.requests == 1 and refused.value.error_name == "RegistryRunExists"


def test_a_parent_relation_goes_through(chain: Chain, tmp_path: Path) -> None:
    client = sender(chain, tmp_path)
    parent_digest, child_digest = bytes([9]) * 32, bytes([8]) * 32
    parent = run_id_for(client.signer.address, parent_digest)
    for item in [(parent_digest, []), (child_digest, [(parent, Relation.FINE_TUNE)])]:
        assert send(client, client.batch_call("start", [item])).ok
    child = run_id_for(client.signer.address, child_digest)
    [started] = chain.registry.events("RunStarted", child)
    assert started["committer"] == client.signer.address
    assert [(p["runId"], p["relation"]) for p in started["parents"]] == [(parent, 1)]


def test_the_sender_does_not_import_web3() -> None:
    code = (
        "import sys; import ledger.record.outbox.worker, ledger.chain.sender; "
        "print(sorted(m for m in ('web3', 'eth_account', 'eth_keys', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"

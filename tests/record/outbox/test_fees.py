"""Fee spikes and the fee cap, on an Anvil of each test's own (its mining and base
fee are changed: the session chain is left alone).

A transaction gets stuck the way it does on a busy network: Anvil's automine is
off, the next block's base fee jumps (``anvil_setNextBlockBaseFeePerGas``) above
the transaction's max fee, and blocks are mined without it. The outbox must
replace it with the same nonce and higher fees, keep every hash, accept whichever
is mined, and record each entry once; under ``LEDGER_MAX_FEE_GWEI`` it must hold
records with one line per spike and send them once fees fall.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.chain.admin import deploy_registry
from ledger.chain.anvil import AnvilProcess, rpc_call
from ledger.chain.sender import FEE_BUMP, Fees
from ledger.config import GWEI, Settings, load_settings, save_deployment
from ledger.record.manifest import build_manifest
from ledger.record.outbox import Outbox
from ledger.record.outbox.worker import Worker
from tests.chain.web3_registry import Registry
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class FeeChain:
    """An Anvil of this test with the registry deployed, and the worker's view of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.anvil = AnvilProcess(tmp_path / "chain", port=free_port())
        self.anvil.start(persist=False)
        self.home = tmp_path / "ledger"
        base = Settings(data_dir=self.home, rpc_url=self.anvil.rpc_url)
        registry, _tx = deploy_registry(base)
        save_deployment(base, address=registry.address, chain_id=registry.chain_id, block=0)
        self.sender = registry.signer.address

    def rpc(self, method: str, *params: object) -> object:
        return rpc_call(self.anvil.rpc_url, method, list(params))

    def next_base_fee(self, gwei: float) -> None:
        self.rpc("anvil_setNextBlockBaseFeePerGas", hex(int(gwei * GWEI)))

    def mine(self) -> None:
        self.rpc("anvil_mine", "0x1")

    def pool(self) -> dict[str, object]:
        """This sender's pending transactions by nonce."""
        content = self.rpc("txpool_content")
        assert isinstance(content, dict)
        return dict(content["pending"].get(self.sender.lower(), {}))

    def mined_nonce(self) -> int:
        return int(str(self.rpc("eth_getTransactionCount", self.sender, "latest")), 16)

    def registry(self) -> Registry:
        return Registry.connect(load_settings(self.home), signer=False)

    def stop(self) -> None:
        self.anvil.stop()


@pytest.fixture
def fee_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FeeChain]:
    for name in [k for k in os.environ if k.startswith("LEDGER_") and k != "LEDGER_OUTBOX_KEEP"]:
        monkeypatch.delenv(name)
    found = FeeChain(tmp_path)
    try:
        yield found
    finally:
        found.stop()


def outbox_and_worker(
    fee_chain: FeeChain, lines: list[str], *, cap_gwei: float | None = None
) -> tuple[Outbox, Worker]:
    settings = load_settings(fee_chain.home)
    if cap_gwei is not None:
        settings = replace(settings, max_fee_per_gas=int(cap_gwei * GWEI))
    outbox = Outbox(settings, background=False)
    worker = Worker(outbox.journal, settings, say=lines.append, urgent=True, receipt_wait=0.3)
    return outbox, worker


def start(outbox: Outbox, name: str) -> str:
    return outbox.start_run(build_manifest(name=name, config={"lr": 0.1}, created_at=None))


def started_events(fee_chain: FeeChain, run_id: str) -> list[dict[str, object]]:
    return fee_chain.registry().events("RunStarted", bytes.fromhex(run_id[2:]))


def test_fees_are_raised_by_at_least_the_bump_geth_asks() -> None:
    assert FEE_BUMP >= 1.125
    for fees in (Fees(2 * GWEI + 7, GWEI), Fees(3, 0), Fees(10**12 + 1, 10**9 + 3)):
        bumped = fees.bumped()
        assert bumped.max_fee * 1000 >= fees.max_fee * 1125 and bumped.max_fee > fees.max_fee
        assert bumped.priority * 10 >= fees.priority * 11 and bumped.priority > fees.priority
    with pytest.raises(ValueError):
        Fees.of(b"\x01" + bytes(40))  # not EIP-1559
    with pytest.raises(ValueError):
        Fees.of(b"\x02\xff")  # not RLP


@pytest.mark.parametrize("dropped", [True, False], ids=["dropped-by-the-node", "kept-in-pool"])
def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_recorded_once(
    fee_chain: FeeChain, dropped: bool
) -> None:
    """Anvil drops a transaction a mined block could not take; geth keeps it pending:
    either way it is replaced, and the node ends with one transaction at its nonce."""
    lines: list[str] = []
    outbox, worker = outbox_and_worker(fee_chain, lines)
    fee_chain.rpc("evm_setAutomine", False)
    run_id = start(outbox, "stuck")
    worker.run_once()  # stored, signed, broadcast: pending (no block is mined)
    [entry] = outbox.journal.entries()
    assert entry.state == "sent" and entry.tx_hash is not None
    first = outbox.journal.saved_tx(entry.tx_hash)
    assert first is not None and list(fee_chain.pool()) == [str(first.nonce)]
    # the base fee jumps above what it offers: blocks go by without it
    fee_chain.next_base_fee(100)
    if dropped:
        fee_chain.mine()
    assert fee_chain.mined_nonce() == first.nonce  # not mined
    worker.run_once()  # stuck: replaced
    [entry] = outbox.journal.entries()
    assert entry.state == "sent" and entry.tx_hash != first.tx_hash
    family = outbox.journal.tx_family(entry.tx_hash)
    assert [t.tx_hash for t in family] == [first.tx_hash, entry.tx_hash]  # both kept
    second = family[1]
    assert (second.nonce, second.sender) == (first.nonce, first.sender)
    old, new = Fees.of(first.raw), Fees.of(second.raw)
    assert new.max_fee * 1000 >= old.max_fee * 1125 and new.priority * 10 >= old.priority * 11
    assert new.max_fee >= (87.5 if dropped else 100) * GWEI  # enough for the next block
    assert [line for line in lines if "stuck" in line] and first.tx_hash in lines[-1]
    assert list(fee_chain.pool()) == [str(first.nonce)]  # one transaction at that nonce
    fee_chain.mine()
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed" and entry.tx_hash == second.tx_hash
    assert len(started_events(fee_chain, run_id)) == 1
    assert fee_chain.rpc("eth_getTransactionReceipt", first.tx_hash) is None
    # the family lookup works from any of its hashes
    assert [t.tx_hash for t in outbox.journal.tx_family(first.tx_hash)] == [
        first.tx_hash,
        second.tx_hash,
    ]


def test_whichever_transaction_of_the_family_is_mined_confirms(fee_chain: FeeChain) -> None:
    """A replacement saved but never broadcast (a crash between the two), and the
    original mined after all: the original's receipt confirms the entry."""
    lines: list[str] = []
    outbox, worker = outbox_and_worker(fee_chain, lines)
    fee_chain.rpc("evm_setAutomine", False)
    run_id = start(outbox, "either")
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.tx_hash is not None
    first = outbox.journal.saved_tx(entry.tx_hash)
    assert first is not None
    registry = worker._connect()
    data = registry.batch_call("start", [(bytes.fromhex(entry.record["manifest_digest"]), [])])
    prepared = registry.prepare(data, nonce=first.nonce, at_least=Fees.of(first.raw).bumped())
    from ledger.record.outbox.journal import SavedTx

    saved = SavedTx(prepared.tx_hash, prepared.raw, prepared.sender, prepared.nonce, 31337)
    outbox.journal.save_replacement([entry.id], saved, first.tx_hash)  # never broadcast
    fee_chain.mine()  # the original, still in the pool, is mined
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed" and entry.tx_hash == first.tx_hash
    assert len(started_events(fee_chain, run_id)) == 1
    fee_chain.rpc("evm_setAutomine", True)
    start(outbox, "after")  # the worker goes on with the next nonce
    worker.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed", "confirmed"]


def test_the_fee_cap_holds_records_with_one_line_per_spike(fee_chain: FeeChain) -> None:
    lines: list[str] = []
    outbox, worker = outbox_and_worker(fee_chain, lines, cap_gwei=10)
    fee_chain.next_base_fee(50)
    nonce = fee_chain.mined_nonce()
    run_id = start(outbox, "capped")
    for _ in range(3):  # polls during the spike
        result = worker.run_once()
        assert result.waiting_on is not None and "LEDGER_MAX_FEE_GWEI=10" in result.waiting_on
    [entry] = outbox.journal.entries()
    assert entry.state == "stored" and "LEDGER_MAX_FEE_GWEI" in (entry.error or "")
    assert fee_chain.mined_nonce() == nonce and fee_chain.pool() == {}  # nothing signed out
    assert len(lines) == 1 and "kept in the outbox" in lines[0] and "\n" not in lines[0]
    fee_chain.next_base_fee(1)  # fees fall
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed"
    assert lines[-1].startswith("fees are under LEDGER_MAX_FEE_GWEI again")
    tx = fee_chain.rpc("eth_getTransactionByHash", entry.tx_hash)
    assert isinstance(tx, dict) and int(tx["maxFeePerGas"], 16) <= 10 * GWEI
    assert len(started_events(fee_chain, run_id)) == 1
    fee_chain.next_base_fee(30)  # a second spike: one more line, not one per poll
    start(outbox, "capped-again")
    worker.run_once()
    worker.run_once()
    assert len([line for line in lines if "kept in the outbox" in line]) == 2


def test_a_stuck_transaction_whose_replacement_passes_the_cap_waits(fee_chain: FeeChain) -> None:
    """The replacement would pay more than the cap: the pending transaction stays
    (no replacement signed), the records wait, and it is mined once fees fall."""
    lines: list[str] = []
    outbox, worker = outbox_and_worker(fee_chain, lines, cap_gwei=20)
    fee_chain.rpc("evm_setAutomine", False)
    run_id = start(outbox, "held-replacement")
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "sent" and entry.tx_hash is not None
    fee_chain.next_base_fee(100)  # no block mined: the transaction stays in the pool
    result = worker.run_once()
    assert result.waiting_on is not None and "replacement" in result.waiting_on
    [held] = outbox.journal.entries()
    assert held.state == "sent" and held.tx_hash == entry.tx_hash
    assert len(outbox.journal.tx_family(entry.tx_hash)) == 1  # nothing replaced it
    assert len(lines) == 1
    fee_chain.next_base_fee(1)
    fee_chain.mine()
    worker.run_once()
    [done] = outbox.journal.entries()
    assert done.state == "confirmed" and done.tx_hash == entry.tx_hash
    assert len(started_events(fee_chain, run_id)) == 1


def test_a_stuck_relayed_call_is_signed_again_with_the_same_contract_nonce(
    fee_chain: FeeChain,
) -> None:
    """A relayed call pending past its deadline: the replacement (same relayer nonce)
    carries the trainer's call signed again, with the same contract nonce (it was never
    used) and a new deadline, so it does not revert when mined."""
    from eth_account import Account

    from ledger.chain.admin import RegistryAdmin
    from ledger.config import Secret
    from tests.conftest import OTHER_KEYS

    trainer = Account.from_key(OTHER_KEYS[0]).address
    RegistryAdmin.connect(load_settings(fee_chain.home)).grant_committer(trainer)
    settings = replace(
        load_settings(fee_chain.home),
        private_key=Secret(OTHER_KEYS[0]),
        relayer_key=Secret(OTHER_KEYS[1]),
    )
    fee_chain.sender = Account.from_key(OTHER_KEYS[1]).address  # whose pool and nonce
    lines: list[str] = []
    outbox = Outbox(settings, background=False)
    worker = Worker(outbox.journal, settings, say=lines.append, urgent=True, receipt_wait=0.3)
    fee_chain.rpc("evm_setAutomine", False)
    run_id = start(outbox, "relayed-stuck")
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "sent" and entry.tx_hash is not None
    registry = fee_chain.registry()
    decode = registry.contract.decode_function_input

    def signed_call(tx_hash: str) -> dict[str, object]:
        saved = outbox.journal.saved_tx(tx_hash)
        assert saved is not None
        tx = fee_chain.rpc("eth_getTransactionByHash", tx_hash)
        assert isinstance(tx, dict), "the node holds it"
        function, args = decode(tx["input"])
        assert function.fn_name == "executeSigned"
        return dict(args)

    first = signed_call(entry.tx_hash)
    assert first["signer"] == trainer
    fee_chain.rpc("evm_increaseTime", 7200)  # past the signed call's deadline
    fee_chain.next_base_fee(100)
    fee_chain.mine()  # without it
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.tx_hash is not None and len(outbox.journal.tx_family(entry.tx_hash)) == 2
    second = signed_call(entry.tx_hash)
    assert second["nonce"] == first["nonce"] and second["signer"] == trainer
    assert int(str(second["deadline"])) > int(str(first["deadline"])) + 7000
    fee_chain.mine()
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed"
    receipt = fee_chain.rpc("eth_getTransactionReceipt", entry.tx_hash)
    assert isinstance(receipt, dict) and receipt["status"] == "0x1"
    [event] = started_events(fee_chain, run_id)
    assert event["committer"] == trainer
    assert registry.contract.functions.nonces(trainer).call() == int(str(first["nonce"])) + 1


def test_a_long_pending_transaction_is_replaced_only_when_its_tip_is_short(
    fee_chain: FeeChain,
) -> None:
    """Past ``stuck_after``, a transaction that offers the tip the node suggests is left
    alone (a slow network is no reason to raise fees again and again); one offering
    less is replaced."""
    from ledger.chain.rpc import as_int
    from ledger.hashing.keccak import keccak256
    from ledger.ids import to_hex
    from ledger.record.outbox.journal import SavedTx

    lines: list[str] = []
    outbox, worker = outbox_and_worker(fee_chain, lines)
    worker.stuck_after = 0.0
    fee_chain.rpc("evm_setAutomine", False)
    start(outbox, "patient")
    worker.run_once()
    worker.run_once()  # pending "too long", but with the suggested tip: rebroadcast only
    [entry] = outbox.journal.entries()
    assert entry.state == "sent" and entry.tx_hash is not None
    assert len(outbox.journal.tx_family(entry.tx_hash)) == 1
    fee_chain.mine()
    worker.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed"]

    # a transaction with a tip of 1 wei, saved and broadcast as the worker would
    run_id = start(outbox, "stingy")
    _, held = outbox_and_worker(fee_chain, [], cap_gwei=0.000001)
    held.run_once()  # stored, not sent (the cap is far below the base fee)
    entry = outbox.journal.entries()[-1]
    assert entry.state == "stored" and entry.record is not None
    registry = worker._connect()
    data = registry.batch_call("start", [(bytes.fromhex(entry.record["manifest_digest"]), [])])
    base, _tip = registry.fee_market()
    nonce = as_int(fee_chain.rpc("eth_getTransactionCount", fee_chain.sender, "pending"))
    fields = {"gas": 200_000, "maxPriorityFeePerGas": 1, "maxFeePerGas": 2 * base + 1}
    raw = registry.signer.sign_1559(registry.chain_id, nonce, fields, registry.address, data)
    stingy = SavedTx(to_hex(keccak256(raw)), raw, registry.signer.address, nonce, 31337)
    outbox.journal.save_sent([entry.id], stingy)
    registry.broadcast(raw)
    worker.run_once()
    entry = outbox.journal.entries()[-1]
    assert entry.tx_hash is not None and entry.tx_hash != stingy.tx_hash
    family = outbox.journal.tx_family(entry.tx_hash)
    assert [t.tx_hash for t in family] == [stingy.tx_hash, entry.tx_hash]
    assert Fees.of(family[1].raw).priority >= GWEI
    fee_chain.mine()
    worker.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed", "confirmed"]
    assert len(started_events(fee_chain, run_id)) == 1

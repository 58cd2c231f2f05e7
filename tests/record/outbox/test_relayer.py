"""Committers without ETH: the outbox signs each call with the trainer's key (EIP-712)
and sends it through a relayer's account (``LEDGER_RELAYER_KEY``), on the session's
real Anvil and registry.

The trainer's key is a fresh keystore (``LEDGER_KEYSTORE``) whose account holds no
ETH and the committer role; the relayer is a funded dev account with no role at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from eth_account import Account
from web3.exceptions import ContractLogicError

from ledger.chain.anvil import rpc_call
from ledger.config import Secret, create_keystore, load_settings
from ledger.record.manifest import build_manifest
from ledger.record.outbox import Outbox
from ledger.record.outbox.worker import Worker
from ledger.training.hook import LedgerRun
from tests.conftest import OTHER_KEYS, Chain
from tests.training.test_flow import Tiny, fit

pytestmark = pytest.mark.integration

PASSWORD = "relayed runs"
RELAYER_KEY = OTHER_KEYS[1]  # the session chain's "bob"; "alice" plays the stranger
RELAYER = Account.from_key(RELAYER_KEY).address


class Team:
    """A data directory whose committer is a keystore account without ETH."""

    def __init__(self, chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chain = chain
        self.home = tmp_path / "ledger"
        chain.settings(self.home)  # config.json: the session registry
        self.keystore = tmp_path / "trainer.json"
        self.trainer = create_keystore(self.keystore, Secret(PASSWORD))
        self.env = {
            "LEDGER_HOME": str(self.home),
            "LEDGER_KEYSTORE": str(self.keystore),
            "LEDGER_KEYSTORE_PASSWORD": PASSWORD,
            "LEDGER_RELAYER_KEY": RELAYER_KEY,
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        self.rpc("anvil_setBalance", self.trainer, "0x0")
        chain.registry.grant_committer(self.trainer)

    def rpc(self, method: str, *params: object) -> object:
        return rpc_call(self.chain.rpc_url, method, list(params))

    def balance(self, account: str) -> int:
        return int(str(self.rpc("eth_getBalance", account, "latest")), 16)

    def sent_by(self, account: str) -> int:
        return int(str(self.rpc("eth_getTransactionCount", account, "latest")), 16)


@pytest.fixture
def team(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Team]:
    for name in [k for k in os.environ if k.startswith("LEDGER_") and k != "LEDGER_OUTBOX_KEEP"]:
        monkeypatch.delenv(name)
    yield Team(chain, tmp_path, monkeypatch)


def test_a_trainer_without_eth_records_a_run_through_a_relayer(team: Team, tmp_path: Path) -> None:
    chain = team.chain
    paid_before = team.balance(RELAYER)
    torch.manual_seed(0)
    model = Tiny()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    with LedgerRun(
        model,
        name="relayed",
        config={"lr": 0.1},
        out=tmp_path / "model.pt",
        data={"x": x},
        settings=load_settings(team.home),
    ) as run:
        fit(run, model, optimiser, x, y, 2)
    assert run.run_id is not None
    journal = Outbox(load_settings(team.home), background=False).journal
    assert {e.state for e in journal.entries()} == {"confirmed"}
    # the records name the trainer; the trainer sent nothing and paid nothing
    [started] = chain.registry.events("RunStarted", bytes.fromhex(run.run_id[2:]))
    assert started["committer"] == team.trainer
    assert chain.registry.get_run(bytes.fromhex(run.run_id[2:])).committer == team.trainer
    assert team.balance(team.trainer) == 0 and team.sent_by(team.trainer) == 0
    assert team.balance(RELAYER) < paid_before
    for entry in journal.entries():
        assert entry.tx_hash is not None
        tx = team.rpc("eth_getTransactionByHash", entry.tx_hash)
        assert isinstance(tx, dict) and tx["from"].lower() == RELAYER.lower()
    # `ledger verify` names the trainer as the committer, not the relayer
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_HOME=str(team.home))
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(tmp_path / "model.pt"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    text = json.dumps(report)
    assert team.trainer in text and RELAYER not in text
    assert report["outcome"] == "verified" and report["run_id"] == run.run_id
    named = [c for c in report["checks"] if c["name"].endswith("committer")]
    assert named and all(c["ok"] and team.trainer in c["detail"] for c in named)


def test_a_relayed_call_cannot_be_replayed_by_someone_else(team: Team, tmp_path: Path) -> None:
    """The relayed transaction is public: its signed call, sent again by another
    account, is refused (the contract nonce is used up), so a record is never twice."""
    chain = team.chain
    outbox = Outbox(load_settings(team.home), background=False)
    worker = Worker(outbox.journal, outbox.settings, say=lambda _l: None, urgent=True)
    run_id = outbox.start_run(build_manifest(name="replayed", config={}, created_at=None))
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed" and entry.tx_hash is not None
    tx = chain.w3.eth.get_transaction(entry.tx_hash)  # type: ignore[arg-type]
    function, args = chain.registry.contract.decode_function_input(tx["input"])
    assert function.fn_name == "executeSigned" and args["signer"] == team.trainer
    replay = chain.registry.contract.functions.executeSigned(
        args["signer"], args["nonce"], args["deadline"], args["data"], args["signature"]
    )
    with pytest.raises(ContractLogicError):
        replay.call({"from": chain.alice.address})
    assert len(chain.registry.events("RunStarted", bytes.fromhex(run_id[2:]))) == 1
    # the next record signs with the next contract nonce
    outbox.start_run(build_manifest(name="replayed-2", config={}, created_at=None))
    worker.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed", "confirmed"]
    nonces = chain.registry.contract.functions.nonces(team.trainer).call()
    assert nonces == args["nonce"] + 2


def test_a_relayer_out_of_funds_holds_the_records_then_sends_them(team: Team) -> None:
    lines: list[str] = []
    outbox = Outbox(load_settings(team.home), background=False)
    worker = Worker(outbox.journal, outbox.settings, say=lines.append, urgent=True)
    funds = team.balance(RELAYER)
    team.rpc("anvil_setBalance", RELAYER, "0x0")
    run_id = outbox.start_run(build_manifest(name="unfunded", config={}, created_at=None))
    for _ in range(2):
        result = worker.run_once()
        assert result.waiting_on is not None and RELAYER in result.waiting_on
    [entry] = outbox.journal.entries()
    assert entry.state == "stored"  # not sent: nothing the node holds
    assert entry.error is not None and f"send ETH to {RELAYER}" in entry.error
    assert len(lines) == 1 and "LEDGER_RELAYER_KEY" in lines[0]
    team.rpc("anvil_setBalance", RELAYER, hex(funds))
    worker.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed"
    assert lines[-1].startswith("reachable again")
    [started] = team.chain.registry.events("RunStarted", bytes.fromhex(run_id[2:]))
    assert started["committer"] == team.trainer


def test_a_front_run_signed_call_is_confirmed_once_from_the_chain(team: Team) -> None:
    """Someone copies the relayed call from the mempool and gets it mined first: the
    contract nonce is used up, so the outbox does not send its own transaction again
    (it would revert, at the relayer's cost) and finds the record on chain."""
    chain = team.chain
    outbox = Outbox(load_settings(team.home), background=False)
    worker = Worker(
        outbox.journal, outbox.settings, say=lambda _l: None, urgent=True, receipt_wait=0.3
    )
    run_id = outbox.start_run(build_manifest(name="front-run", config={}, created_at=None))
    worker.run_once()
    weights = team.home.parent / "c0.pt"
    torch.save({"w": torch.ones(3)}, weights)
    outbox.checkpoint(run_id, 0, weights, {"loss": 1.0})
    team.rpc("evm_setAutomine", False)
    try:
        worker.run_once()  # the checkpoint's relayed call: pending
        entry = outbox.journal.entries()[-1]
        assert entry.state == "sent" and entry.tx_hash is not None
        pending = chain.w3.eth.get_transaction(entry.tx_hash)  # type: ignore[arg-type]
        _function, args = chain.registry.contract.decode_function_input(pending["input"])
        copy = chain.registry.contract.functions.executeSigned(
            args["signer"], args["nonce"], args["deadline"], args["data"], args["signature"]
        ).build_transaction(
            {
                "from": chain.alice.address,
                "nonce": chain.w3.eth.get_transaction_count(chain.alice.address, "pending"),
                "gas": 300_000,
                "maxFeePerGas": 1000 * 10**9,
                "maxPriorityFeePerGas": 100 * 10**9,
            }
        )
        signed = chain.alice.sign_transaction(copy)
        # the copy is mined first (ours leaves the pool: Anvil would mine it first)
        team.rpc("anvil_dropTransaction", entry.tx_hash)
        front = chain.w3.eth.send_raw_transaction(signed.raw_transaction)
        team.rpc("anvil_mine", "0x1")
    finally:
        team.rpc("evm_setAutomine", True)
    assert chain.w3.eth.get_transaction_receipt(front)["status"] == 1
    relayer_nonce = team.sent_by(RELAYER)
    worker.run_once()
    assert team.sent_by(RELAYER) == relayer_nonce  # ours, which would revert, not sent again
    entry = outbox.journal.entries()[-1]
    assert entry.state == "confirmed" and entry.tx_hash == "0x" + bytes(front).hex()
    assert len(chain.registry.events("CheckpointCommitted", bytes.fromhex(run_id[2:]))) == 1


def test_the_worker_process_gets_the_relayer_and_the_fee_cap(tmp_path: Path) -> None:
    """What the outbox sends its worker process on stdin carries the relayer key and
    the cap; runs with another relayer or cap get a worker of their own."""
    from ledger.config import Settings
    from ledger.record.outbox.process import _settings_line, socket_name

    settings = Settings(
        data_dir=tmp_path, relayer_key=Secret(RELAYER_KEY), max_fee_per_gas=7 * 10**9
    )
    line = json.loads(_settings_line(settings, Secret(OTHER_KEYS[0]), name=None, keep=0.0))
    given = dict(line["settings"])
    rebuilt = Settings(
        data_dir=Path(given.pop("data_dir")), relayer_key=Secret(line["relayer_key"]), **given
    )
    assert rebuilt.max_fee_per_gas == 7 * 10**9
    assert rebuilt.relayer_key is not None and rebuilt.relayer_key.reveal() == RELAYER_KEY
    plain = Settings(data_dir=tmp_path)
    assert (
        json.loads(_settings_line(plain, Secret(OTHER_KEYS[0]), name=None, keep=0.0))["relayer_key"]
        is None
    )
    names = {
        socket_name(s, "0xabc")
        for s in (
            settings,
            plain,
            Settings(data_dir=tmp_path, relayer_key=Secret(RELAYER_KEY)),
            Settings(data_dir=tmp_path, max_fee_per_gas=7 * 10**9),
        )
    }
    assert len(names) == 4  # each its own worker
    assert all(RELAYER_KEY[2:] not in str(n) for n in names)


def test_a_copy_mined_in_the_same_block_first_is_not_recorded_twice(team: Team) -> None:
    """The copy lands just before the relayer's transaction, which reverts while the
    worker waits for its receipt: the checkpoint is confirmed from the chain, never
    signed and sent again (a second identical event)."""
    import threading
    import time

    chain = team.chain
    outbox = Outbox(load_settings(team.home), background=False)
    worker = Worker(
        outbox.journal, outbox.settings, say=lambda _l: None, urgent=True, receipt_wait=30.0
    )
    run_id = outbox.start_run(build_manifest(name="same-block", config={}, created_at=None))
    worker.run_once()
    weights = team.home.parent / "c0.pt"
    torch.save({"w": torch.ones(3)}, weights)
    outbox.checkpoint(run_id, 0, weights, {"loss": 1.0})
    team.rpc("evm_setAutomine", False)
    try:
        sending = threading.Thread(target=worker.run_once)
        sending.start()  # signs, saves, broadcasts, then waits for the receipt
        deadline = time.monotonic() + 60
        while not outbox.journal.has_sent():
            assert time.monotonic() < deadline, "the worker sent nothing"
            time.sleep(0.05)
        entry = outbox.journal.entries()[-1]
        assert entry.tx_hash is not None
        saved = outbox.journal.saved_tx(entry.tx_hash)
        assert saved is not None
        while (pending := team.rpc("eth_getTransactionByHash", entry.tx_hash)) is None:
            assert time.monotonic() < deadline, "the worker saved but did not broadcast"
            time.sleep(0.05)  # saved before it is broadcast
        assert isinstance(pending, dict)
        _function, args = chain.registry.contract.decode_function_input(pending["input"])
        copy = chain.registry.contract.functions.executeSigned(
            args["signer"], args["nonce"], args["deadline"], args["data"], args["signature"]
        ).build_transaction(
            {
                "from": chain.alice.address,
                "nonce": chain.w3.eth.get_transaction_count(chain.alice.address, "pending"),
                "gas": 300_000,
                "maxFeePerGas": 1000 * 10**9,
                "maxPriorityFeePerGas": 100 * 10**9,
            }
        )
        # the copy first, then ours again: Anvil mines them in that order, in one block
        team.rpc("anvil_dropTransaction", entry.tx_hash)
        front = chain.w3.eth.send_raw_transaction(
            chain.alice.sign_transaction(copy).raw_transaction
        )
        team.rpc("eth_sendRawTransaction", "0x" + saved.raw.hex())
        team.rpc("anvil_mine", "0x1")
        sending.join(timeout=60)
        assert not sending.is_alive()
    finally:
        team.rpc("evm_setAutomine", True)
    ours = chain.w3.eth.get_transaction_receipt(entry.tx_hash)  # type: ignore[arg-type]
    assert ours["status"] == 0
    assert chain.w3.eth.get_transaction_receipt(front)["status"] == 1
    entry = outbox.journal.entries()[-1]
    assert entry.state == "confirmed" and entry.tx_hash == "0x" + bytes(front).hex()
    worker.run_once()
    assert len(chain.registry.events("CheckpointCommitted", bytes.fromhex(run_id[2:]))) == 1

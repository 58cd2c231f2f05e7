"""JSON-RPC round trips and wall time of one outbox transaction, before and after batching.

On a throw-away local Anvil (automine), ``startRuns`` transactions go one at a
time through preparation (nonce, gas estimate, priority fee, base fee),
broadcast and the receipt poll, two ways, alternating:

- **before**: the four preparation calls one request each, then the receipt
  looked at straight away and after 1, 2, 4 ... ms (the worker until now);
- **after**: :meth:`~ledger.chain.sender.RegistrySender.prepare` (one batch
  request) and the worker's receipt poll
  (:func:`ledger.record.outbox.worker.wait_for_receipt`).

Anvil 1.7's automine takes longer per block as the chain grows (about 0.5 ms
after the broadcast on a fresh chain, several ms after a few thousand blocks),
so the two ways alternate and the chain's final height is reported.

Reports HTTP requests per transaction (mean), the median wall time from the
start of preparation to the receipt, the CPU time per transaction of Anvil and
of this process, and how often the receipt was there at a look straight after
the broadcast. Ends with one JSON line of the figures.

Run: ``make bench-rpc`` (or ``PYTHONPATH=. .venv/bin/python bench/rpc.py --txs 200``)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ledger.chain.admin import RegistryAdmin
from ledger.chain.anvil import AnvilProcess, free_port
from ledger.chain.rpc import JsonRpc
from ledger.chain.sender import GAS_MARGIN, Receipt, RegistrySender, Signer
from ledger.config import ANVIL_DEV_KEY, Secret
from ledger.hashing.keccak import keccak256
from ledger.record.outbox.worker import wait_for_receipt

WARMUP = 20


class CountingRpc(JsonRpc):
    requests = 0

    def _post(self, body: bytes) -> bytes:
        self.requests += 1
        return super()._post(body)


def cpu_seconds(pid: int) -> float:
    """On-CPU time of all of a process's threads so far (ns-precise, from schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def prepare_one_by_one(client: RegistrySender, data: bytes) -> tuple[str, bytes]:
    """The preparation as it was: four calls, one request each."""
    rpc = client.rpc
    nonce = int(rpc("eth_getTransactionCount", client.signer.address, "pending"), 16)
    call = {"from": client.signer.address, "to": client.address, "data": "0x" + data.hex()}
    gas = int(rpc("eth_estimateGas", call), 16)
    priority = int(rpc("eth_maxPriorityFeePerGas"), 16)
    base = int(rpc("eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
    fields = {
        "gas": int(gas * GAS_MARGIN) + 10_000,
        "maxPriorityFeePerGas": priority,
        "maxFeePerGas": 2 * base + priority,
    }
    raw = client.signer.sign_1559(client.chain_id, nonce, fields, client.address, data)
    return "0x" + keccak256(raw).hex(), raw


def wait_as_before(client: RegistrySender, tx_hash: str) -> Receipt | None:
    delay = 0.001
    while (receipt := client.receipt(tx_hash)) is None:
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    return receipt


def before(client: RegistrySender, data: bytes) -> None:
    tx_hash, raw = prepare_one_by_one(client, data)
    client.broadcast(raw)
    assert wait_as_before(client, tx_hash) is not None


def after(client: RegistrySender, data: bytes) -> None:
    prepared = client.prepare(data)
    client.broadcast(prepared.raw)
    assert wait_for_receipt(client, prepared.tx_hash, timeout=2.0) is not None


def measure(rpc_url: str, anvil_pid: int, txs: int) -> dict[str, float]:
    registry, _ = RegistryAdmin.deploy(JsonRpc(rpc_url), Signer(Secret(ANVIL_DEV_KEY)))
    rpc = CountingRpc(rpc_url)
    client = RegistrySender(rpc, registry.address, Signer(Secret(ANVIL_DEV_KEY)), 31337)
    ways: dict[str, Callable[[RegistrySender, bytes], None]] = {"before": before, "after": after}
    times: dict[str, list[float]] = {name: [] for name in ways}
    requests = dict.fromkeys(ways, 0)
    anvil_cpu = dict.fromkeys(ways, 0.0)
    own_cpu = dict.fromkeys(ways, 0.0)
    at_once = 0
    for n in range(WARMUP + txs):
        for name, way in ways.items():
            data = client.batch_call("start", [(os.urandom(32), [])])
            rpc.requests = 0
            anvil_before, own_before = cpu_seconds(anvil_pid), time.process_time()
            start = time.perf_counter()
            way(client, data)
            elapsed = time.perf_counter() - start
            own = time.process_time() - own_before
            anvil = cpu_seconds(anvil_pid) - anvil_before
            if n >= WARMUP:
                times[name].append(elapsed * 1e3)
                requests[name] += rpc.requests
                anvil_cpu[name] += anvil
                own_cpu[name] += own
        if n >= WARMUP:  # one more, looked at straight after the broadcast
            prepared = client.prepare(client.batch_call("start", [(os.urandom(32), [])]))
            client.broadcast(prepared.raw)
            at_once += client.receipt(prepared.tx_hash) is not None
            assert wait_for_receipt(client, prepared.tx_hash, timeout=2.0) is not None
    figures: dict[str, float] = {"txs": txs, "receipt_at_once_share": round(at_once / txs, 3)}
    for name in ways:
        figures[f"{name}_requests_per_tx"] = round(requests[name] / txs, 2)
        figures[f"{name}_median_ms"] = round(statistics.median(times[name]), 3)
        figures[f"{name}_anvil_cpu_ms_per_tx"] = round(anvil_cpu[name] / txs * 1e3, 3)
        figures[f"{name}_client_cpu_ms_per_tx"] = round(own_cpu[name] / txs * 1e3, 3)
    figures["median_ratio"] = round(figures["after_median_ms"] / figures["before_median_ms"], 3)
    figures["blocks_at_end"] = int(rpc("eth_blockNumber"), 16)  # Anvil mines slower as they grow
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=200, help="transactions per way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-rpc-") as tmp:
        anvil = AnvilProcess(Path(tmp) / "chain", port=free_port())
        anvil.start(persist=False)
        try:
            pid = anvil.pid()
            assert pid is not None
            figures = measure(anvil.rpc_url, pid, args.txs)
        finally:
            anvil.stop()
    for name in ("before", "after"):
        print(
            f"{name}: {figures[f'{name}_requests_per_tx']:.2f} requests/tx, "
            f"median {figures[f'{name}_median_ms']:.2f} ms prepare+broadcast+receipt, "
            f"CPU per tx: Anvil {figures[f'{name}_anvil_cpu_ms_per_tx']:.2f} ms, "
            f"this process {figures[f'{name}_client_cpu_ms_per_tx']:.2f} ms"
        )
    share = figures["receipt_at_once_share"]
    print(f"receipt there at a look straight after the broadcast: {share:.0%}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

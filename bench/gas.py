"""Gas used by each registry write, on a throw-away local Anvil.

Prints a table, then one JSON line with the figures. Goals (ratios printed
against them), for registry 3: start + finalize of one run at most 160,000 gas
together; at most 35,000 gas per run when starting runs in batches of 100; at most
55,000 gas per checkpoint in batches. (Registry 2's goals were 120,000 and 30,000:
registry 3 pays two storage slots, 44,200 gas, per recorded weights file, for the
lookups that free readers from scanning the chain.) For comparison, the Ethereum
Attestation Service spends 180k-320k gas per attestation.

Run: ``.venv/bin/python bench/gas.py``
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

from ledger.chain.admin import RegistryAdmin
from ledger.chain.anvil import AnvilProcess
from ledger.chain.records import FinalRecord, run_id_for
from ledger.chain.rpc import JsonRpc
from ledger.chain.sender import Signer
from ledger.config import ANVIL_DEV_KEY, Secret
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.ids import Relation

GOALS = {
    "start_plus_finalize": 160_000,
    "per_run_batch_100": 35_000,
    "per_checkpoint_batch": 55_000,
}
EAS_PER_ATTESTATION = (180_000, 320_000)
ETH_AT_GWEI = (20, 1, 0.01)  # gas prices the cost of a run is printed at
RELAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # Anvil #1


def digest() -> bytes:
    return os.urandom(32)


def leaf(step: int) -> CheckpointLeaf:
    return CheckpointLeaf(step, digest(), digest(), digest())


def measure(
    registry: RegistryAdmin, relayer: RegistryAdmin, relayed: RegistryAdmin
) -> dict[str, int]:
    """Gas of each write; ``relayed`` signs as ``registry`` and sends through ``relayer``."""
    figures: dict[str, int] = {}
    run_id, start = registry.start_run(digest())
    leaves = [leaf(0), leaf(1)]
    first = registry.commit_checkpoint(run_id, leaves[0])
    registry.commit_checkpoint(run_id, leaves[1])
    record = FinalRecord(digest(), digest(), digest(), checkpoint_root(leaves), len(leaves))
    final = registry.finalize_run(run_id, record)
    child, start_child = registry.start_run(digest(), [(run_id, Relation.FINE_TUNE)])
    _, second_child = registry.start_run(digest(), [(run_id, Relation.FINE_TUNE)])
    failed = registry.mark_failed(child, "diverged")
    revoked = registry.revoke_run(run_id, "leaked test data")
    artifact = registry.revoke_artifact(digest(), "dataset withdrawn")
    attested = registry.attest_replay(run_id, 0, 1, True, digest())
    attested_again = registry.attest_replay(run_id, 1, 2, False, digest())
    figures.update(
        start_run=start.gas_used,
        start_run_one_parent=start_child.gas_used,
        start_run_one_parent_second_child=second_child.gas_used,
        commit_checkpoint=first.gas_used,
        finalize_run=final.gas_used,
        start_plus_finalize=start.gas_used + final.gas_used,
        mark_failed=failed.gas_used,
        revoke_run=revoked.gas_used,
        revoke_artifact=artifact.gas_used,
        attest_replay=attested.gas_used,
        attest_replay_again=attested_again.gas_used,
    )

    signer = registry.signer
    manifest = digest()
    signed_start = relayer.submit_signed(registry.sign_call(signer, "startRun", manifest, []))
    signed_id = run_id_for(signer.address, manifest)
    signed_checkpoint = relayer.submit_signed(
        registry.sign_call(signer, "commitCheckpoint", signed_id, _tuple(leaf(0)))
    )
    figures.update(
        signed_start_run=signed_start.gas_used, signed_commit_checkpoint=signed_checkpoint.gas_used
    )

    # a run as the outbox sends it when checkpoints come one at a time (each its own
    # transaction): startRuns, commitCheckpoints and finalizeRuns of one item each;
    # then the same through a relayer (the signer's contract nonce already in use)
    for name, client in (("outbox_run_10", registry), ("outbox_run_10_relayed", relayed)):
        total = 0
        (one,), tx = client.start_runs([(digest(), [])])
        total += tx.gas_used
        leaves = [leaf(step) for step in range(10)]
        for checkpoint in leaves:
            total += client.commit_checkpoints([(one, checkpoint)]).gas_used
        record = FinalRecord(digest(), digest(), digest(), checkpoint_root(leaves), len(leaves))
        total += client.finalize_runs([(one, record)]).gas_used
        figures[name] = total

    for size in (1, 10, 100):
        ids, batch_start = registry.start_runs([(digest(), []) for _ in range(size)])
        figures[f"per_run_batch_{size}"] = batch_start.gas_used // size
        batch_ckpt = registry.commit_checkpoints([(ids[0], leaf(i)) for i in range(size)])
        figures[f"per_checkpoint_batch_{size}"] = batch_ckpt.gas_used // size
        batch_final = registry.finalize_runs(
            [(i, FinalRecord(digest(), digest(), digest(), digest(), 1)) for i in ids]
        )
        figures[f"per_finalize_batch_{size}"] = batch_final.gas_used // size
    return figures


def _tuple(c: CheckpointLeaf) -> tuple[int, bytes, bytes, bytes]:
    return (c.step, c.weights_digest, c.tensor_root, c.metrics_digest)


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        anvil = AnvilProcess(Path(tmp), port=port)
        anvil.start(persist=False)
        try:
            rpc = JsonRpc(anvil.rpc_url)
            registry, deployed = RegistryAdmin.deploy(rpc, Signer(Secret(ANVIL_DEV_KEY)))
            relayer = RegistryAdmin(
                rpc, registry.address, Signer(Secret(RELAYER_KEY)), registry.chain_id
            )
            relayed = RegistryAdmin(
                rpc,
                registry.address,
                registry.signer,
                registry.chain_id,
                relayer=relayer.signer,
            )
            figures = {"deploy": deployed.gas_used, **measure(registry, relayer, relayed)}
        finally:
            anvil.stop()
    for name, gas in figures.items():
        print(f"{name:28s} {gas:>10,d}")
    ratios = {
        "start_plus_finalize": figures["start_plus_finalize"] / GOALS["start_plus_finalize"],
        "per_run_batch_100": figures["per_run_batch_100"] / GOALS["per_run_batch_100"],
        "per_checkpoint_batch_100": (
            figures["per_checkpoint_batch_100"] / GOALS["per_checkpoint_batch"]
        ),
    }
    for name, ratio in ratios.items():
        print(f"{name} / goal = {ratio:.2f}")
    low, high = EAS_PER_ATTESTATION
    print(
        f"start+finalize vs an EAS attestation ({low:,}-{high:,}): "
        f"{figures['start_plus_finalize'] / low:.2f}-{figures['start_plus_finalize'] / high:.2f}"
    )
    for price in ETH_AT_GWEI:
        direct, relayed_gas = figures["outbox_run_10"], figures["outbox_run_10_relayed"]
        print(
            f"a run of 10 checkpoints at {price} gwei: {direct * price / 1e9:.6f} ETH "
            f"({relayed_gas * price / 1e9:.6f} ETH relayed)"
        )
    print(
        json.dumps(
            {**figures, **{f"ratio_{k}": round(v, 3) for k, v in ratios.items()}}, sort_keys=True
        )
    )


if __name__ == "__main__":
    main()

"""A run recorded with its artifacts in IPFS, verified by the CLI reading them from the node."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ledger.store import LocalStore
from ledger.store.ipfs import IpfsStore
from ledger.training import LedgerRun
from tests.conftest import Chain
from tests.store.ipfs.node import IpfsNode
from tests.store.ipfs.test_cli_store import ledger
from tests.training.test_flow import Tiny


def test_verify_reads_the_run_documents_from_the_node(
    chain: Chain, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    data_dir = tmp_path / "ledger"
    settings = replace(chain.settings(data_dir), ipfs_api=ipfs_node.api)  # as LEDGER_IPFS_API
    torch.manual_seed(1)
    model = Tiny()
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    with LedgerRun(
        model,
        name="ipfs-run",
        config={"epochs": 2},
        out=tmp_path / "model.pt",
        data={"x": x},
        settings=settings,
    ) as run:
        for epoch in range(2):
            loss = nn.functional.mse_loss(model(x), y)
            run.epoch_end(epoch, {"loss": float(loss.detach())})
    assert LocalStore(data_dir / "store").cids() == []  # everything went to the node
    node = IpfsStore(ipfs_node.api)
    assert run.manifest_cid is not None
    assert node.has(run.manifest_cid)

    env = {"LEDGER_HOME": str(data_dir)}
    node_env = {**env, "LEDGER_IPFS_API": ipfs_node.api}
    with_node = ledger("verify", str(tmp_path / "model.pt"), "--json", env=node_env)
    assert with_node.returncode == 0, with_node.stderr
    report = json.loads(with_node.stdout)
    assert report["outcome"] == "verified" and report["run_id"] == run.run_id

    # The embedded store does not have the run's manifest and metrics.
    without = ledger("verify", str(tmp_path / "model.pt"), "--json", env=env)
    assert without.returncode != 0
    assert b"in the store" in without.stdout

"""``ledger lineage`` without listing the registry: :func:`chain_lineage` walks a
run's family through the registry's lookups and must draw the same tree as the
catalogue that reads every event (:class:`RunCatalog`), on a family with shared
ancestors, a run named twice as a parent, a revocation and a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.catalog import RunCatalog, chain_lineage
from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import JsonRpc
from ledger.errors import InputError
from ledger.ids import Relation
from ledger.store import LocalStore
from tests.conftest import Chain
from tests.runs import record_run

pytestmark = pytest.mark.integration


def test_chain_lineage_draws_the_catalogues_tree(chain: Chain, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    registry = chain.registry
    base = record_run(registry, store, "base").run_id
    tuned = record_run(registry, store, "tuned", parents=[(base, Relation.FINE_TUNE)]).run_id
    small = record_run(registry, store, "small", parents=[(base, Relation.DISTILLATION)]).run_id
    merged = record_run(
        registry,
        store,
        "merged",
        parents=[(tuned, Relation.OTHER), (small, Relation.OTHER), (tuned, Relation.PRUNING)],
        finalize=False,
    ).run_id
    registry.mark_failed(merged, "diverged")
    registry.revoke_run(small, "leaked test data")
    unrelated = record_run(registry, store, "unrelated").run_id
    reader = RegistryReader(JsonRpc(chain.rpc_url), registry.address, chain.deploy_block)
    catalog = RunCatalog.load(reader, store)
    for run_id in (base, tuned, small, merged, unrelated):
        assert chain_lineage(reader, store, run_id) == catalog.lineage(run_id)
    tree = chain_lineage(reader, store, small)
    assert tree["run"]["revoked"] and tree["run"]["revoke_reason"] == "leaked test data"
    assert [n["name"] for n in tree["descendants"]] == ["merged"]
    with pytest.raises(InputError, match="no run"):
        chain_lineage(reader, store, b"\x01" * 32)

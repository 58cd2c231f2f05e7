"""The indexer against the real Anvil, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ledger.chain.anvil import rpc_call
from ledger.documents import MANIFEST_SCHEMA, METRICS_SCHEMA, canonical_json
from ledger.ids import Relation
from ledger.index.db import current_revision, head_revision
from ledger.index.indexer import Indexer
from ledger.index.models import Base, Metric, Parent, ReplayAttestation, Run, Weights
from ledger.store import LocalStore
from tests.conftest import Chain
from tests.runs import record_run


def _runs(engine: Engine) -> dict[str, Run]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return {r.run_id: r for r in session.scalars(select(Run))}


def _count(engine: Engine, table: type[Base]) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def test_migrations_build_exactly_the_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_indexes_runs_documents_lineage_and_states(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    base = record_run(
        chain.registry, data_store, "base", curve=[{"val_loss": 0.9}, {"val_loss": 0.4}]
    )
    child = record_run(
        chain.registry,
        data_store,
        "child",
        parents=[(base.run_id, Relation.FINE_TUNE)],
        final={"val_loss": 0.05, "acc": 0.97, "note": "text is not a metric"},
        sweep={"id": "lr-sweep", "trial": 3},
    )
    running = record_run(chain.registry, data_store, "running", finalize=False)
    chain.registry.mark_failed(running.run_id, "out of memory")
    chain.registry.revoke_run(base.run_id, "trained on leaked data")

    result = indexer.run_once()
    assert result.events == 3 + 4 + 2 + 1 + 1  # starts, checkpoints, finals, failed, revoked
    runs = _runs(engine)
    assert set(runs) == {base.hex, child.hex, running.hex}
    assert runs[base.hex].status == "finalized" and runs[base.hex].revoked
    assert runs[base.hex].revoked_reason == "trained on leaked data"
    assert runs[base.hex].checkpoint_count == 2 and runs[base.hex].name == "base"
    assert runs[child.hex].sweep_id == "lr-sweep" and runs[child.hex].sweep_trial == 3
    assert runs[child.hex].final_weights_digest == "0x" + child.final_cid.digest.hex()  # type: ignore[union-attr]
    assert runs[running.hex].status == "failed"
    assert runs[running.hex].failed_reason == "out of memory"
    assert runs[child.hex].committer == chain.admin.address
    assert runs[child.hex].started_at > 0
    with engine.connect() as connection:
        edges = connection.execute(select(Parent.child_id, Parent.parent_id, Parent.relation)).all()
        metrics = dict(
            connection.execute(
                select(Metric.name, Metric.value).where(Metric.run_id == child.hex)
            ).all()
        )
    assert [tuple(e) for e in edges] == [(child.hex, base.hex, "fine-tune")]
    assert metrics == {"val_loss": 0.05, "acc": 0.97}
    assert _count(engine, Weights) == 2 + 1 + 1 + 1 + 1

    again = indexer.run_once()  # resumes from the last block: nothing twice
    assert again.events == 0 and _count(engine, Weights) == 6


def test_resumes_across_passes_and_respects_confirmations(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    first = record_run(chain.registry, data_store, "first")
    second = record_run(chain.registry, data_store, "second")
    indexer.confirmations = 2  # the last two blocks (second's checkpoint and final) wait
    indexer.run_once()
    runs = _runs(engine)
    assert runs[first.hex].status == "finalized"
    assert runs[second.hex].status == "running"  # its finalization is not confirmed yet
    indexer.confirmations = 0
    indexer.run_once(max_blocks=1)
    indexer.run_once()
    runs = _runs(engine)
    assert runs[second.hex].status == "finalized" and runs[second.hex].checkpoint_count == 1
    assert _count(engine, Weights) == 4


def test_missing_documents_are_read_once_they_arrive(
    chain: Chain, indexer: Indexer, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = LocalStore(tmp_path_factory.mktemp("other"))
    run = record_run(chain.registry, elsewhere, "late", final={"val_loss": 0.2})
    indexer.run_once()
    assert _runs(engine)[run.hex].manifest_state == "missing"
    assert _runs(engine)[run.hex].metrics_state == "missing"
    for cid in elsewhere.root.joinpath("blobs").iterdir():  # the documents arrive
        indexer.store.put_bytes(cid.read_bytes())
    indexer.retry_missing()
    indexer.run_once()
    indexed = _runs(engine)[run.hex]
    assert (indexed.manifest_state, indexed.name, indexed.metrics_state) == (
        "loaded",
        "late",
        "loaded",
    )


def test_documents_that_cannot_be_used_are_invalid_with_their_cid(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    wrong_schema = data_store.put_bytes(canonical_json({"schema": METRICS_SCHEMA, "name": "a"}))
    not_object = data_store.put_bytes(b"[1, 2]")
    changed = data_store.put_bytes(canonical_json({"schema": MANIFEST_SCHEMA, "name": "b"}))
    data_store.path_for(changed).write_bytes(canonical_json({"schema": MANIFEST_SCHEMA}))
    cids = (wrong_schema, not_object, changed)
    run_ids = [chain.registry.start_run(cid.digest)[0] for cid in cids]
    indexer.run_once()
    runs = _runs(engine)
    for run_id, cid in zip(run_ids, cids, strict=True):
        row = runs["0x" + run_id.hex()]
        assert (row.manifest_state, row.manifest_cid, row.name) == ("invalid", str(cid), None)
    indexer.retry_missing()  # invalid is final: not read again
    indexer.run_once()
    assert {_runs(engine)["0x" + r.hex()].manifest_state for r in run_ids} == {"invalid"}


def test_a_reorg_is_rolled_back_and_reread(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    kept = record_run(chain.registry, data_store, "kept")
    indexer.run_once()
    fork = rpc_call(chain.rpc_url, "evm_snapshot")
    orphan = record_run(chain.registry, data_store, "orphan")
    chain.registry.revoke_run(kept.run_id, "revoked on the losing branch")
    indexer.run_once()
    assert _runs(engine)[kept.hex].revoked and orphan.hex in _runs(engine)

    assert rpc_call(chain.rpc_url, "evm_revert", [fork]) is True
    rpc_call(chain.rpc_url, "evm_mine")  # the winning branch has other blocks at those heights
    winner = record_run(chain.registry, data_store, "winner", curve=[{"a": 1.0}, {"a": 2.0}])
    result = indexer.run_once()
    runs = _runs(engine)
    assert result.rolled_back_to is not None and result.rolled_back_to > chain.deploy_block
    assert orphan.hex not in runs
    assert not runs[kept.hex].revoked and runs[kept.hex].status == "finalized"
    assert runs[winner.hex].checkpoint_count == 2 and runs[winner.hex].name == "winner"
    assert _count(engine, Weights) == 2 + 3
    assert indexer.status.rollbacks == 1


def test_replay_attestations_are_indexed_and_rolled_back(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    run = record_run(chain.registry, data_store, "replayed", curve=[{"a": 1.0}, {"a": 2.0}])
    chain.as_(chain.bob).attest_replay(run.run_id, 0, 1, True, b"\x01" * 32)
    indexer.run_once()
    fork = rpc_call(chain.rpc_url, "evm_snapshot")
    chain.as_(chain.alice).attest_replay(run.run_id, 1, 2, False, b"\x02" * 32)
    indexer.run_once()
    rows = _replays(engine)
    assert [(r.attester, r.from_step, r.to_step, r.reproduced) for r in rows] == [
        (chain.bob.address, 0, 1, True),
        (chain.alice.address, 1, 2, False),
    ]
    assert rows[0].report_digest == "0x" + "01" * 32 and rows[0].run_id == run.hex

    assert rpc_call(chain.rpc_url, "evm_revert", [fork]) is True
    rpc_call(chain.rpc_url, "evm_mine")
    rpc_call(chain.rpc_url, "evm_mine")  # the winning branch is longer, without alice's
    result = indexer.run_once()
    assert result.rolled_back_to is not None
    assert [(r.attester, r.reproduced) for r in _replays(engine)] == [(chain.bob.address, True)]
    assert _runs(engine)[run.hex].checkpoint_count == 2  # the run itself rebuilt whole


def _replays(engine: Engine) -> list[ReplayAttestation]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        order = (ReplayAttestation.block_number, ReplayAttestation.log_index)
        return list(session.scalars(select(ReplayAttestation).order_by(*order)))


def test_a_chain_reset_empties_the_index(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    start = rpc_call(chain.rpc_url, "evm_snapshot")
    record_run(chain.registry, data_store, "gone")
    indexer.run_once()
    assert len(_runs(engine)) == 1
    assert rpc_call(chain.rpc_url, "evm_revert", [start]) is True  # shorter than the index
    result = indexer.run_once()
    assert result.rolled_back_to is not None
    assert _runs(engine) == {} and _count(engine, Weights) == 0
    fresh = record_run(chain.registry, data_store, "fresh")
    indexer.run_once()
    assert set(_runs(engine)) == {fresh.hex}


def test_fast_decoder_agrees_with_the_abi_codec(
    chain: Chain, indexer: Indexer, data_store: LocalStore
) -> None:
    base = record_run(chain.registry, data_store, "base")
    child = record_run(
        chain.registry,
        data_store,
        "child",
        parents=[(base.run_id, Relation.QUANTIZATION)],
        finalize=False,
    )
    chain.registry.mark_failed(child.run_id, "diverged — ünïcode reason")
    chain.as_(chain.admin).revoke_run(base.run_id, "x" * 100)
    chain.as_(chain.admin).revoke_artifact(b"\x07" * 32, "dataset — ünïcode " + "y" * 70)
    chain.as_(chain.bob).attest_replay(base.run_id, 2, 2**64 - 1, True, b"\x07" * 32)
    chain.as_(chain.alice).attest_replay(base.run_id, 0, 1, False, b"\xff" * 32)
    raw = indexer.rpc(
        "eth_getLogs",
        {"address": indexer.address, "fromBlock": hex(chain.deploy_block), "toBlock": "latest"},
    )
    decoded = [indexer.decoder.decode(entry) for entry in raw]
    generic = [indexer.decoder.decode_generic(entry) for entry in raw]
    assert decoded == generic
    names = {d.name for d in decoded if d is not None}
    assert names == {
        "RunStarted",
        "CheckpointCommitted",
        "RunFinalized",
        "RunFailed",
        "RunRevoked",
        "ArtifactRevoked",
        "ReplayAttested",
    }
    revoked = next(d for d in decoded if d is not None and d.name == "ArtifactRevoked")
    assert revoked.run_id == revoked.args["digest"] == "0x" + "07" * 32
    assert None in decoded  # role events of the registry are not run events


def test_documents_read_on_threads_keep_their_order() -> None:
    from ledger.index.indexer import _on_threads

    digests = [f"0x{i:064x}" for i in range(101)]  # slices of 26, 26, 26 and 23

    def read(digest: str) -> str:
        return digest[::-1]

    assert _on_threads(read, digests, 4) == [d[::-1] for d in digests]
    assert _on_threads(read, digests[:3], 4) == [d[::-1] for d in digests[:3]]


def test_artifact_revocations_and_replay_attestations_do_not_stop_the_indexer(
    chain: Chain, indexer: Indexer, engine: Engine, data_store: LocalStore
) -> None:
    run = record_run(chain.registry, data_store, "replayed")
    chain.registry.revoke_artifact(b"\x07" * 32, "dataset withdrawn")
    chain.as_(chain.bob).attest_replay(run.run_id, 0, 1, True, b"\x08" * 32)
    later = record_run(chain.registry, data_store, "after them")
    indexer.run_once()
    runs = _runs(engine)
    assert runs[run.hex].status == "finalized" and runs[later.hex].status == "finalized"
    assert indexer.last_block() == int(rpc_call(chain.rpc_url, "eth_blockNumber"), 16)

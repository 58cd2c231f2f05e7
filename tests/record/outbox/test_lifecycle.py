"""A run's life cycle (issue 20, classes 3-7), against the session's real Anvil:
a full store disk (a real tmpfs filled up), a key without the committer role, a
NaN metric, a killed training process and a damaged journal."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from ledger.chain.records import RunStatus
from ledger.cli.main import run_app
from ledger.config import Secret, Settings
from ledger.errors import MissingRoleError
from ledger.hashing.cid import Cid
from ledger.record.outbox import Outbox
from ledger.record.outbox.journal import Journal
from ledger.store import LocalStore
from ledger.training.hook import LedgerRun
from tests.conftest import OTHER_KEYS, Chain, free_port
from tests.record.outbox.test_outbox import manifest, weights

ROOT = Path(__file__).resolve().parents[3]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``ledger ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        run_app(list(args))
    out, err = capsys.readouterr()
    code = ended.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out, err


def train(settings: Settings, out: Path, epochs: int = 2, **kw: object) -> LedgerRun:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with LedgerRun(
        model, name="life", config={"epochs": epochs}, out=out, settings=settings, **kw
    ) as run:  # type: ignore[arg-type]
        for epoch in range(epochs):
            run.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    return run


# -- 3. a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs mounted at a folder (root only)."""
    folder = tmp_path / "mnt"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_store_disk_is_retried_and_finished_by_sync(
    chain: Chain,
    tmp_path: Path,
    small_disk: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_FLUSH_TIMEOUT", "0.5")  # what the exit handler waits
    home = tmp_path / "ledger"
    settings = chain.settings(home)
    settings.store_dir.symlink_to(small_disk, target_is_directory=True)
    filler = fill(small_disk)
    outbox = Outbox(settings, worker="thread")
    run_id = outbox.start_run(manifest("full"))
    outbox.checkpoint(run_id, 0, weights(tmp_path / "w0.pt", 0), {"loss": 1.0})
    assert outbox.flush(1.5, run_id) == 2  # nothing could be stored: kept, not failed
    entries = outbox.journal.entries()
    assert [e.state for e in entries] == ["pending", "pending"]
    assert "No space left on device" in (entries[0].error or "")
    report = outbox.report(run_id, 1.5)
    assert "2 record(s) not yet on chain after 1.5 s" in report
    assert "No space left on device" in report and "free space" in report
    outbox._at_exit()  # the process would end here: its worker stops, records stay
    assert "No space left on device" in capsys.readouterr().err  # told at exit

    filler.unlink()  # space is back: plain `ledger sync` finishes them
    code, out, _ = cli(capsys, "sync", "--data-dir", str(home), "--timeout", "60")
    assert code == 0, out
    assert "failed 0, still open 0" in out
    on_chain = chain.registry.events("CheckpointCommitted", bytes.fromhex(run_id[2:]))
    assert [int(e["step"]) for e in on_chain] == [0]
    assert Journal(home / "outbox.sqlite").counts()["failed"] == 0


def test_sync_reports_the_failed_records_it_holds(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "ledger"
    outbox = Outbox(chain.settings(home), background=False)
    run_id = outbox.start_run(manifest("refused"))
    path = weights(tmp_path / "w.pt", 0)
    outbox.checkpoint(run_id, 0, path, {"loss": 1.0})
    weights(path, 1)  # changed after it was handed over: refused for good
    outbox.sync(30)
    code, out, err = cli(capsys, "sync", "--data-dir", str(home), "--timeout", "30")
    assert code != 0
    assert "failed 1" in out and "checkpoint step 0" in out and "changed after" in out
    assert "--retry-failed" in err


# -- 4. a run never ends silently unrecorded --------------------------------------------


def test_a_key_without_the_committer_role_fails_before_training(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "ledger"
    settings = replace(chain.settings(home), private_key=Secret(OTHER_KEYS[0]))
    with pytest.raises(MissingRoleError) as refused:
        train(settings, tmp_path / "model.pt")
    message = str(refused.value)
    assert chain.alice.address in message
    assert f"ledger grant committer {chain.alice.address}" in message
    assert not (tmp_path / "model.pt").exists()  # not one epoch ran

    # an admin grants the role: the same run is then recorded
    code, out, _ = cli(capsys, "grant", "committer", chain.alice.address, "--data-dir", str(home))
    assert code == 0, out
    assert chain.registry.is_committer(chain.alice.address)
    run = train(settings, tmp_path / "model.pt", flush_timeout=60)
    record = chain.registry.get_run(bytes.fromhex(run.run_id[2:]))
    assert record.status is RunStatus.FINALIZED and record.committer == chain.alice.address

    code, out, _ = cli(
        capsys, "revoke-role", "committer", chain.alice.address, "--data-dir", str(home)
    )
    assert code == 0 and not chain.registry.is_committer(chain.alice.address)


def test_only_an_admin_grants_roles(
    chain: Chain,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "ledger"
    chain.settings(home)
    monkeypatch.setenv("LEDGER_PRIVATE_KEY", OTHER_KEYS[0])
    code, _, err = cli(capsys, "grant", "committer", chain.bob.address, "--data-dir", str(home))
    assert code == 30 and "is not an admin" in err
    assert not chain.registry.is_committer(chain.bob.address)
    code, _, err = cli(capsys, "grant", "owner", chain.bob.address, "--data-dir", str(home))
    assert code == 11 and "unknown role" in err


def test_an_unreachable_chain_lets_training_go_on(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = replace(
        chain.settings(tmp_path / "ledger"), rpc_url=f"http://127.0.0.1:{free_port()}"
    )
    run = train(settings, tmp_path / "model.pt", flush_timeout=0.3)
    assert (tmp_path / "model.pt").exists() and run.status == "finished"
    assert run.outbox is not None
    run.outbox._at_exit()  # the exit neither waits again nor repeats the report
    err = capsys.readouterr().err
    assert "training goes on and its records wait in the outbox" in err
    assert err.count("recorded:") == 1
    assert f"run {run.run_id} recorded: nothing yet; 4 record(s) not yet on chain" in err


def test_the_exit_says_what_was_recorded(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train(chain.settings(tmp_path / "ledger"), tmp_path / "model.pt", epochs=3)
    final = run.final
    assert final is not None and final.block_number is not None
    err = capsys.readouterr().err
    line = f"run {run.run_id} recorded: start, 3 checkpoints, final weights (block "
    assert line in err and err.count("recorded:") == 1


def test_the_exit_names_refused_records(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = chain.settings(tmp_path / "ledger")
    outbox = Outbox(settings, worker="thread")
    run_id = outbox.start_run(manifest("refused"))
    path = weights(tmp_path / "w.pt", 0)
    outbox.checkpoint(run_id, 0, path, {"loss": 1.0})
    weights(path, 1)
    outbox.finalize(run_id, weights(tmp_path / "final.pt", 2), {})
    outbox.flush(60, run_id)
    report = outbox.report(run_id, 60)
    assert report.startswith(f"run {run_id} recorded: start, final weights (block ")
    assert "1 record(s) refused for good" in report and "changed after" in report


def test_a_registry_gone_mid_run_is_not_waited_for_at_exit(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chain is reset after the run started (the registry's code is gone): the
    exit does not wait out the flush timeout for what only a deploy fixes; it says
    so in its line, the records stay in the outbox, and `ledger sync` sends them
    once the registry is back. (On main this waited the whole 30 s, then said only
    "not yet on chain".)"""
    home = tmp_path / "ledger"
    outbox = Outbox(chain.settings(home), worker="thread")
    run_id = outbox.start_run(manifest("reset-mid-run"))
    assert outbox.flush(60, run_id) == 0
    address = chain.registry.address
    code = chain.w3.eth.get_code(address).to_0x_hex()
    chain.w3.provider.make_request("anvil_setCode", [address, "0x"])  # type: ignore[arg-type]
    outbox.checkpoint(run_id, 0, weights(tmp_path / "w0.pt", 0), {"loss": 1.0})
    outbox.finalize(run_id, weights(tmp_path / "final.pt", 1), {"loss": 0.5})
    assert outbox.flush(30, run_id) == 2
    report = outbox.report(run_id, 30)
    assert report.startswith(f"run {run_id} recorded: start (block ")
    assert "2 record(s) not sent, not waited for: registry not deployed" in report
    assert "`ledger deploy`, then `ledger sync`" in report and "after 30 s" not in report
    assert [e.state for e in outbox.journal.entries()] == ["confirmed", "stored", "stored"]
    outbox._at_exit()
    capsys.readouterr()

    chain.w3.provider.make_request("anvil_setCode", [address, code])  # type: ignore[arg-type]
    exit_code, out, _ = cli(capsys, "sync", "--data-dir", str(home), "--timeout", "60")
    assert exit_code == 0 and "still open 0" in out, out
    on_chain = chain.registry.events("CheckpointCommitted", bytes.fromhex(run_id[2:]))
    assert [int(e["step"]) for e in on_chain] == [0]


def test_an_unavailable_store_is_still_waited_for(
    chain: Chain, tmp_path: Path, small_disk: Path
) -> None:
    """The neighbour: a record that may yet move (here a full store disk) is not
    given up early: the exit waits its timeout, as before."""
    settings = chain.settings(tmp_path / "ledger")
    settings.store_dir.symlink_to(small_disk, target_is_directory=True)
    fill(small_disk)
    outbox = Outbox(settings, worker="thread")
    run_id = outbox.start_run(manifest("full-no-skip"))
    assert outbox.flush(1.0, run_id) == 1
    assert "not sent, not waited for" not in outbox.report(run_id, 1.0)
    outbox._at_exit()


# -- 5. NaN and infinite metrics ---------------------------------------------------------


def test_non_finite_metrics_are_recorded_as_strings_with_one_warning(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ledger.record.outbox as outbox_module

    outbox_module._warned_non_finite = False
    settings = chain.settings(tmp_path / "ledger")
    torch.manual_seed(0)
    with LedgerRun(
        nn.Linear(4, 1), name="nan", config={}, out=tmp_path / "m.pt", settings=settings
    ) as run:
        run.epoch_end(0, {"loss": math.nan, "grad": {"max": math.inf}})
        run.epoch_end(1, {"loss": torch.tensor(-math.inf), "acc": 0.5})
    assert run.status == "finished"
    store = LocalStore(settings.store_dir)
    documents = [
        json.loads(store.get_bytes(c.metrics_cid))["metrics"] for c in run.commits if c.metrics_cid
    ]
    assert documents == [
        {"loss": "NaN", "grad": {"max": "Infinity"}},
        {"loss": "-Infinity", "acc": 0.5},
    ]
    final = run.final
    assert final is not None and final.metrics_cid is not None
    assert json.loads(store.get_bytes(final.metrics_cid))["metrics"]["loss"] == "-Infinity"
    err = capsys.readouterr().err
    assert err.count("not a finite number") == 1 and "'NaN'" in err


# -- 6. dead runs ------------------------------------------------------------------------

_START_AND_WAIT = """
import sys, time
from ledger.config import load_settings
from ledger.record.outbox import Outbox
from ledger.record.manifest import build_manifest
outbox = Outbox(load_settings(sys.argv[1]), background=False)
print(outbox.start_run(build_manifest(name="killed", config={})), flush=True)
time.sleep(600)
"""


def test_a_killed_training_is_shown_abandoned_and_recorded_failed(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "ledger"
    chain.settings(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", _START_AND_WAIT, str(home)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert run_id.startswith("0x"), run_id
    code, out, _ = cli(capsys, "status", "--data-dir", str(home))
    assert "abandoned" not in out  # alive: running, not abandoned
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    code, out, _ = cli(capsys, "status", "--data-dir", str(home))
    assert f"abandoned: process {proc.pid} gone" in out
    code, out, _ = cli(capsys, "status", "--data-dir", str(home), "--json")
    (shown,) = json.loads(out)["runs"]
    assert shown["abandoned"] == {"pid": proc.pid}

    code, out, err = cli(capsys, "sync", "--data-dir", str(home), "--abandoned", "--timeout", "60")
    assert code == 0, out + err
    rid = bytes.fromhex(run_id[2:])
    assert chain.registry.get_run(rid).status is RunStatus.FAILED
    (failed,) = chain.registry.events("RunFailed", rid)
    assert failed["reason"] == f"abandoned: process {proc.pid} gone"
    code, out, _ = cli(capsys, "status", "--data-dir", str(home))
    assert "abandoned" not in out  # ended now; a second --abandoned adds nothing
    cli(capsys, "sync", "--data-dir", str(home), "--abandoned", "--timeout", "60")
    assert len(chain.registry.events("RunFailed", rid)) == 1


# -- 7. a damaged journal ----------------------------------------------------------------


def test_a_damaged_journal_is_set_aside_and_rebuilt_from_the_chain(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "ledger"
    settings = chain.settings(home)
    run = train(settings, tmp_path / "model.pt", epochs=2)
    assert run.outbox is not None
    run.outbox._at_exit()
    run.outbox.journal.close()
    path = home / "outbox.sqlite"
    damaged = b"this is no database" + os.urandom(4096)
    path.write_bytes(damaged)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    capsys.readouterr()
    import ledger.record.outbox as outbox_module

    outbox_module._OPEN.clear()  # as in the next training process

    # training starts again, on a fresh journal; the damaged file is kept as evidence
    second = train(settings, tmp_path / "second.pt", epochs=1)
    assert second.final is not None and second.final.state == "confirmed"
    err = capsys.readouterr().err
    assert "is damaged" in err and "ledger sync" in err and ".recover" in err
    (aside,) = home.glob("outbox.sqlite.damaged-*")
    assert aside.read_bytes() == damaged

    code, out, err = cli(capsys, "sync", "--data-dir", str(home), "--timeout", "60")
    assert code == 0, out + err
    assert "rebuilt 4 record(s)" in err  # the first run's start, 2 checkpoints, final
    journal = Journal(path)
    first = journal.entries(run_id=run.run_id)
    assert [(e.kind, e.state) for e in first] == [
        ("start", "confirmed"),
        ("checkpoint", "confirmed"),
        ("checkpoint", "confirmed"),
        ("finalize", "confirmed"),
    ]
    assert Cid.parse(first[0].record["manifest_cid"]) == run.manifest_cid  # type: ignore[index]
    assert json.loads(first[0].payload["manifest"])["name"] == "life"
    # nothing was sent twice, and a second sync rebuilds nothing more
    rid = bytes.fromhex(run.run_id[2:])
    assert len(chain.registry.events("CheckpointCommitted", rid)) == 2
    code, out, err = cli(capsys, "sync", "--data-dir", str(home), "--timeout", "60")
    assert code == 0 and "rebuilt" not in err
    assert len(Journal(path).entries(run_id=run.run_id)) == 4


def test_a_journal_with_a_damaged_page_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    journal = Journal(path)
    for i in range(300):
        journal.append(f"0x{i:064x}", "start", {"manifest": "x" * 500})
    journal._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    journal.close()
    with open(path, "r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(b"\xff" * 8192)
    fresh = Journal(path)
    assert fresh.damaged is not None and fresh.damaged.exists()
    assert fresh.entries() == [] and fresh.meta("damaged") == fresh.damaged.name


def test_a_full_disk_under_the_journal_does_not_stop_training(
    chain: Chain,
    tmp_path: Path,
    small_disk: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the whole data directory (journal and store) on a small disk that fills up
    outbox = Outbox(chain.settings(small_disk), worker="thread")
    run_id = outbox.start_run(manifest("journal-full"))
    assert outbox.flush(60, run_id) == 0
    filler = fill(small_disk)
    held: list[int] = []
    for step in range(50):  # the journal's write-ahead log may have room for a few
        entry = outbox.checkpoint(run_id, step, weights(tmp_path / f"w{step}.pt", step), {})
        if entry < 0:
            held.append(entry)
        if len(held) == 2:
            break
    assert len(held) == 2, "the full disk never refused an append"
    err = capsys.readouterr().err
    assert err.count("is full") == 1 and "training goes on" in err  # said once
    report = outbox.report(run_id)
    assert "2 record(s) not journaled" in report and "lost when this process ends" in report

    filler.unlink()  # room again: the held records go in first, in order
    last = outbox.checkpoint(run_id, 99, weights(tmp_path / "w99.pt", 99), {})
    assert last > 0
    steps = [e.step for e in outbox.journal.entries(run_id=run_id) if e.kind == "checkpoint"]
    assert steps == sorted(steps) and steps[-1] == 99 and len(steps) == step + 2
    written = outbox.journal_ids(held)
    assert len(written) == 2 and all(i > 0 for i in written)
    assert "not journaled" not in outbox.report(run_id)
    assert outbox.flush(60, run_id) == 0  # and all of them reach the chain
    on_chain = chain.registry.events("CheckpointCommitted", bytes.fromhex(run_id[2:]))
    assert sorted(int(e["step"]) for e in on_chain) == steps

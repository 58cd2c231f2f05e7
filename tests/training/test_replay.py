"""Replayable runs and `ledger replay`: real Anvil, a real store, a real training script.

A tiny model trains on a tiny local dataset in a git repository of its own; the
script is recorded in a subprocess (as a user runs it) and replayed with the
same script in replay mode. Spoofed runs (``SPOOF=...`` changes what the script
does without the config saying so) must come out DIVERGED.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ledger.chain.reader import RegistryReader
from ledger.config import Settings
from ledger.errors import CodeDriftError, NotReplayableError
from ledger.replay import (
    ReplayOutcome,
    ReplayReport,
    attestations,
    read_report,
    record_report,
    replay_run,
)
from ledger.store import open_store
from tests.conftest import Chain
from tests.training.test_flow import train

TRAIN = [sys.executable, "train.py"]
REPLAY = [sys.executable, "-m", "ledger", "replay"]
SCRIPT = """
import os
import time
import torch
from torch import nn
from ledger.training import LedgerRun

SPOOF = os.environ.get("SPOOF", "")
PAUSE_AT = os.environ.get("PAUSE_AT")  # in replay mode: say so in this file, then hang
cfg = {"lr": 0.05, "epochs": 3, "seed": 7, "batch": 8}
torch.manual_seed(cfg["seed"])
data = torch.load("data.pt")
x, y = data["x"], data["y"]
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
with LedgerRun(model, name="replay-test", config=cfg, data={"data": "data.pt"},
               out="out/model.pt", optimizer=opt, scheduler=sched, seed=cfg["seed"]) as run:
    for epoch in run.epochs(cfg["epochs"]):
        if PAUSE_AT and run.replay is not None:
            with open(PAUSE_AT, "w") as said:
                said.write(str(os.getpid()))
            time.sleep(600)
        order = run.permutation(epoch, len(x))
        xs, ys = x, y
        if SPOOF == "data" and epoch == 2:  # other data of the same shapes, the same order
            xs = torch.randn(x.shape, generator=torch.Generator().manual_seed(99))
            ys = xs.sum(1, keepdim=True)
        if SPOOF == "order" and epoch == 2:
            order = order[::-1]
            run.data_order(epoch, order)
        if SPOOF == "lr" and epoch == 2:
            for group in opt.param_groups:
                group["lr"] *= 3
        for i in range(0, len(order), cfg["batch"]):
            if SPOOF == "skip" and epoch == 2 and i == 0:
                continue
            idx = torch.tensor(order[i:i + cfg["batch"]])
            xb = xs[idx] + 0.01 * torch.randn(len(idx), 4)  # the torch RNG must be restored
            loss = nn.functional.mse_loss(model(xb), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        run.epoch_end(epoch, {"loss": float(loss.detach())})
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with the training script and its dataset, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(SCRIPT)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(32, 4, generator=generator)
    torch.save({"x": x, "y": x.sum(1, keepdim=True)}, repo / "data.pt")
    (repo / ".gitignore").write_text("out/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "train")
    return repo


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "SPOOF"))}
    env.update(LEDGER_HOME=str(settings.data_dir), LEDGER_OUTBOX_WORKER="thread", **extra)
    return env


def record(chain: Chain, tmp_path: Path, repo: Path, spoof: str = "") -> tuple[Settings, str]:
    """Run the script as a user would; returns the settings and the run id."""
    settings = chain.settings(tmp_path / "ledger")
    done = subprocess.run(
        [sys.executable, "train.py"],
        cwd=repo,
        env=environment(settings, SPOOF=spoof),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    start = next(line for line in done.stderr.splitlines() if "recorded: start" in line)
    assert "3 checkpoints, final weights" in start, done.stderr
    return settings, re.findall(r"0x[0-9a-f]{64}", start)[0]


def replay(settings: Settings, run_id: str, repo: Path, **options: Any) -> ReplayReport:
    """`ledger replay` in process (the training command still runs as a subprocess)."""
    return replay_run(
        RegistryReader.connect(settings),
        open_store(settings),
        run_id,
        TRAIN,
        segments=5,
        code_root=repo,
        **options,
    )


def test_an_honest_run_replays_identically_and_the_verdict_is_attested(
    chain: Chain, tmp_path: Path, project: Path
) -> None:
    settings, run_id = record(chain, tmp_path, project)
    journal = (settings.data_dir / "outbox.sqlite").read_bytes()
    done = subprocess.run(
        [*REPLAY, run_id, "-k", "2", "--json", "--record", "--", *TRAIN],
        cwd=project,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["outcome"] == "reproduced"
    assert [s["verdict"] for s in verdict["segments"]] == ["identical", "identical"]
    assert [(s["from_step"], s["to_step"]) for s in verdict["segments"]] == [(0, 1), (1, 2)]
    assert (settings.data_dir / "outbox.sqlite").read_bytes() == journal  # the run untouched

    # on chain (read by the web3 oracle): one attestation per interval, by the replayer's
    # key, each naming the stored report
    events = chain.registry.events("ReplayAttested", bytes.fromhex(run_id[2:]))
    assert [(e["fromStep"], e["toStep"], e["reproduced"]) for e in events] == [
        (0, 1, True),
        (1, 2, True),
    ]
    assert {e["attester"] for e in events} == {chain.admin.address}
    digests = {bytes(e["reportDigest"]) for e in events}
    assert len(digests) == 1
    report = read_report(open_store(settings), digests.pop())
    assert report["schema"] == "ledger.replay-report/v1"
    assert report["attester"] == chain.admin.address and report["command"] == TRAIN
    assert report["segments"] == verdict["segments"] and report["outcome"] == "reproduced"
    attested = verdict["attestations"]
    assert [a["tx_hash"] for a in attested] == [e["transactionHash"] for e in events]
    # ledger's own reader sees the same
    seen = attestations(RegistryReader.connect(settings), bytes.fromhex(run_id[2:]))
    assert [a.to_json() for a in seen] == attested
    # and `ledger show` lists them
    show = [sys.executable, "-m", "ledger", "show", run_id]
    env = environment(settings)
    shown = subprocess.run(show, env=env, capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.startswith("replayed")]
    assert (
        len(lines) == 2 and "checkpoint 1 -> 2: reproduced, by " + chain.admin.address in lines[1]
    )
    as_json = subprocess.run([*show, "--json"], env=env, capture_output=True, check=False)
    assert json.loads(as_json.stdout)["replays"] == attested


@pytest.mark.parametrize("spoof", ["lr", "skip", "order", "data"])
def test_a_spoofed_run_diverges(chain: Chain, tmp_path: Path, project: Path, spoof: str) -> None:
    settings, run_id = record(chain, tmp_path, project, spoof=spoof)
    report = replay(settings, run_id, project, seed=1)
    assert report.outcome is ReplayOutcome.DIVERGED
    assert report.outcome.exit_code == 8
    first, second = report.segments
    assert first.verdict == "identical"  # epoch 1 was honest
    assert second.verdict == "diverged"
    line = second.line()
    if spoof == "lr":  # a diverged verdict is attested as such, the honest interval as reproduced
        from ledger.chain.admin import RegistryAdmin

        attested = record_report(
            RegistryAdmin.connect(settings), open_store(settings), report, TRAIN
        )
        assert [(a.from_step, a.to_step, a.reproduced) for a in attested] == [
            (0, 1, True),
            (1, 2, False),
        ]
        events = chain.registry.events("ReplayAttested", bytes.fromhex(run_id[2:]))
        assert [e["reproduced"] for e in events] == [True, False]
    if spoof == "order":
        assert "epoch 2: the data order differs from the committed one" in line
    else:
        assert second.diverged_tensors and "0.weight" in line and "L-inf" in line


def test_code_drift_is_refused_unless_allowed(chain: Chain, tmp_path: Path, project: Path) -> None:
    settings, run_id = record(chain, tmp_path, project)
    script = project / "train.py"
    script.write_text(script.read_text().replace("0.01 * torch", "0.02 * torch"))
    with pytest.raises(CodeDriftError, match="uncommitted changes differ") as refused:
        replay(settings, run_id, project)
    assert refused.value.exit_code == 9 and "--allow-code-drift" in str(refused.value.hint)

    refused_record = subprocess.run(
        [*REPLAY, run_id, "--allow-code-drift", "--record", "--", *TRAIN],
        cwd=project,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused_record.returncode == 11, refused_record.stderr
    assert "is not attested on chain" in refused_record.stderr

    report = replay(settings, run_id, project, allow_code_drift=True)
    assert any(n.startswith("code drift allowed") for n in report.notes)
    assert report.outcome is ReplayOutcome.DIVERGED  # the drifted code trains otherwise


def test_a_run_without_optimizer_state_is_not_replayable(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path, epochs=3)
    settings = chain.settings(tmp_path / "ledger")
    with pytest.raises(NotReplayableError, match="not replayable") as refused:
        replay(settings, run.run_id, tmp_path)
    assert "optimizer=" in str(refused.value)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_replay_stops_cleanly_and_records_nothing(
    chain: Chain, tmp_path: Path, project: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (or SIGTERM) while a segment trains: the training command is stopped,
    the replay's temporary folder removed, no verdict printed, nothing recorded."""
    settings, run_id = record(chain, tmp_path, project)
    journal = (settings.data_dir / "outbox.sqlite").read_bytes()
    said, tmp = tmp_path / "paused", tmp_path / "tmp"
    tmp.mkdir()
    replaying = subprocess.Popen(
        [*REPLAY, run_id, "-k", "1", "--record", "--", *TRAIN],
        cwd=project,
        env=environment(settings, PAUSE_AT=str(said), TMPDIR=str(tmp)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (said.is_file() and said.read_text()):  # the segment's command is training
            assert replaying.poll() is None, replaying.communicate()
            time.sleep(0.1)
        command = int(said.read_text())
        assert len(list(tmp.glob("ledger-replay-*"))) == 1  # torch keeps its own cache here
        replaying.send_signal(sig)
        out, err = replaying.communicate(timeout=120)
    finally:
        if replaying.poll() is None:
            replaying.kill()
            replaying.wait()
    assert replaying.returncode == 130, err
    assert "interrupted while replaying checkpoint" in err and "nothing recorded" in err
    assert "Traceback" not in err and out == ""  # one clear line, no verdict
    assert list(tmp.glob("ledger-replay-*")) == []  # no temporary state left
    assert not Path(f"/proc/{command}").exists()  # the training command was stopped
    assert (settings.data_dir / "outbox.sqlite").read_bytes() == journal  # nothing recorded
    assert chain.registry.events("ReplayAttested", bytes.fromhex(run_id[2:])) == []


def test_the_price_forecast_example_is_replayable(chain: Chain, tmp_path: Path) -> None:
    """examples/price_forecast.py as a user has it in their repository: recorded,
    then replayed with `ledger replay` to REPRODUCED."""
    repo = tmp_path / "repo"
    (repo / "examples").mkdir(parents=True)
    here = Path(__file__).resolve().parents[2] / "examples"
    for name in ("__init__.py", "price_forecast.py"):
        (repo / "examples" / name).write_text((here / name).read_text())
    (repo / ".gitignore").write_text("out/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "example")
    command = [sys.executable, "-m", "examples.price_forecast", "--epochs", "3"]
    settings = chain.settings(tmp_path / "ledger")
    done = subprocess.run(
        [*command, "--out", "out/model.pt"],
        cwd=repo,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_id = re.findall(r"run (0x[0-9a-f]{64}) finalized", done.stdout)[0]
    replayed = subprocess.run(
        [*REPLAY, run_id, "-k", "2", "--json", "--", *command, "--out", "out/model.pt"],
        cwd=repo,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stderr
    verdict = json.loads(replayed.stdout)
    assert [s["verdict"] for s in verdict["segments"]] == ["identical", "identical"]


def test_resume_weights_may_leave_out_tied_tensors_only() -> None:
    """save_pretrained writes a tied tensor once: a resume file without it still holds
    the committed weights; one without an untied tensor, or with another value, not."""
    from ledger.replay import _same_weights

    emb = torch.arange(6.0).reshape(2, 3)
    committed = {"wte": emb, "lm_head": emb.clone(), "bias": torch.ones(3)}
    assert _same_weights({"wte": emb, "bias": torch.ones(3)}, committed)
    assert _same_weights(dict(committed), committed)
    assert not _same_weights({"wte": emb}, committed)  # bias left out, and not tied
    assert not _same_weights({"wte": emb, "bias": torch.zeros(3)}, committed)
    assert not _same_weights({"wte": emb, "bias": torch.ones(3, dtype=torch.float64)}, committed)
    assert not _same_weights({**committed, "extra": torch.ones(1)}, committed)

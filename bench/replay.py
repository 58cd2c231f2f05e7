"""What ``ledger replay`` costs against the training it checks.

Records a small CPU training run (an MLP on synthetic data, ``--epochs`` N
checkpoint intervals of a few seconds each, one thread) with the hook on a
throw-away local Anvil, as a user runs it (a subprocess, start-up included),
then replays K of its N intervals with ``ledger replay -k K -- python train.py``
(start-up, fetching and re-hashing the committed files, one training command per
interval, comparison included). Prints

    ratio = replay_wall / (train_wall * K / N)

Goal (issue #24): at most 1.15. ``ledger replay`` runs the training command
once for all K intervals (each restored from its own committed state), so it
pays one start-up, as the training did; the ratio then depends on how long an
interval is against that start-up: with start-up S and interval I, replaying K
of N costs about S + K*I against (S + N*I) * K/N. Where the time goes is
measured in the same run: the start-up of ``python -c "import torch"``, of
``ledger --help`` and of the training hook's imports, and one interval's time
(the recorded run's wall, less that start-up, over N).

Run: ``PYTHONPATH=. .venv/bin/python bench/replay.py [--epochs N] [--segments K]
[--size S]``. The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from verify import load_average  # noqa: E402

GOAL = 1.15

SCRIPT = """
import sys
import torch
from torch import nn
from ledger.training import LedgerRun

torch.set_num_threads(1)
cfg = {"lr": 0.01, "epochs": int(sys.argv[1]), "seed": 5, "batch": 64, "size": int(sys.argv[2])}
torch.manual_seed(cfg["seed"])
data = torch.load("data.pt")
x, y = data["x"], data["y"]
width = cfg["size"]
model = nn.Sequential(nn.Linear(x.shape[1], width), nn.ReLU(), nn.Linear(width, width),
                      nn.ReLU(), nn.Linear(width, 1))
opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"])
with LedgerRun(model, name="bench-replay", config=cfg, data={"data": "data.pt"},
               out="out/model.pt", optimizer=opt, scheduler=sched, seed=cfg["seed"]) as run:
    for epoch in run.epochs(cfg["epochs"]):
        order = run.permutation(epoch, len(x))
        for i in range(0, len(order), cfg["batch"]):
            idx = torch.tensor(order[i:i + cfg["batch"]])
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        run.epoch_end(epoch, {"loss": float(loss.detach())})
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def project(where: Path, samples: int) -> Path:
    """A git repository with the training script and its dataset, committed."""
    import torch

    repo = where / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(SCRIPT)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(samples, 64, generator=generator)
    torch.save({"x": x, "y": (x[:, :8].sum(1, keepdim=True)).tanh()}, repo / "data.pt")
    (repo / ".gitignore").write_text("out/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@example.org", "commit", "-qm", "bench")
    return repo


def deploy(data_dir: Path, rpc_url: str) -> None:
    from ledger.chain.admin import RegistryAdmin
    from ledger.chain.rpc import JsonRpc
    from ledger.chain.sender import Signer
    from ledger.config import ANVIL_DEV_KEY, Secret, Settings, save_deployment

    registry, deployed = RegistryAdmin.deploy(JsonRpc(rpc_url), Signer(Secret(ANVIL_DEV_KEY)))
    settings = Settings(data_dir=data_dir, rpc_url=rpc_url)
    save_deployment(
        settings, address=registry.address, chain_id=registry.chain_id, block=deployed.block_number
    )


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    """Wall time and stdout+stderr of one subprocess; stops the bench when it fails."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout + done.stderr


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=6, help="checkpoint intervals N (6)")
    parser.add_argument("--segments", type=int, default=2, help="intervals replayed K (2)")
    parser.add_argument("--size", type=int, default=512, help="the MLP's width (512)")
    parser.add_argument(
        "--samples", type=int, default=65536, help="training samples (65536): an interval's length"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.segments <= args.epochs - 1:
        raise SystemExit("--segments must be between 1 and --epochs - 1")

    import shutil

    from ledger.chain.anvil import AnvilProcess, free_port

    work = Path(tempfile.mkdtemp(prefix="ledger-bench-replay-"))
    anvil = AnvilProcess(work / "chain", port=free_port())
    try:
        anvil.start(persist=False)
        deploy(work / "ledger", anvil.rpc_url)
        repo = project(work, args.samples)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(
            LEDGER_HOME=str(work / "ledger"),
            LEDGER_RPC_URL=anvil.rpc_url,
            PYTHONPATH=str(REPO),
            TMPDIR=str(work),
        )
        python = sys.executable
        train = [python, "train.py", str(args.epochs), str(args.size)]
        loads = [load_average()]
        startup = {
            "python_import_torch": timed([python, "-c", "import torch"], env)[0],
            "ledger_help": timed([python, "-m", "ledger", "--help"], env)[0],
            "import_training_hook": timed(
                [python, "-c", "import ledger.training.hook"], env, cwd=repo
            )[0],
        }
        train_wall, said = timed(train, env, cwd=repo)
        run_line = next(line for line in said.splitlines() if "recorded: start" in line)
        if f"{args.epochs} checkpoints" not in run_line:
            raise SystemExit(f"the run did not record every checkpoint:\n{said}")
        run_id = next(w for w in run_line.replace(",", " ").split() if w.startswith("0x"))
        loads.append(load_average())
        replay = [python, "-m", "ledger", "replay", run_id, "-k", str(args.segments)]
        replay += ["--seed", "1", "--json", "--", *train]
        replay_wall, said = timed(replay, env, cwd=repo)
        loads.append(load_average())
        verdict = json.loads(said[: said.rindex("}") + 1][said.index("{") :])
        if verdict["outcome"] != "reproduced":
            raise SystemExit(f"the honest run did not replay:\n{said}")
        share = args.segments / args.epochs
        ratio = replay_wall / (train_wall * share)
        interval = (train_wall - startup["import_training_hook"]) / args.epochs
        # what replay pays besides training K intervals: its own start-up, one start-up of
        # the training command per interval, fetching, re-hashing and comparing
        overhead = replay_wall - args.segments * interval
        print(f"train {args.epochs} intervals: {train_wall:.2f} s (one interval ~{interval:.2f} s)")
        print(f"replay {args.segments} of them: {replay_wall:.2f} s")
        print(
            f"ratio replay / (train x {args.segments}/{args.epochs}) = {ratio:.2f} "
            f"({'meets' if ratio <= GOAL else 'misses'} the {GOAL} goal)"
        )
        print(
            f"replay beyond training {args.segments} intervals: {overhead:.2f} s; start-ups: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())
        )
        print(
            json.dumps(
                {
                    "bench": "replay",
                    "epochs": args.epochs,
                    "segments": args.segments,
                    "width": args.size,
                    "samples": args.samples,
                    "load_average": loads,
                    "train_wall_s": round(train_wall, 3),
                    "replay_wall_s": round(replay_wall, 3),
                    "interval_s": round(interval, 3),
                    "ratio": round(ratio, 3),
                    "goal": GOAL,
                    "replay_overhead_s": round(overhead, 3),
                    "startup_s": {k: round(v, 3) for k, v in startup.items()},
                },
                sort_keys=True,
            )
        )
    finally:
        anvil.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

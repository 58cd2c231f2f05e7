"""What recording a run costs training: ledger's hook against MLflow's logging.

A small MLP (64 -> 256 -> 256 -> 1) is trained on a synthetic regression task
for N epochs with a checkpoint every epoch, in four variants, each in a fresh
process, interleaved over several repeats (medians reported):

- ``plain``: the training loop alone (project virtualenv);
- ``ledger``: the same loop inside ``LedgerRun`` (writes the weights file each
  epoch, hands it to the outbox; the run's end waits for the chain);
- ``plain-mlflow-env`` and ``mlflow``: the loop alone and with MLflow
  (``mlflow.log_metrics`` per epoch and the weights file written with
  ``torch.save`` and logged with ``mlflow.log_artifact``, local file store) in
  MLflow's own virtualenv (``bench/.mlflow``, built by ``make bench-overhead``;
  MLflow is not a project dependency).

Printed: ``ledger / plain`` (goal at most 1.02) and ``mlflow / plain`` measured
the same way, then one JSON line of the figures.

Run: ``make bench-overhead`` (``BENCH_ARGS="--epochs 20 --repeats 5"``)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_PYTHON = ROOT / "bench" / ".mlflow" / "bin" / "python"
GOAL = 1.02


def train(epochs: int, on_epoch: object = None, on_start: object = None) -> None:
    """The shared workload; ``on_start(model)`` before the first epoch (where a
    ``with LedgerRun(model, ...)`` block begins in real use), ``on_epoch(epoch,
    model, metrics)`` after each epoch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x = torch.randn(8_192, 64)
    y = (x[:, :8].sum(dim=1, keepdim=True) + 0.1 * torch.randn(8_192, 1)).tanh()
    model = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    if on_start is not None:
        on_start(model)  # type: ignore[operator]
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            optimiser.zero_grad()
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
            total += float(loss) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, model, {"train_loss": total / len(x)})  # type: ignore[operator]


def variant(name: str, epochs: int, out: Path) -> float:
    """Run one variant in this process; returns its wall time in seconds."""
    import torch  # imported before timing, as in every variant

    if name.startswith("plain"):
        t0 = time.perf_counter()
        train(epochs)
        return time.perf_counter() - t0
    if name == "mlflow":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the issue asks for the file store
        import mlflow

        mlflow.set_tracking_uri((out / "mlruns").as_uri())
        t0 = time.perf_counter()
        with mlflow.start_run():
            mlflow.log_params({"epochs": epochs, "lr": 1e-3})

            def log(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
                mlflow.log_metrics(metrics, step=epoch)
                path = out / f"step-{epoch:06d}.pt"
                torch.save(model.state_dict(), path)
                mlflow.log_artifact(str(path))

            train(epochs, log)
        return time.perf_counter() - t0
    if name == "ledger":
        from training.hook import LedgerRun

        model_out = out / "model.pt"
        t0 = time.perf_counter()
        holder: dict[str, LedgerRun] = {}

        def start(model: torch.nn.Module) -> None:
            holder["run"] = LedgerRun(
                model, name="overhead", config={"epochs": epochs}, out=model_out
            )
            holder["run"].start()

        def commit(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
            holder["run"].epoch_end(epoch, metrics)

        train(epochs, commit, start)
        holder["run"].finish()
        elapsed = time.perf_counter() - t0
        final = holder["run"].final
        if final is None or final.state != "confirmed":
            raise SystemExit(f"the final record is not confirmed: {final}")
        return elapsed
    raise SystemExit(f"unknown variant {name!r}")


def spawn(python: Path | str, name: str, epochs: int, home: Path, env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory(prefix=f"overhead-{name}-") as out:
        done = subprocess.run(
            [str(python), __file__, "--variant", name, "--epochs", str(epochs), "--out", out],
            env={**env, "LEDGER_HOME": str(home), "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        seconds = variant(args.variant, args.epochs, args.out)
        print(json.dumps({"seconds": seconds}))
        return

    from ledger.chain.anvil import AnvilProcess
    from tests.conftest import free_port

    load_before = os.getloadavg()[0]  # beside the figures: other work on the cores skews them
    with tempfile.TemporaryDirectory(prefix="ledger-bench-overhead-") as tmp:
        anvil = AnvilProcess(Path(tmp) / "chain", port=free_port())
        anvil.start(persist=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env["LEDGER_RPC_URL"] = anvil.rpc_url
        home = Path(tmp) / "ledger"
        try:
            subprocess.run(
                [sys.executable, "-m", "ledger", "deploy"],
                env={**env, "LEDGER_HOME": str(home)},
                check=True,
                capture_output=True,
            )
            variants = ["plain", "ledger"]
            if MLFLOW_PYTHON.exists():
                variants += ["plain-mlflow-env", "mlflow"]
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for name in variants:
                    python = MLFLOW_PYTHON if "mlflow" in name else sys.executable
                    times[name].append(spawn(python, name, args.epochs, home, env))
        finally:
            anvil.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, values in times.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:>16}: {shown} s (median {med[name]:.2f})")
    figures: dict[str, object] = {
        "epochs": args.epochs,
        "repeats": args.repeats,
        "load_average": [load_before, os.getloadavg()[0]],
        "seconds": med,
        "all_seconds": times,
        "ledger_ratio": med["ledger"] / med["plain"],
        "goal": GOAL,
    }
    print(
        f"plain {med['plain']:.2f} s, ledger {med['ledger']:.2f} s: "
        f"ratio {figures['ledger_ratio']:.3f} (goal <= {GOAL})"
    )
    if "mlflow" in med:
        figures["mlflow_ratio"] = med["mlflow"] / med["plain-mlflow-env"]
        print(
            f"plain {med['plain-mlflow-env']:.2f} s, mlflow {med['mlflow']:.2f} s: "
            f"ratio {figures['mlflow_ratio']:.3f}"
        )
    else:
        print("mlflow: not measured (run `make bench-overhead` to build bench/.mlflow)")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

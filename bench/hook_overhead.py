"""What recording a run costs training: ledger's hook against MLflow's logging.

A small MLP (64 -> 256 -> 256 -> 1) is trained on a synthetic regression task
for N epochs with a checkpoint every epoch, in four variants, each in a fresh
process, interleaved over several repeats (medians reported):

- ``plain``: the training loop alone, writing its checkpoint each epoch with
  ``torch.save`` (project virtualenv): what the run costs without any tracking;
- ``ledger``: the same loop inside ``LedgerRun`` (``epoch_end`` writes the
  weights file, hands it to the outbox; the run's end waits for the chain);
- ``plain-mlflow-env`` and ``mlflow``: the plain loop and the loop with MLflow
  (``mlflow.log_metrics`` per epoch and the checkpoint file logged with
  ``mlflow.log_artifact``, local file store) in MLflow's own virtualenv
  (``bench/.mlflow``, built by ``make bench-overhead``; MLflow is not a project
  dependency).

Every variant writes the same checkpoint file each epoch (the workload is "a
checkpoint every epoch"); the ratios are what tracking adds to that.

Printed: ``ledger / plain`` (goal at most 1.02) and ``mlflow / plain`` measured
the same way, as ratios of medians, of the best (least disturbed) repeats and
the median of paired ratios (each repeat against the baseline run just before
it), then one JSON line of the figures.

The ledger runs share one data directory, as a sweep's trials or re-runs of a
script do: the first starts the outbox worker process (an interpreter and its
imports, about 0.2 s of CPU beside training), the later ones find it resident
(``LEDGER_OUTBOX_KEEP``) and attach to it. The median is over all repeats; the
first run's ratio, against the first plain run, is printed apart as the cost of
a run that starts the worker.

``--samples`` sets the data set size, hence the epoch length and how often a
checkpoint is taken: the default, 8,192 samples, gives about 0.15 s per epoch
on 2 cores (a checkpoint every 0.15 s); ``--samples 32768`` about 0.4 s. The
fixed cost of a run (its start, and its end, which waits for the chain: about
20 ms each) and the few milliseconds per checkpoint weigh less as epochs grow.

Run: ``make bench-overhead`` (``BENCH_ARGS="--epochs 20 --repeats 9 --samples 32768"``)
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


SAMPLES = 8_192


def train(
    epochs: int, on_epoch: object = None, on_start: object = None, samples: int = SAMPLES
) -> None:
    """The shared workload; ``on_start(model)`` before the first epoch (where a
    ``with LedgerRun(model, ...)`` block begins in real use), ``on_epoch(epoch,
    model, metrics)`` after each epoch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x = torch.randn(samples, 64)
    y = (x[:, :8].sum(dim=1, keepdim=True) + 0.1 * torch.randn(samples, 1)).tanh()
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
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, model, {"train_loss": total / len(x)})  # type: ignore[operator]


def variant(name: str, epochs: int, out: Path, samples: int = SAMPLES) -> float:
    """Run one variant in this process; returns its wall time in seconds."""
    import functools

    import torch  # imported before timing, as in every variant

    train = functools.partial(globals()["train"], samples=samples)
    if name.startswith("plain"):

        def save(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
            torch.save(model.state_dict(), out / f"step-{epoch:06d}.pt")

        t0 = time.perf_counter()
        train(epochs, save)
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


def spawn(
    python: Path | str, name: str, args: argparse.Namespace, home: Path, env: dict[str, str]
) -> float:
    sizes = ["--epochs", str(args.epochs), "--samples", str(args.samples)]
    with tempfile.TemporaryDirectory(prefix=f"overhead-{name}-") as out:
        done = subprocess.run(
            [str(python), __file__, "--variant", name, "--out", out, *sizes],
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
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--samples", type=int, default=SAMPLES, help="data set size")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        seconds = variant(args.variant, args.epochs, args.out, args.samples)
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
                    times[name].append(spawn(python, name, args, home, env))
            # the resident worker steps aside now, not a minute after the chain is gone
            subprocess.run(
                [sys.executable, "-m", "ledger", "sync"],
                env={**env, "LEDGER_HOME": str(home)},
                check=True,
                capture_output=True,
            )
        finally:
            anvil.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, values in times.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:>16}: {shown} s (median {med[name]:.2f})")
    first_ratio = times["ledger"][0] / times["plain"][0]
    # the least disturbed repeat of each: other work on a shared machine only adds time
    best = {k: min(v) for k, v in times.items()}

    def paired(variant: str, baseline: str) -> float:
        """Median of each repeat's ratio to the baseline run just before it (drifting
        load touches neighbours alike)."""
        pairs = zip(times[variant], times[baseline], strict=True)
        return statistics.median(a / b for a, b in pairs)

    figures: dict[str, object] = {
        "epochs": args.epochs,
        "samples": args.samples,
        "repeats": args.repeats,
        "first_run_ratio": first_ratio,
        "load_average": [load_before, os.getloadavg()[0]],
        "seconds": med,
        "all_seconds": times,
        "ledger_ratio": med["ledger"] / med["plain"],
        "ledger_ratio_best": best["ledger"] / best["plain"],
        "ledger_ratio_paired": paired("ledger", "plain"),
        "goal": GOAL,
    }
    print(
        f"plain {med['plain']:.2f} s, ledger {med['ledger']:.2f} s: "
        f"ratio {figures['ledger_ratio']:.3f} (goal <= {GOAL})"
    )
    print(
        f"best ledger run / best plain run: {figures['ledger_ratio_best']:.3f}; "
        f"median of paired ratios: {figures['ledger_ratio_paired']:.3f}"
    )
    print(f"first ledger run (starts the worker) / first plain run: {first_ratio:.3f}")
    if "mlflow" in med:
        figures["mlflow_ratio"] = med["mlflow"] / med["plain-mlflow-env"]
        figures["mlflow_ratio_best"] = best["mlflow"] / best["plain-mlflow-env"]
        figures["mlflow_ratio_paired"] = paired("mlflow", "plain-mlflow-env")
        print(
            f"plain {med['plain-mlflow-env']:.2f} s, mlflow {med['mlflow']:.2f} s: "
            f"ratio {figures['mlflow_ratio']:.3f} (best runs: {figures['mlflow_ratio_best']:.3f}; "
            f"paired: {figures['mlflow_ratio_paired']:.3f})"
        )
    else:
        print("mlflow: not measured (run `make bench-overhead` to build bench/.mlflow)")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

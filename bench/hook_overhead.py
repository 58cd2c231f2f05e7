"""What recording a run costs training: ledger's hook against MLflow's logging.

A small MLP (64 -> 256 -> 256 -> 1) is trained on a synthetic regression task
for N epochs with a checkpoint every epoch, in five variants, each in a fresh
process, over several repeats:

- ``plain``: the training loop alone, writing its checkpoint each epoch with
  ``torch.save`` (project virtualenv): what the run costs without any tracking;
- ``ledger``: the same loop inside ``LedgerRun`` (``epoch_end`` writes the
  weights file, hands it to the outbox; the run's end, ``finish()``, writes the
  final model file and waits for the chain, and is inside the timed span);
- ``floor``: the plain loop, each checkpoint file (and a final model file)
  handed to a helper process (nice +10, as the outbox worker; started before
  the timed span) that reads it, SHA-256s it and keeps a copy durably
  (fsynced, renamed, its folder fsynced); the run's end waits for the last.
  No chain, journal, CID or tensor digest: what keeping every checkpoint
  durably costs training at least, on the same cores, so that ledger's cost
  can be split into what any such tool pays and what is ledger's own;
- ``plain-mlflow-env`` and ``mlflow``: the plain loop and the loop with MLflow
  (``mlflow.log_metrics`` per epoch and the checkpoint file logged with
  ``mlflow.log_artifact``, local file store) in MLflow's own virtualenv
  (``bench/.mlflow``, built by ``make bench-overhead``; MLflow is not a project
  dependency).

Every variant writes the same checkpoint file each epoch (the workload is "a
checkpoint every epoch"); the ratios are what tracking adds to that. Each
variant's time is the wall time of its training loop (after its imports).

**Order and pairing.** Each repeat runs the variants in the order plain,
ledger, floor, plain-mlflow-env, mlflow, and the next repeat in the reverse
order (ABBA), so a load that drifts over the bench favours neither side of a
pair. Each ledger run is paired with the plain run of its repeat, which runs
just before or just after it; floor with the same plain run; mlflow with
plain-mlflow-env.

**Ratios** (goal: ledger at most 1.02; MLflow's measured the same way beside it):

- ``*_ratio``: median of the variant's times / median of its baseline's;
- ``*_ratio_best``: the best (least disturbed) run of each, divided;
- ``*_ratio_paired``: the median of the paired ratios (``*_ratios``, one per
  repeat): the headline figure;
- ``*_ratio_paired_ci95``: a 95 % confidence interval for that median, by
  bootstrap over the repeats (10,000 resamples of the paired ratios with
  replacement, fixed seed; percentile interval). With few repeats it is coarse
  (the median of a resample is one of the ratios or a mean of two): a 2 %
  difference is resolved only when the interval excludes 1.02 (or 1.00);
- ``*_delta_ms_paired`` (and ``_ci95``): the same for the paired differences
  in milliseconds, to set beside the in-process figures below.

The ledger runs share one data directory, as a sweep's trials or re-runs of a
script do: the first starts the outbox worker process (an interpreter and its
imports, about 0.2 s of CPU beside training), the later ones find it resident
and attach to it (``LEDGER_OUTBOX_KEEP`` is set to 600 s so that long variants
do not outlast it). The medians are over all repeats; the first run's ratio,
against the first plain run, is printed apart (``first_run_ratio``) as the cost
of a run that starts the worker.

**Where the ledger run's time goes**, in figures that do not depend on wall-time
noise (``hook`` in the JSON: one value per ledger run; printed as medians):

- ``start_ms``: building the ``LedgerRun`` and ``start()`` (the manifest, the
  journal append, attaching to or starting the worker);
- ``checkpoint_overhead_ms``: the sum over the run of ``epoch_end()`` less the
  weights-file write inside it (the write is timed by a ``save=`` wrapper
  around ``training.hook.save_weights``): what the hook adds per checkpoint,
  times the checkpoints;
- ``checkpoint_save_ms``: those weights-file writes, to compare with
  ``plain_save_ms`` (the plain variant's own ``torch.save`` calls, timed the
  same way; ``mlflow_env_save_ms`` and ``mlflow_save_ms`` for MLflow's two);
- ``finish_ms``: ``finish()``: the final model file's write
  (``finish_save_ms``), its append, and the wait for the run's records to be
  confirmed on chain;
- ``in_process_ms``: start + checkpoint overhead + finish, less the final
  write: the time the training process spends in the hook beyond writing files.

``hook_median`` holds their medians over the ledger runs, ``checkpoints`` how
many checkpoints a run takes, ``worker_pids`` the worker processes seen (one
unless the worker ended between runs).

And the CPU used beside training (``cpu`` in the JSON), read from
``/proc/<pid>/stat`` (utime + stime) of the outbox worker (found by its command
line, ``ledger.record.outbox.process``, and its ``LEDGER_HOME``) and of Anvil, before
and after each variant's process. The clock tick is 10 ms, so they are summed
over the runs of a variant and given as per-run averages: ``worker_s`` and
``anvil_s`` per variant (a resident worker polls the journal during the plain
runs too), the ledger runs' without the first (``ledger_resident``, which
attach to a resident worker) and the first apart (``ledger_first``, which
starts it), and ``*_finish_s``: the part of the ledger runs' figure spent while
``finish()`` waits (read by the training process itself around ``finish()``;
the rest competed with training for the two cores).

``ledger_accounted_ms`` adds those parts up per ledger run: the time in the
hook beyond writes, the ledger run's writes less the plain run's, and the
worker's and Anvil's CPU outside ``finish()`` (as if each CPU millisecond taken
beside the two-thread training loop delayed it by one); ``ledger_ratio_accounted``
is 1 + that over plain's median time: an estimate, free of wall-time noise, to
set beside the measured ``ledger_delta_ms_paired`` and ``ledger_ratio_paired``.

``all_cpu_seconds`` is the CPU time of each variant's own process over its
timed span (all its threads; ``time.process_time``), and
``*_cpu_ratio_paired`` (with ``_ci95``) the median of its paired ratios: the
training process's own work, without the waits and without the worker's and
Anvil's CPU (those are above). It is no steadier than wall time: the training
threads spin while they wait for each other, so a slow run also burns more CPU.

**Sizes.** ``--samples`` takes a comma list of data set sizes (default
``DEFAULT_SAMPLES``: 8,192 and 32,768); every size is a bench of its own (its
own data directory, so its own first run starts a worker) on one Anvil. 8,192
samples give about 0.1 s per epoch on 2 cores (a checkpoint every 0.1 s: a
stress case, where the checkpoint writes alone are 1 % of the run); 32,768
about 0.25 s. The fixed cost of a run (its start and its end, about 25 ms) and
the worker's few milliseconds of CPU per checkpoint weigh less as epochs grow.
The goal is read at both; the bench prints, per size, whether the interval of
the paired ratio lies below it. ``--repeats`` must be 2 or more.

**Threads.** By default torch trains on one thread per core, so on 2 cores
every millisecond of CPU the worker and Anvil use is taken from training.
``--threads 1`` trains every variant on one thread (``torch.set_num_threads``,
``torch_threads`` in the JSON), leaving a core to them, as on a machine with
more cores than training threads: what is left is the time spent inside the
hook. (One thread trains slower; pick ``--samples`` for the epoch length.)

**Output.** Per size: every run's time, the ratios and intervals, and where the
time goes; then a summary table of all sizes; then, as the last line, one JSON
object. Its top level holds the first size's figures under the keys of
earlier versions (``seconds``, ``ledger_ratio_paired``, ``mlflow_ratio``, ...)
and the new ones; ``by_samples`` holds every size's figures (the same keys)
under its size as a string; ``sizes`` lists the sizes, ``load_average`` is the
whole bench's (before, after) and each size has its own.

Run: ``make bench-overhead`` (``BENCH_ARGS="--epochs 20 --repeats 9 --samples 32768"``)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_PYTHON = ROOT / "bench" / ".mlflow" / "bin" / "python"
GOAL = 1.02
DEFAULT_SAMPLES = "8192,32768"  # the --samples default: a comma list
RESAMPLES = 10_000  # bootstrap resamples for the confidence intervals
SEED = 20_240_601  # the bootstrap's fixed seed: the same figures give the same interval
ORDER = ["plain", "ledger", "floor", "plain-mlflow-env", "mlflow"]  # reversed every other repeat
PAIRS = {"ledger": "plain", "floor": "plain", "mlflow": "plain-mlflow-env"}
THREADS_ENV = "BENCH_TORCH_THREADS"  # --threads, passed to each variant's process
FLOOR_NICE = 10  # the floor's helper runs at the outbox worker's priority
KEEP = "600"  # LEDGER_OUTBOX_KEEP: the worker stays resident between the ledger runs
TICK = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these


def train(
    epochs: int, on_epoch: object = None, on_start: object = None, samples: int = 8_192
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


# -- CPU of the processes beside training ---------------------------------------------


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(start time, utime + stime) of a process, in clock ticks; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces or parens
    return int(fields[19]), int(fields[11]) + int(fields[12])


def worker_pids(home: Path) -> list[int]:
    """The outbox worker processes of the data directory ``home``."""
    marker = f"LEDGER_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if b"ledger.record.outbox.process" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            found.append(int(entry))
    return found


Snapshot = dict[str, dict[tuple[int, int], int]]


def snapshot(home: Path, anvil_pid: int | None) -> Snapshot:
    """The CPU ticks so far of the worker(s) and of Anvil, by (pid, start time)."""
    taken: Snapshot = {"worker": {}, "anvil": {}}
    for kind, pids in (("worker", worker_pids(home)), ("anvil", [anvil_pid] if anvil_pid else [])):
        for pid in pids:
            ticks = cpu_ticks(pid)
            if ticks is not None:
                taken[kind][(pid, ticks[0])] = ticks[1]
    return taken


def cpu_between(before: Snapshot, after: Snapshot, kind: str) -> float:
    """CPU seconds a kind of process used between two snapshots (a process born
    in between counts from zero; one that ended in between is not seen)."""
    return sum(t - before[kind].get(key, 0) for key, t in after[kind].items()) / TICK


# -- the floor: the least a durable record of each checkpoint costs --------------------


def floor_helper(folder: Path) -> None:
    """The ``floor`` variant's helper process: for each path read from stdin, read
    the file, SHA-256 it, and keep a copy named by the digest (written to a
    temporary file, fsynced, renamed, the folder fsynced); ``kept`` once stdin
    closes. No chain, journal, CID, tensor digest or metrics document: a floor
    under any tool that keeps every checkpoint durably, beside the same training."""
    import hashlib

    os.nice(FLOOR_NICE)
    folder.mkdir(parents=True, exist_ok=True)
    print("ready", flush=True)
    for line in sys.stdin:
        data = Path(line.rstrip("\n")).read_bytes()
        target = folder / hashlib.sha256(data).hexdigest()
        tmp = folder / f".incoming-{target.name}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    print("kept", flush=True)


# -- one variant, in its own process -----------------------------------------------------


def variant(name: str, epochs: int, out: Path, samples: int, anvil_pid: int | None) -> dict:
    """Run one variant in this process; returns its wall time in seconds and the
    in-process figures (milliseconds)."""
    import functools

    import torch  # imported before timing, as in every variant

    if threads := int(os.environ.get(THREADS_ENV, "0")):
        torch.set_num_threads(threads)

    run_train = functools.partial(train, samples=samples)
    saves: list[float] = []  # seconds of each weights-file write, in order

    def timed(write: Callable[[], None]) -> None:
        t = time.perf_counter()
        write()
        saves.append(time.perf_counter() - t)

    def measured(t0: float, c0: float) -> dict[str, Any]:
        """The span since (t0, c0), wall and CPU, and the writes in it."""
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "save_ms": 1e3 * sum(saves),
            "saves": len(saves),
        }

    if name.startswith("plain"):

        def save(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
            timed(lambda: torch.save(model.state_dict(), out / f"step-{epoch:06d}.pt"))

        t0, c0 = time.perf_counter(), time.process_time()
        run_train(epochs, save)
        return measured(t0, c0)
    if name == "floor":
        # the helper starts before the timed span, as a resident worker would be running
        helper = subprocess.Popen(
            [sys.executable, __file__, "--floor-helper", str(out / "kept")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        to_helper, from_helper = helper.stdin, helper.stdout
        assert to_helper is not None and from_helper is not None
        if from_helper.readline() != "ready\n":
            raise SystemExit("the floor helper did not start")

        def hand_over(path: Path) -> None:
            to_helper.write(f"{path}\n")
            to_helper.flush()

        def keep(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
            path = out / f"step-{epoch:06d}.pt"
            timed(lambda: torch.save(model.state_dict(), path))
            hand_over(path)

        models: list[torch.nn.Module] = []
        t0, c0 = time.perf_counter(), time.process_time()
        run_train(epochs, keep, models.append)
        # the run's end, as ledger's finish(): the final model file, then wait for all
        final = out / "model.pt"
        timed(lambda: torch.save(models[0].state_dict(), final))
        hand_over(final)
        to_helper.close()
        if from_helper.readline() != "kept\n" or helper.wait() != 0:
            raise SystemExit("the floor helper failed")
        return measured(t0, c0)
    if name == "mlflow":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the issue asks for the file store
        import mlflow

        mlflow.set_tracking_uri((out / "mlruns").as_uri())
        t0, c0 = time.perf_counter(), time.process_time()
        with mlflow.start_run():
            mlflow.log_params({"epochs": epochs, "lr": 1e-3})

            def log(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
                mlflow.log_metrics(metrics, step=epoch)
                path = out / f"step-{epoch:06d}.pt"
                timed(lambda: torch.save(model.state_dict(), path))
                mlflow.log_artifact(str(path))

            run_train(epochs, log)
        return measured(t0, c0)
    if name == "ledger":
        from ledger.training.hook import LedgerRun, save_weights

        def save(state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
            timed(lambda: save_weights(state_dict, path))

        model_out = out / "model.pt"
        spans: dict[str, float] = {"start": 0.0, "epoch_end": 0.0, "finish": 0.0}
        holder: dict[str, Any] = {}
        t0, c0 = time.perf_counter(), time.process_time()

        def start(model: torch.nn.Module) -> None:
            t = time.perf_counter()
            run = holder["run"] = LedgerRun(
                model, name="overhead", config={"epochs": epochs}, out=model_out, save=save
            )
            run.start()
            spans["start"] = time.perf_counter() - t

        def commit(epoch: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
            t = time.perf_counter()
            holder["run"].epoch_end(epoch, metrics)
            spans["epoch_end"] += time.perf_counter() - t

        run_train(epochs, commit, start)
        run = holder["run"]
        worker = run.outbox.start_worker().pid  # running already: this only asks its pid
        # two reads of /proc/<pid>/stat (some 50 us) inside the timed span
        before = [cpu_ticks(p) if p else None for p in (worker, anvil_pid)]
        t = time.perf_counter()
        run.finish()
        spans["finish"] = time.perf_counter() - t
        after = [cpu_ticks(p) if p else None for p in (worker, anvil_pid)]
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        final = run.final
        if final is None or final.state != "confirmed":
            raise SystemExit(f"the final record is not confirmed: {final}")
        finish_cpu = [
            (a[1] - b[1]) / TICK if a and b and a[0] == b[0] else None
            for b, a in zip(before, after, strict=True)
        ]
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "save_ms": 1e3 * sum(saves[:-1]),  # the checkpoints' writes (epoch_end)
            "saves": len(saves) - 1,
            "finish_save_ms": 1e3 * saves[-1],  # the final model file (finish)
            "start_ms": 1e3 * spans["start"],
            "epoch_end_ms": 1e3 * spans["epoch_end"],
            "finish_ms": 1e3 * spans["finish"],
            "worker_pid": worker,
            "worker_finish_s": finish_cpu[0],
            "anvil_finish_s": finish_cpu[1],
        }
    raise SystemExit(f"unknown variant {name!r}")


def spawn(
    python: Path | str,
    name: str,
    args: argparse.Namespace,
    samples: int,
    home: Path,
    env: dict[str, str],
    anvil_pid: int | None,
) -> dict:
    """Run a variant in a fresh process; its figures, and the CPU the worker and
    Anvil used meanwhile."""
    command = [str(python), __file__, "--variant", name, "--epochs", str(args.epochs)]
    if args.threads:
        env = {**env, THREADS_ENV: str(args.threads)}
    command += ["--samples", str(samples), "--anvil-pid", str(anvil_pid or 0)]
    with tempfile.TemporaryDirectory(prefix=f"overhead-{name}-") as out:
        before = snapshot(home, anvil_pid)
        done = subprocess.run(
            [*command, "--out", out],
            env={**env, "LEDGER_HOME": str(home), "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=False,
        )
        after = snapshot(home, anvil_pid)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{done.stderr}")
    figures: dict = json.loads(done.stdout.strip().splitlines()[-1])
    figures["worker_s"] = cpu_between(before, after, "worker")
    figures["anvil_s"] = cpu_between(before, after, "anvil")
    return figures


# -- statistics --------------------------------------------------------------------------


def median_ci(values: Sequence[float], level: float = 0.95) -> list[float]:
    """Bootstrap percentile interval for the median of ``values``."""
    rng = random.Random(SEED)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(RESAMPLES))
    low = int((1 - level) / 2 * RESAMPLES)
    return [medians[low], medians[RESAMPLES - 1 - low]]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def measure(
    samples: int,
    args: argparse.Namespace,
    variants: list[str],
    home: Path,
    env: dict[str, str],
    anvil_pid: int | None,
) -> dict[str, Any]:
    """The bench for one data set size: its repeats, then its figures."""
    load_before = os.getloadavg()[0]
    subprocess.run(
        [sys.executable, "-m", "ledger", "deploy"],
        env={**env, "LEDGER_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for name in order:
                python = MLFLOW_PYTHON if "mlflow" in name else sys.executable
                runs[name].append(spawn(python, name, args, samples, home, env, anvil_pid))
    finally:
        # the resident worker steps aside now, not minutes after the chain is gone
        subprocess.run(
            [sys.executable, "-m", "ledger", "sync"],
            env={**env, "LEDGER_HOME": str(home)},
            check=False,
            capture_output=True,
        )
    return figures_of(samples, args, runs, [load_before, os.getloadavg()[0]])


def figures_of(
    samples: int, args: argparse.Namespace, runs: dict[str, list[dict]], load: list[float]
) -> dict[str, Any]:
    times = {k: [r["seconds"] for r in v] for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    figures: dict[str, Any] = {
        "samples": samples,
        "load_average": load,
        "seconds": med,
        "all_seconds": times,
        "all_cpu_seconds": {k: [r["cpu_seconds"] for r in v] for k, v in runs.items()},
        "first_run_ratio": times["ledger"][0] / times["plain"][0],
        "goal": GOAL,
    }
    for name, base in PAIRS.items():
        if name not in times:
            continue
        ratios = [a / b for a, b in zip(times[name], times[base], strict=True)]
        deltas = [1e3 * (a - b) for a, b in zip(times[name], times[base], strict=True)]
        figures[f"{name}_ratio"] = med[name] / med[base]
        figures[f"{name}_ratio_best"] = best[name] / best[base]
        figures[f"{name}_ratio_paired"] = statistics.median(ratios)
        figures[f"{name}_ratio_paired_ci95"] = median_ci(ratios)
        figures[f"{name}_ratios"] = ratios
        figures[f"{name}_delta_ms_paired"] = statistics.median(deltas)
        figures[f"{name}_delta_ms_paired_ci95"] = median_ci(deltas)
        cpu_ratios = [
            a["cpu_seconds"] / b["cpu_seconds"] for a, b in zip(runs[name], runs[base], strict=True)
        ]
        figures[f"{name}_cpu_ratio_paired"] = statistics.median(cpu_ratios)
        figures[f"{name}_cpu_ratio_paired_ci95"] = median_ci(cpu_ratios)

    ledger = runs["ledger"]
    hook: dict[str, list[float]] = {
        "start_ms": [r["start_ms"] for r in ledger],
        "checkpoint_overhead_ms": [r["epoch_end_ms"] - r["save_ms"] for r in ledger],
        "checkpoint_save_ms": [r["save_ms"] for r in ledger],
        "finish_ms": [r["finish_ms"] for r in ledger],
        "finish_save_ms": [r["finish_save_ms"] for r in ledger],
        "plain_save_ms": [r["save_ms"] for r in runs["plain"]],
    }
    hook["in_process_ms"] = [
        r["start_ms"] + r["epoch_end_ms"] - r["save_ms"] + r["finish_ms"] - r["finish_save_ms"]
        for r in ledger
    ]
    if "mlflow" in runs:
        hook["mlflow_env_save_ms"] = [r["save_ms"] for r in runs["plain-mlflow-env"]]
        hook["mlflow_save_ms"] = [r["save_ms"] for r in runs["mlflow"]]
    figures["hook"] = hook
    figures["hook_median"] = {k: statistics.median(v) for k, v in hook.items()}
    figures["checkpoints"] = ledger[0]["saves"]

    groups = {k: v for k, v in runs.items() if k != "ledger"}
    groups["ledger_resident"] = ledger[1:]
    groups["ledger_first"] = ledger[:1]
    cpu: dict[str, Any] = {
        "tick_s": 1 / TICK,
        "worker_s": {k: mean([r["worker_s"] for r in v]) for k, v in groups.items()},
        "anvil_s": {k: mean([r["anvil_s"] for r in v]) for k, v in groups.items()},
        "worker_s_total": {k: sum(r["worker_s"] for r in v) for k, v in groups.items()},
        "anvil_s_total": {k: sum(r["anvil_s"] for r in v) for k, v in groups.items()},
        "all_worker_s": {k: [r["worker_s"] for r in v] for k, v in runs.items()},
        "all_anvil_s": {k: [r["anvil_s"] for r in v] for k, v in runs.items()},
    }
    for kind in ("worker", "anvil"):
        during = [r[f"{kind}_finish_s"] for r in ledger[1:] if r[f"{kind}_finish_s"] is not None]
        cpu[f"ledger_resident_{kind}_finish_s"] = mean(during)
    figures["cpu"] = cpu
    # the ledger run's extra time as the parts above add it up, over plain's median
    beside = sum(
        cpu[f"{kind}_s"]["ledger_resident"] - cpu[f"ledger_resident_{kind}_finish_s"]
        for kind in ("worker", "anvil")
    )
    median = figures["hook_median"]
    accounted = (
        median["in_process_ms"]
        + median["checkpoint_save_ms"]
        + median["finish_save_ms"]
        - median["plain_save_ms"]
        + 1e3 * beside
    )
    figures["ledger_accounted_ms"] = accounted
    figures["ledger_ratio_accounted"] = 1 + accounted / (1e3 * med["plain"])
    figures["worker_pids"] = sorted({r["worker_pid"] for r in ledger if r["worker_pid"]})
    return figures


# -- printing ------------------------------------------------------------------------------


def ci_text(interval: Sequence[float], digits: int = 3) -> str:
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def paired_text(figures: dict[str, Any], name: str) -> str:
    """A variant's paired ratio and paired difference, each with its interval."""
    return (
        f"paired ratio {figures[f'{name}_ratio_paired']:.3f}, 95 % CI "
        f"{ci_text(figures[f'{name}_ratio_paired_ci95'])}; paired difference "
        f"{figures[f'{name}_delta_ms_paired']:.0f} ms, 95 % CI "
        f"{ci_text(figures[f'{name}_delta_ms_paired_ci95'], 0)} ms"
    )


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    times, med = figures["all_seconds"], figures["seconds"]
    load = figures["load_average"]
    print(
        f"\n== {figures['samples']} samples, {args.epochs} epochs, {args.repeats} repeats, "
        f"torch threads {args.threads or 'default'} "
        f"(load average {load[0]:.2f} -> {load[1]:.2f})"
    )
    for name, values in times.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:>16}: {shown} s (median {med[name]:.2f})")
    print(
        f"plain {med['plain']:.2f} s, ledger {med['ledger']:.2f} s: "
        f"ratio {figures['ledger_ratio']:.3f} (goal <= {GOAL})"
    )
    print(
        f"best ledger run / best plain run: {figures['ledger_ratio_best']:.3f}; "
        f"median of paired ratios: {figures['ledger_ratio_paired']:.3f}"
    )
    print(f"ledger {paired_text(figures, 'ledger')}")
    low, high = figures["ledger_ratio_paired_ci95"]
    verdict = "met" if high <= GOAL else "missed" if low > GOAL else "not resolved"
    figures["goal_verdict"] = verdict
    print(f"goal (ledger <= {GOAL}): {verdict} (the interval {ci_text((low, high))})")
    if "floor_ratio_paired" in figures:
        print(
            "floor (each file SHA-256'd and copied durably by a helper; no chain) "
            + paired_text(figures, "floor")
        )
    print(
        "training process CPU, ledger / plain (median of pairs): "
        f"{figures['ledger_cpu_ratio_paired']:.3f} "
        f"{ci_text(figures['ledger_cpu_ratio_paired_ci95'])}"
    )
    print(
        f"first ledger run (starts the worker) / first plain run: {figures['first_run_ratio']:.3f}"
    )
    if "mlflow" in med:
        print(
            f"plain {med['plain-mlflow-env']:.2f} s, mlflow {med['mlflow']:.2f} s: "
            f"ratio {figures['mlflow_ratio']:.3f} (best runs: {figures['mlflow_ratio_best']:.3f}; "
            f"paired: {figures['mlflow_ratio_paired']:.3f})"
        )
        print(f"mlflow {paired_text(figures, 'mlflow')}")
        print(
            "training process CPU, mlflow / plain (median of pairs): "
            f"{figures['mlflow_cpu_ratio_paired']:.3f} "
            f"{ci_text(figures['mlflow_cpu_ratio_paired_ci95'])}"
        )
    else:
        print("mlflow: not measured (run `make bench-overhead` to build bench/.mlflow)")
    hook, cpu = figures["hook_median"], figures["cpu"]
    print(
        "in the training process, per ledger run (medians): "
        f"start {hook['start_ms']:.1f} ms, epoch_end less the write "
        f"{hook['checkpoint_overhead_ms']:.1f} ms ({figures['checkpoints']} checkpoints), "
        f"finish {hook['finish_ms']:.1f} ms (its write {hook['finish_save_ms']:.1f} ms): "
        f"{hook['in_process_ms']:.1f} ms beyond writes"
    )
    print(
        f"checkpoint writes per run (medians): ledger {hook['checkpoint_save_ms']:.1f} ms, "
        f"plain torch.save {hook['plain_save_ms']:.1f} ms"
    )
    w, a = cpu["worker_s"], cpu["anvil_s"]
    print(
        "CPU beside training, per run (averages): worker "
        f"{1e3 * w['ledger_resident']:.0f} ms per ledger run after the first "
        f"({1e3 * cpu['ledger_resident_worker_finish_s']:.0f} ms of it in finish), "
        f"{1e3 * w['ledger_first']:.0f} ms in the first, {1e3 * w['plain']:.0f} ms per plain run; "
        f"Anvil {1e3 * a['ledger_resident']:.0f} ms per ledger run "
        f"({1e3 * cpu['ledger_resident_anvil_finish_s']:.0f} ms in finish), "
        f"{1e3 * a['plain']:.0f} ms per plain run"
    )
    print(
        f"accounted: {figures['ledger_accounted_ms']:.0f} ms per ledger run (in the hook, the "
        "extra writes, and the CPU beside training outside finish), ratio "
        f"{figures['ledger_ratio_accounted']:.3f}; "
        f"measured: {figures['ledger_delta_ms_paired']:.0f} ms"
    )


def summary(results: list[dict[str, Any]]) -> None:
    print("\nsummary (ratios: median of paired ratios [95 % CI]; the rest: ms per run)")
    print(
        f"{'samples':>8} {'plain s':>7} {'ledger/plain':>22} {'floor/plain':>22} "
        f"{'mlflow/plain':>22} {'cpu':>5} "
        f"{'delta':>6} {'acc.':>5} {'in-hook':>7} {'writes':>6} {'plain':>5} {'worker':>6} "
        f"{'anvil':>5}"
    )
    for f in results:
        ledger = f"{f['ledger_ratio_paired']:.3f} {ci_text(f['ledger_ratio_paired_ci95'])}"
        mlflow = (
            f"{f['mlflow_ratio_paired']:.3f} {ci_text(f['mlflow_ratio_paired_ci95'])}"
            if "mlflow_ratio_paired" in f
            else "-"
        )
        floor = (
            f"{f['floor_ratio_paired']:.3f} {ci_text(f['floor_ratio_paired_ci95'])}"
            if "floor_ratio_paired" in f
            else "-"
        )
        hook, cpu = f["hook_median"], f["cpu"]
        print(
            f"{f['samples']:>8} {f['seconds']['plain']:>7.2f} {ledger:>22} {floor:>22} "
            f"{mlflow:>22} "
            f"{f['ledger_cpu_ratio_paired']:>5.3f} {f['ledger_delta_ms_paired']:>6.0f} "
            f"{f['ledger_accounted_ms']:>5.0f} {hook['in_process_ms']:>7.1f} "
            f"{hook['checkpoint_save_ms'] + hook['finish_save_ms']:>6.1f} "
            f"{hook['plain_save_ms']:>5.1f} {1e3 * cpu['worker_s']['ledger_resident']:>6.0f} "
            f"{1e3 * cpu['anvil_s']['ledger_resident']:>5.0f}"
        )
    print(
        "cpu: the training process's CPU, ledger / plain (median of pairs); delta: ledger - "
        "plain wall time (median of pairs); acc.: the sum of the parts (in-hook + writes - "
        "plain + worker and Anvil CPU outside finish); in-hook: start + epoch_end + finish "
        "less the writes (medians); writes: the ledger run's weights files; plain: the plain "
        "run's torch.save; worker, anvil: CPU per ledger run after the first"
    )


def sizes(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of sizes")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of every variant (default: torch's, one per core); "
        "1 on 2 cores leaves a core to the worker, as on a machine with cores to spare",
    )
    parser.add_argument(
        "--samples",
        type=sizes,
        default=sizes(DEFAULT_SAMPLES),
        help=f"data set sizes, a comma list (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--anvil-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-helper", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_helper:
        floor_helper(args.floor_helper)
        return
    if args.repeats < 2 and not args.variant:
        parser.error("--repeats must be 2 or more (the first ledger run is reported apart)")
    if args.variant:
        print(
            json.dumps(
                variant(
                    args.variant, args.epochs, args.out, args.samples[0], args.anvil_pid or None
                )
            )
        )
        return

    from ledger.chain.anvil import AnvilProcess, free_port

    load_before = os.getloadavg()[0]  # beside the figures: other work on the cores skews them
    variants = ORDER if MLFLOW_PYTHON.exists() else ORDER[:3]
    results = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-overhead-") as tmp:
        anvil = AnvilProcess(Path(tmp) / "chain", port=free_port())
        anvil.start(persist=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env["LEDGER_RPC_URL"] = anvil.rpc_url
        env["LEDGER_OUTBOX_KEEP"] = KEEP
        try:
            for samples in args.samples:
                home = Path(tmp) / f"ledger-{samples}"
                figures = measure(samples, args, variants, home, env, anvil.pid())
                report(figures, args)
                results.append(figures)
        finally:
            anvil.stop()
    summary(results)
    everything: dict[str, Any] = {**results[0]}
    everything.update(
        {
            "epochs": args.epochs,
            "repeats": args.repeats,
            "torch_threads": args.threads or None,
            "sizes": args.samples,
            "load_average": [load_before, os.getloadavg()[0]],
            "resamples": RESAMPLES,
            "by_samples": {str(f["samples"]): f for f in results},
        }
    )
    print(json.dumps(everything, sort_keys=True))


if __name__ == "__main__":
    main()

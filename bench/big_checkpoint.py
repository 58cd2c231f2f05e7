"""What big checkpoints cost: plain ``torch.save`` against the ledger hook and MLflow, per GiB.

A model holding a state dict of ``--sizes`` GiB (default 1; float32 tensors of
64 MiB) is "trained" for 4 epochs: each epoch changes one tensor slightly and
writes a checkpoint; the run's end writes the final model file. Variants, each
in a fresh process, one after the other:

- ``plain``: ``torch.save`` of each checkpoint and of the final file;
- ``copy``: the same inside ``LedgerRun`` with ``LEDGER_STORE_WEIGHTS=copy``
  (the default: the store keeps a copy of every weights file);
- ``reference``: the same with ``LEDGER_STORE_WEIGHTS=reference`` (the store
  records where each file is instead);
- ``mlflow``: ``torch.save`` then ``mlflow.log_artifact`` of each checkpoint
  and of the final file (local file store), in MLflow's own virtualenv
  ``bench/.mlflow`` (``make bench-big`` builds it; left out when absent).

Each variant first runs once, unmeasured, on a 1/16 GiB state dict (1 MiB with
``--small``): imports and the page cache warm. Then ``model_signing sign key`` (sigstore's model
transparency, in ``bench/.model_signing``) signs plain's final file, with
sha256 and with blake3: the cost of one file identity, with no chain or store.

Figures, each divided by the GiB of weights written (4 checkpoints + the final
file, ``5 * gib``):

- ``process_cpu_s_per_gib``: CPU seconds of the variant's own processes: the
  training process, the outbox worker (it ends with its training process here,
  ``LEDGER_OUTBOX_KEEP=0``, and is reaped by this process, a child subreaper)
  and Anvil. Other engineers' work does not count in it (it does slow it:
  caches, frequency);
- ``save_cpu_s``: the part of it inside ``torch.save`` calls, on their calling
  thread, and ``beside_save_cpu_s_per_gib`` the rest;
  ``extra_process_cpu_s_per_gib``, the headline, is the rest beyond plain's.
  Every variant makes the same ``torch.save`` calls, whose kernel time (the
  page cache taking the writes) varies between identical runs by more than
  ledger's whole cost, so they are left out of the comparison;
- ``cpu_s_per_gib``: whole-machine CPU seconds (``/proc/stat``), which does
  count other work;
- ``store_bytes_per_gib``: bytes the run added to the data directory's store
  (MLflow: to its ``mlruns``);
- ``exit_wait_s_per_gib``: the time from the loop's end to the process's
  readiness to exit, divided by the final file's GiB (``extra_...`` is beyond
  plain's write of the same file). For the hook it is split: ``backlog_s``,
  waiting for the checkpoints still being stored when the loop ends (this loop
  writes them back to back, with no training between), then
  ``final_wait_s_per_gib``: writing, hashing and storing the final file and
  waiting for its record on chain.

Run it on a quiet machine (the load average is printed beside the figures).
The page cache is not dropped (that needs root): the checkpoints are read back
from memory, as they are right after training writes them. Ends with one JSON
line.

``--small`` measures small runs instead: a 1 MiB state dict in runs of 10 and
of 210 checkpoints, five times per variant; the CPU per checkpoint is the slope
between the two lengths, the CPU per run what is left at none (both outside
``torch.save``), then :func:`breakdown` times, on this thread, the pieces of
storing one such checkpoint.

    make bench-big                              # 1 GiB
    make bench-big BENCH_ARGS="--sizes 0.25"    # quicker
    make bench-big BENCH_ARGS=--big             # 4 GiB too
    make bench-big BENCH_ARGS=--small           # CPU per run and per checkpoint
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("plain", "copy", "reference", "mlflow")
LEDGER_VARIANTS = ("copy", "reference")
MLFLOW_PYTHON = Path(__file__).resolve().parent / ".mlflow" / "bin" / "python"
SIGNING_PYTHON = Path(__file__).resolve().parent / ".model_signing" / "bin" / "python"
PR_SET_CHILD_SUBREAPER = 36
EPOCHS = 4
TENSOR_MIB = 64
SMALL_MIB = 1  # --small: a state dict of this many MiB...
SMALL_EPOCHS = (10, 210)  # ...in runs of this many checkpoints...
SMALL_REPEATS = 5  # ...this many times


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (every core)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of every descendant this process has reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def become_subreaper() -> None:
    """Orphaned descendants (the outbox worker, once its training process is gone)
    become this process's children, so their CPU counts when they are reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_all_but(keep: int, timeout: float = 300.0) -> None:
    """Wait for every child but ``keep`` (Anvil) to end, reaping each."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        children = set()
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                children |= {int(x) for x in (task / "children").read_text().split()}
        if children <= {keep}:
            return
        time.sleep(0.05)
    raise SystemExit("a descendant (the outbox worker?) did not end")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def build_model(gib: float) -> Any:
    import torch

    torch.manual_seed(0)
    tensor_mib = min(TENSOR_MIB, gib * 1024)
    tensors = max(1, round(gib * 1024 / tensor_mib))
    model = torch.nn.Module()
    for i in range(tensors):
        weight = torch.nn.Parameter(torch.rand(int(tensor_mib * (1 << 18))), requires_grad=False)
        model.register_parameter(f"layer{i}", weight)
    return model, tensors


def child(variant: str, gib: float, out: Path, epochs: int = EPOCHS) -> dict[str, Any]:
    """One variant, in this process: the loop, then the run's end."""
    import torch

    # torch.save's own CPU, on the thread that calls it: plain and every variant make
    # the same calls, whose kernel time (the page cache taking 5-20 GiB of writes)
    # varies from run to run by more than ledger's whole cost; see measure()
    saving = [0.0]
    real_save = torch.save

    def timed_save(*args: Any, **kwargs: Any) -> None:
        start = time.thread_time()
        try:
            real_save(*args, **kwargs)
        finally:
            saving[0] += time.thread_time() - start

    torch.save = timed_save
    figures = _loop(variant, gib, out, epochs, torch)
    return {**figures, "save_cpu_s": saving[0]}


def _loop(variant: str, gib: float, out: Path, epochs: int, torch: Any) -> dict[str, Any]:
    model, tensors = build_model(gib)

    def train(epoch: int) -> None:
        with torch.no_grad():
            getattr(model, f"layer{epoch % tensors}")[:1024] += 1.0

    if variant == "plain":
        for epoch in range(epochs):
            train(epoch)
            torch.save(model.state_dict(), out / f"step-{epoch:06d}.pt")
        t = time.perf_counter()
        torch.save(model.state_dict(), out / "model.pt")
        return {"exit_wait_s": time.perf_counter() - t}

    if variant == "mlflow":  # in MLflow's own virtualenv
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # as the overhead bench: the file store
        import mlflow

        mlflow.set_tracking_uri((out / "mlruns").as_uri())
        with mlflow.start_run():
            mlflow.log_params({"gib": gib})
            for epoch in range(epochs):
                train(epoch)
                path = out / f"step-{epoch:06d}.pt"
                torch.save(model.state_dict(), path)
                mlflow.log_metrics({"epoch": float(epoch)}, step=epoch)
                mlflow.log_artifact(str(path), artifact_path="checkpoints")
            t = time.perf_counter()
            torch.save(model.state_dict(), out / "model.pt")
            mlflow.log_artifact(str(out / "model.pt"))
        return {"exit_wait_s": time.perf_counter() - t}

    from ledger.training.hook import LedgerRun

    run = LedgerRun(
        model, name="big-checkpoint", config={"gib": gib}, out=out / "model.pt", checkpoint_dir=out
    )
    run.start()
    for epoch in range(epochs):
        train(epoch)
        run.epoch_end(epoch, {"epoch": float(epoch)})
    t = time.perf_counter()
    run.flush()  # the checkpoints still being stored when the loop ends
    drained = time.perf_counter()
    run.finish()
    end = time.perf_counter()
    if run.final is None or run.final.state != "confirmed":
        raise SystemExit(f"the final record is not confirmed: {run.final}")
    return {"exit_wait_s": end - t, "backlog_s": drained - t, "final_s": end - drained}


def measure(
    variant: str,
    gib: float,
    tmp: Path,
    env: dict[str, str],
    anvil_pid: int,
    epochs: int = EPOCHS,
    tag: str = "",
) -> dict[str, Any]:
    home = tmp / f"home-{variant}-{gib:g}{tag}"
    out = tmp / f"out-{variant}-{gib:g}{tag}"
    out.mkdir()
    # the worker ends with its training process, so its CPU is counted when reaped
    env = {**env, "LEDGER_HOME": str(home), "LEDGER_STORE_WEIGHTS": variant}
    env["LEDGER_OUTBOX_KEEP"] = "0"
    # a loaded machine starves the worker (nice +10): wait for it rather than fail
    env["LEDGER_FLUSH_TIMEOUT"] = "900"
    if variant in LEDGER_VARIANTS:
        subprocess.run([sys.executable, "-m", "ledger", "deploy"], env=env, check=True,
                       capture_output=True)  # fmt: skip
    python = str(MLFLOW_PYTHON) if variant == "mlflow" else sys.executable
    store_before = folder_bytes(home / "store")
    cpu_before, wall_before = machine_cpu(), time.perf_counter()
    own_before, anvil_before = children_cpu(), process_cpu(anvil_pid)
    done = subprocess.run(
        [python, __file__, "--variant", variant, "--gib", str(gib), "--out", str(out),
         "--epochs", str(epochs)],
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    reap_all_but(anvil_pid)
    own = children_cpu() - own_before
    anvil = process_cpu(anvil_pid) - anvil_before
    cpu, wall = machine_cpu() - cpu_before, time.perf_counter() - wall_before
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if variant in LEDGER_VARIANTS:
        subprocess.run([sys.executable, "-m", "ledger", "sync"], env=env, capture_output=True)
    stored = folder_bytes(home / "store") if variant != "mlflow" else folder_bytes(out / "mlruns")
    written = (epochs + 1) * gib
    return {
        "variant": variant,
        "gib": gib,
        "epochs": epochs,
        "out": str(out),
        "cpu_s": cpu,
        "process_cpu_s": own + anvil,
        "save_cpu_s": figures["save_cpu_s"],
        "beside_save_cpu_s": own + anvil - figures["save_cpu_s"],
        "beside_save_cpu_s_per_gib": (own + anvil - figures["save_cpu_s"]) / written,
        "anvil_cpu_s": anvil,
        "wall_s": wall,
        "cpu_s_per_gib": cpu / written,
        "process_cpu_s_per_gib": (own + anvil) / written,
        "store_bytes_per_gib": (stored - store_before) / written / (1 << 30),
        "exit_wait_s": figures["exit_wait_s"],
        "exit_wait_s_per_gib": figures["exit_wait_s"] / gib,
        "backlog_s": figures.get("backlog_s"),
        "final_wait_s_per_gib": figures["final_s"] / gib if "final_s" in figures else None,
    }


def sign_child(algorithm: str, model: Path, key: Path) -> None:
    """``model_signing sign key`` of one file, in model_signing's own virtualenv:
    the CLI's own call, with the hash algorithm made a choice (the CLI hashes with
    sha256; blake3 is what the library offers instead)."""
    import model_signing

    hashing = model_signing.hashing.Config().use_file_serialization(hashing_algorithm=algorithm)
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=key)
    config.set_hashing_config(hashing).sign(model, model.with_suffix(f".{algorithm}.sig"))


def measure_signing(model: Path, gib: float, tmp: Path) -> list[dict[str, Any]]:
    """CPU and wall time of signing the final file with model_signing (sigstore's
    model transparency): the cost of a file identity with no chain and no store."""
    key = tmp / "signing-key.pem"
    if not key.exists():
        make_key = (
            "import sys;from cryptography.hazmat.primitives.asymmetric import ec;"
            "from cryptography.hazmat.primitives import serialization as s;"
            "k=ec.generate_private_key(ec.SECP256R1());"
            "open(sys.argv[1],'wb').write(k.private_bytes(s.Encoding.PEM,"
            "s.PrivateFormat.PKCS8,s.NoEncryption()))"
        )
        subprocess.run([str(SIGNING_PYTHON), "-c", make_key, str(key)], check=True)
    rows = []
    for algorithm in ("sha256", "blake3"):
        own_before, wall_before = children_cpu(), time.perf_counter()
        done = subprocess.run(
            [str(SIGNING_PYTHON), __file__, "--sign", algorithm, "--out", str(model),
             "--key", str(key)],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"model_signing failed:\n{done.stderr[-3000:]}")
        own, wall = children_cpu() - own_before, time.perf_counter() - wall_before
        rows.append(
            {"variant": f"model_signing {algorithm}", "gib": gib, "process_cpu_s": own,
             "process_cpu_s_per_gib": own / gib, "wall_s_per_gib": wall / gib}
        )  # fmt: skip
    return rows


def breakdown(tmp: Path, count: int = 200) -> dict[str, float]:
    """Where the worker's CPU for one small checkpoint goes: ``count`` checkpoints
    of the ``--small`` model, each stored (reference mode) as the worker stores it,
    timed piece by piece on this thread (CPU milliseconds per checkpoint), beside
    the floor: the two sha256 passes the file CID and the tensor root are made of."""
    import hashlib

    import torch

    from ledger.hashing._onepass import hash_and_copy
    from ledger.hashing.tensors import tensor_plan
    from ledger.record.artifacts import store_weights
    from ledger.store import LocalStore

    model, _ = build_model(SMALL_MIB / 1024)
    paths = []
    for i in range(count):
        with torch.no_grad():
            model.layer0[:1] += 1.0
        paths.append(tmp / f"breakdown-{i:04d}.pt")
        torch.save(model.state_dict(), paths[-1])

    def each(work: Any) -> float:
        start = time.thread_time()
        for path in paths:
            work(path)
        return 1000 * (time.thread_time() - start) / count

    def one_pass(path: Path) -> None:
        plan = tensor_plan(path)
        assert plan is not None
        fd = os.open(path, os.O_RDONLY)
        try:
            hash_and_copy(fd, os.fstat(fd).st_size, spans=plan.spans)
        finally:
            os.close(fd)

    def two_sha256(path: Path) -> None:
        data = path.read_bytes()
        hashlib.sha256(data).digest()
        hashlib.sha256(data).digest()

    def three_documents(path: Path) -> None:  # what the store writes beside the weights
        for kind in ("index", "metrics", "reference"):
            docs.put_bytes(f'{{"{kind}": "{path.name}", "pad": "{"x" * 400}"}}'.encode())

    docs = LocalStore(tmp / "breakdown-docs")
    store = LocalStore(tmp / "breakdown-store", weights="reference")
    figures = {
        "two_sha256_ms": each(two_sha256),
        "tensor_plan_ms": each(tensor_plan),
        "one_pass_ms": each(one_pass),
        "three_durable_documents_ms": each(three_documents),
        "store_weights_ms": each(
            lambda path: store_weights(store, "00" * 32, path, {"epoch": 1.0}, 1)
        ),
    }
    for path in paths:
        path.unlink()
    return figures


def per_checkpoint(results: list[dict[str, Any]], few: int, many: int) -> dict[str, Any]:
    """Each variant's CPU per checkpoint (the slope between runs of ``few`` and
    ``many`` checkpoints) and per run (what is left at zero checkpoints), medians
    over the repeats; ``extra_`` is beyond plain's."""
    figures: dict[str, Any] = {}
    for variant in {r["variant"] for r in results}:
        slopes, runs = [], []
        rows = [r for r in results if r["variant"] == variant]
        for a, b in zip(rows[0::2], rows[1::2], strict=True):
            assert (a["epochs"], b["epochs"]) == (few, many)
            slope = (b["beside_save_cpu_s"] - a["beside_save_cpu_s"]) / (many - few)
            slopes.append(slope)
            runs.append(a["beside_save_cpu_s"] - few * slope)
        figures[variant] = {
            "cpu_ms_per_checkpoint": 1000 * statistics.median(slopes),
            "cpu_s_per_run": statistics.median(runs),
            "slopes_ms": [round(1000 * x, 2) for x in slopes],
        }
    for row in figures.values():
        row["extra_cpu_ms_per_checkpoint"] = (
            row["cpu_ms_per_checkpoint"] - figures["plain"]["cpu_ms_per_checkpoint"]
        )
        row["extra_cpu_s_per_run"] = row["cpu_s_per_run"] - figures["plain"]["cpu_s_per_run"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also 4 GiB (needs ~45 GiB of disk)")
    parser.add_argument(
        "--sizes", type=float, nargs="+", metavar="GIB", help="state dict sizes (default 1)"
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help=f"CPU per run and per checkpoint of a small model ({SMALL_MIB} MiB): runs of"
        f" {SMALL_EPOCHS[0]} and {SMALL_EPOCHS[1]} checkpoints, {SMALL_REPEATS} times",
    )
    parser.add_argument("--gib", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--sign", choices=("sha256", "blake3"), help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(child(args.variant, args.gib, args.out, args.epochs)))
        return
    if args.sign:
        sign_child(args.sign, args.out, args.key)
        return

    from ledger.chain.anvil import AnvilProcess, free_port

    mlflow_ready = (MLFLOW_PYTHON.parents[1] / ".installed-stamp").exists()
    signing_ready = (SIGNING_PYTHON.parents[1] / ".installed-stamp").exists()
    variants = [v for v in VARIANTS if v != "mlflow" or mlflow_ready]
    if "mlflow" not in variants:
        print(f"MLflow left out: no {MLFLOW_PYTHON} (make bench-big builds it)", file=sys.stderr)
    if not signing_ready and not args.small:
        print(f"model_signing left out: no {SIGNING_PYTHON} (make bench-big builds it)",
              file=sys.stderr)  # fmt: skip
    become_subreaper()
    load_before = os.getloadavg()[0]
    results: list[dict[str, Any]] = []
    signing: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-big-", dir=os.getcwd()) as name:
        tmp = Path(name)
        anvil = AnvilProcess(tmp / "chain", port=free_port())
        anvil_pid = anvil.start(persist=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env["LEDGER_RPC_URL"] = anvil.rpc_url
        try:
            warm_gib = SMALL_MIB / 1024 if args.small else 1 / 16
            for variant in variants:  # warm: each Python's imports, the page cache
                warm = measure(variant, warm_gib, tmp, env, anvil_pid, 1, "-warm")
                shutil.rmtree(warm["out"])
            if args.small:
                gib = SMALL_MIB / 1024
                for repeat in range(SMALL_REPEATS):
                    for variant in variants:
                        for epochs in SMALL_EPOCHS:
                            tag = f"-{epochs}-{repeat}"
                            results.append(measure(variant, gib, tmp, env, anvil_pid, epochs, tag))
                            shutil.rmtree(results[-1]["out"])
            else:
                for gib in args.sizes or ((1.0, 4.0) if args.big else (1.0,)):
                    for variant in variants:
                        results.append(measure(variant, gib, tmp, env, anvil_pid))
                        out = Path(results[-1]["out"])
                        if variant == "plain" and signing_ready:
                            signing += measure_signing(out / "model.pt", gib, tmp)
                        shutil.rmtree(out)  # disk for the next one
            if args.small:
                pieces = breakdown(tmp)
        finally:
            anvil.stop()
    load = [load_before, os.getloadavg()[0]]
    if args.small:
        figures = per_checkpoint(results, *SMALL_EPOCHS)
        print(f"{'variant':<10} {'CPU ms/checkpoint':>17} {'extra':>7} {'CPU s/run':>9}"
              f" {'extra':>6}  slopes (ms)")  # fmt: skip
        for variant in variants:
            row = figures[variant]
            print(
                f"{variant:<10} {row['cpu_ms_per_checkpoint']:>17.2f}"
                f" {row['extra_cpu_ms_per_checkpoint']:>7.2f} {row['cpu_s_per_run']:>9.2f}"
                f" {row['extra_cpu_s_per_run']:>6.2f}  {row['slopes_ms']}"
            )
        print("where the worker's CPU for one checkpoint goes (reference mode, ms):")
        for name, value in pieces.items():
            print(f"  {name.removesuffix('_ms'):<26} {value:6.2f}")
        print(f"load average before/after: {load[0]:.2f} / {load[1]:.2f}")
        print(json.dumps({"small": figures, "breakdown": pieces, "mib": SMALL_MIB,
                          "epochs": SMALL_EPOCHS, "results": results, "load_average": load},
                         sort_keys=True))  # fmt: skip
        return
    print(f"{'GiB':>4} {'variant':<10} {'proc CPU s/GiB':>14} {'save':>5} {'beside':>6}"
          f" {'extra':>6} {'machine':>8} {'store B/GiB':>11} {'exit s/GiB':>10} {'extra':>6}"
          f" {'backlog s':>9} {'final s/GiB':>11}")  # fmt: skip
    for row in results:
        plain = next(r for r in results if r["gib"] == row["gib"] and r["variant"] == "plain")
        row["extra_cpu_s_per_gib"] = row["cpu_s_per_gib"] - plain["cpu_s_per_gib"]
        # the headline: CPU beyond plain's, outside the torch.save calls both make
        row["extra_process_cpu_s_per_gib"] = (
            row["beside_save_cpu_s_per_gib"] - plain["beside_save_cpu_s_per_gib"]
        )
        row["extra_exit_wait_s_per_gib"] = row["exit_wait_s_per_gib"] - plain["exit_wait_s_per_gib"]
        backlog = "" if row["backlog_s"] is None else f"{row['backlog_s']:.2f}"
        final = "" if row["final_wait_s_per_gib"] is None else f"{row['final_wait_s_per_gib']:.2f}"
        print(
            f"{row['gib']:>4g} {row['variant']:<10} {row['process_cpu_s_per_gib']:>14.2f}"
            f" {row['save_cpu_s'] / (row['epochs'] + 1) / row['gib']:>5.2f}"
            f" {row['beside_save_cpu_s_per_gib']:>6.2f}"
            f" {row['extra_process_cpu_s_per_gib']:>6.2f} {row['cpu_s_per_gib']:>8.2f}"
            f" {row['store_bytes_per_gib']:>11.3g} {row['exit_wait_s_per_gib']:>10.2f}"
            f" {row['extra_exit_wait_s_per_gib']:>6.2f} {backlog:>9} {final:>11}"
        )
    for row in signing:
        print(
            f"{row['gib']:>4g} {row['variant']} of the final file: "
            f"{row['process_cpu_s_per_gib']:.2f} CPU s/GiB, {row['wall_s_per_gib']:.2f} s/GiB"
        )
    print(f"load average before/after: {load[0]:.2f} / {load[1]:.2f} (other work counts in CPU)")
    print(json.dumps({"results": results, "signing": signing, "load_average": load,
                      "epochs": EPOCHS}, sort_keys=True))  # fmt: skip


if __name__ == "__main__":
    main()

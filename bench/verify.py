"""Wall time of ``ledger verify`` against other ways of checking a model file.

Builds a torch state-dict file (1 GiB; ``--size-gib 4`` or ``--big`` for 4 GiB),
records it as a run's final weights on a throw-away local Anvil, then times, in
the same run and on the same file:

* ``ledger verify FILE --json`` — the real CLI, as a subprocess (start-up, the
  file CID on every core, every chain and store check);
* ``model_signing verify key`` — sigstore's model-signing 1.1.1, after
  ``model_signing sign key`` with a fresh P-256 key made by ``openssl``
  (installed apart from the project by ``make bench-verify``, in ``bench/.peers``);
* one pass of ``hashlib.sha256`` over the file, in this process (no start-up);
* coreutils ``sha256sum`` as a subprocess.

Cache state, the same for every command. By default (``--cache warm``) the
file is read once before timing and every figure is a warm-cache figure (the
file in RAM): the comparison is of CPU work, not of the disk. ``--cache cold``
evicts the file's pages (``posix_fadvise(DONTNEED)``, this file only, nothing
else on the machine) before every measured command, so each one reads it from
the disk. Each command runs ``--repeat`` times, interleaved, after one
unmeasured warm-up; ratios use the medians. The load average is printed beside
every round (the machine is shared; a busy machine hurts the parallel
``ledger verify`` more than the one-core baselines), and the CPU seconds
(user + system) of ``ledger verify`` are given too: they depend far less on
the load than wall time does.
Peak RSS of ``ledger verify`` is taken by GNU ``time``. Also measured: ``ledger
--help`` start-up and the engine alone (in process), single-threaded and on
every core.

Goals: ``ledger verify`` at most 0.5 of model_signing's time and at most 0.75
of the single-pass SHA-256 time; ``ledger --help`` under 0.3 s.

Run: ``make bench-verify`` (or ``.venv/bin/python bench/verify.py [--big]``
once ``bench/.peers`` exists). The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ledger.hashing.cid import default_workers, file_cid  # noqa: E402

GiB = 1024**3
MiB = 1024**2
VENV_BIN = Path(sys.executable).parent
PEERS_BIN = REPO / "bench" / ".peers" / "bin"
GOAL_VS_MODEL_SIGNING = 0.5
GOAL_VS_SHA256 = 0.75
GOAL_HELP_S = 0.3


@dataclass
class Timing:
    name: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_rss_kib: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


def run_measured(
    argv: Sequence[str], env: dict[str, str] | None = None
) -> tuple[float, int, str, float]:
    """Wall time, peak RSS (KiB), stdout and CPU seconds of one subprocess; fails on a
    non-zero exit.

    The peak RSS is taken by GNU time, a small process: a child forked from
    this (large) Python process would report this process's RSS as its peak.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        start = time.perf_counter()
        result = subprocess.run(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", rss.name, *argv],
            stdout=out,
            stderr=err,
            env=env,
            check=False,
        )
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if result.returncode != 0:
            message = err.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{stdout}\n{message}")
        peak, user, system = rss.read().split()[-3:]
    return elapsed, int(peak), stdout, float(user) + float(system)


def sha256_one_pass(path: Path) -> float:
    """One pass of hashlib over the file, at its best: large reads into a
    page-aligned buffer (a malloc'd one can make the kernel's copy several
    times slower, see ``ledger.hashing._engine.page_buffer``)."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    buffer = mmap.mmap(-1, 8 * MiB)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return time.perf_counter() - start


def build_model(path: Path, size: int) -> Any:
    """A state dict of float32 tensors of ``size`` bytes in all; returns its tensor digest."""
    import torch

    from ledger.hashing.tensors import state_dict_digest

    generator = torch.Generator().manual_seed(0)
    per_tensor = 64 * MiB
    state: dict[str, Any] = {}
    left = size
    while left >= 4096:
        nbytes = min(per_tensor, left) // 4096 * 4096
        state[f"layers.{len(state)}.weight"] = torch.rand(nbytes // 4096, 1024, generator=generator)
        left -= nbytes
    torch.save(state, path)
    digest = state_dict_digest(state)
    del state
    return digest


def record(model: Path, tensors: Any, data_dir: Path, rpc_url: str) -> str:
    """Deploy a registry, record ``model`` as a run's final weights; returns the run id."""
    from ledger.chain.admin import RegistryAdmin
    from ledger.chain.records import FinalRecord
    from ledger.chain.rpc import JsonRpc
    from ledger.chain.sender import Signer
    from ledger.config import ANVIL_DEV_KEY, Secret, Settings, save_deployment
    from ledger.hashing.merkle import checkpoint_root
    from ledger.record.artifacts import store_weights
    from ledger.record.manifest import build_manifest, canonical_json
    from ledger.store import LocalStore

    registry, deployed = RegistryAdmin.deploy(JsonRpc(rpc_url), Signer(Secret(ANVIL_DEV_KEY)))
    settings = Settings(data_dir=data_dir, rpc_url=rpc_url)
    save_deployment(
        settings, address=registry.address, chain_id=registry.chain_id, block=deployed.block_number
    )
    store = LocalStore(data_dir / "store")
    manifest = build_manifest(name="bench-verify", config={"size": model.stat().st_size})
    manifest_cid = store.put_bytes(canonical_json(manifest, what="manifest"))
    run_id, _ = registry.start_run(manifest_cid.digest)
    run_id_hex = "0x" + run_id.hex()
    file_cid, digest, metrics_cid = store_weights(
        store, run_id_hex, model, {"loss": 0.0}, None, tensors
    )
    no_checkpoints = checkpoint_root([])
    record = FinalRecord(file_cid.digest, digest.root, metrics_cid.digest, no_checkpoints, 0)
    registry.finalize_run(run_id, record)
    return run_id_hex


def sign_with_model_signing(model: Path, work: Path) -> list[str] | None:
    """Sign ``model`` with a fresh key; returns the verify command, or None without the tool."""
    tool = PEERS_BIN / "model_signing"
    if not tool.exists():
        return None
    key, pub, signature = work / "key.pem", work / "pub.pem", work / "model.sig"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
        check=True,
    )
    subprocess.run(
        ["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [str(tool), "sign", "key", "--private_key", str(key), "--signature", str(signature),
         str(model)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return [str(tool), "verify", "key", "--public_key", str(pub), "--signature", str(signature),
            str(model)]  # fmt: skip


def help_startup(repeat: int = 7) -> float:
    ledger = str(VENV_BIN / "ledger")
    run_measured([ledger, "--help"])  # warm the bytecode cache
    return statistics.median(run_measured([ledger, "--help"])[0] for _ in range(repeat))


def load_average() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (this file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-gib", type=float, default=1.0, help="model size (default 1)")
    parser.add_argument("--big", action="store_true", help="a 4 GiB model (same as --size-gib 4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per command")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the model")
    parser.add_argument(
        "--cache",
        choices=("warm", "cold"),
        default="warm",
        help="warm: the file in RAM for every command (default); cold: evicted before each",
    )
    args = parser.parse_args(argv)
    size = int((4.0 if args.big else args.size_gib) * GiB)

    from ledger.chain.anvil import AnvilProcess

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=args.workdir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    anvil = AnvilProcess(work / "chain", port=port)
    try:
        model_dir = work / "model"
        model_dir.mkdir()
        model = model_dir / "model.pt"
        print(f"building a {size / GiB:.2f} GiB state dict in {work} ...", flush=True)
        tensors = build_model(model, size)
        anvil.start(persist=False)
        run_id = record(model, tensors, work / "ledger", anvil.rpc_url)
        print(f"recorded as run {run_id}", flush=True)
        ms_verify = sign_with_model_signing(model, work)
        if ms_verify is None:
            print("model_signing not found in bench/.peers: run `make bench-verify`", flush=True)

        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(LEDGER_HOME=str(work / "ledger"), LEDGER_RPC_URL=anvil.rpc_url)
        ledger_verify = [str(VENV_BIN / "ledger"), "verify", str(model), "--json"]

        # An installed package has its bytecode; PYTHONDONTWRITEBYTECODE (set in some
        # shells) would otherwise make every `ledger` start recompile the sources.
        import compileall

        compileall.compile_dir(str(REPO / "ledger"), quiet=1)
        print(f"cache: {args.cache} (the same for every command)", flush=True)
        sha256_one_pass(model)
        commands: dict[str, Callable[[], tuple[float, int, float]]] = {
            "ledger_verify": lambda: _subprocess(ledger_verify, env, expect="verified"),
            "sha256_hashlib": lambda: (sha256_one_pass(model), 0, 0.0),
            "sha256sum": lambda: _subprocess(["sha256sum", str(model)], None),
        }
        if ms_verify is not None:
            commands["model_signing_verify"] = lambda: _subprocess(ms_verify, None)
        timings = {name: Timing(name) for name in commands}
        for command in commands.values():
            command()  # warm-up, unmeasured
        loads: list[float] = []
        for round_number in range(args.repeat):
            loads.append(load_average())
            for name, command in commands.items():
                if args.cache == "cold":
                    evict(model)
                elapsed, rss, cpu = command()
                timings[name].times.append(elapsed)
                timings[name].cpu.append(cpu)
                timings[name].peak_rss_kib = max(timings[name].peak_rss_kib, rss)
            loads.append(load_average())
            print(
                f"round {round_number + 1}: "
                + ", ".join(f"{n} {t.times[-1]:.3f} s" for n, t in timings.items())
                + f"  (load average {loads[-1]:.2f})",
                flush=True,
            )

        engine = {}
        for label, workers in (("engine_single_thread", 1), ("engine_parallel", None)):
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                file_cid(model, workers=workers)
                best = min(best, time.perf_counter() - t0)
            engine[label] = best
        help_s = help_startup()
    finally:
        anvil.stop()
        shutil.rmtree(work, ignore_errors=True)

    ours = timings["ledger_verify"].median
    figures: dict[str, Any] = {
        "size_bytes": size,
        "cores": default_workers(),
        "cache": args.cache,
        "load_average": {"min": min(loads), "max": max(loads)},
        "ledger_verify_cpu_s": round(statistics.median(timings["ledger_verify"].cpu), 3),
        "repeat": args.repeat,
        "median_s": {n: round(t.median, 3) for n, t in timings.items()},
        "best_s": {n: round(t.best, 3) for n, t in timings.items()},
        "ratio_vs_sha256_hashlib": round(ours / timings["sha256_hashlib"].median, 3),
        "ratio_vs_sha256sum": round(ours / timings["sha256sum"].median, 3),
        "ratio_vs_model_signing": (
            round(ours / timings["model_signing_verify"].median, 3)
            if "model_signing_verify" in timings
            else None
        ),
        "ledger_verify_peak_rss_mib": round(timings["ledger_verify"].peak_rss_kib / 1024, 1),
        "model_signing_peak_rss_mib": (
            round(timings["model_signing_verify"].peak_rss_kib / 1024, 1)
            if "model_signing_verify" in timings
            else None
        ),
        "engine_single_thread_s": round(engine["engine_single_thread"], 3),
        "engine_parallel_s": round(engine["engine_parallel"], 3),
        "ledger_help_startup_s": round(help_s, 3),
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }
    print()
    print(
        f"{'command':24s} {'median s':>9s} {'best s':>8s}   ({args.cache} cache,"
        f" {args.repeat} runs, load average {min(loads):.2f}-{max(loads):.2f},"
        f" {default_workers()} cores)"
    )
    for name, timing in timings.items():
        print(f"{name:24s} {timing.median:9.3f} {timing.best:8.3f}")
    print(f"ledger verify / sha256 (hashlib, one pass) = {figures['ratio_vs_sha256_hashlib']:.2f}"
          f"  (goal <= {GOAL_VS_SHA256})")  # fmt: skip
    if figures["ratio_vs_model_signing"] is not None:
        print(f"ledger verify / model_signing verify      = {figures['ratio_vs_model_signing']:.2f}"
              f"  (goal <= {GOAL_VS_MODEL_SIGNING})")  # fmt: skip
    print(f"ledger verify / sha256sum                 = {figures['ratio_vs_sha256sum']:.2f}")
    print(f"ledger verify CPU (user + system), median  = {figures['ledger_verify_cpu_s']:.3f} s")
    print(f"ledger verify peak RSS {figures['ledger_verify_peak_rss_mib']} MiB; "
          f"engine alone: {figures['engine_single_thread_s']} s on 1 thread, "
          f"{figures['engine_parallel_s']} s on {figures['cores']}")  # fmt: skip
    print(f"`ledger --help` start-up {figures['ledger_help_startup_s']} s (goal < {GOAL_HELP_S})")
    print(json.dumps(figures, sort_keys=True))


def _subprocess(
    argv: Sequence[str], env: dict[str, str] | None, expect: str | None = None
) -> tuple[float, int, float]:
    elapsed, rss, stdout, cpu = run_measured(argv, env)
    if expect is not None and json.loads(stdout)["outcome"] != expect:
        raise SystemExit(f"{argv[0]} did not say {expect}: {stdout}")
    return elapsed, rss, cpu


if __name__ == "__main__":
    main()

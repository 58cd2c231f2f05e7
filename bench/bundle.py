"""Wall time of ``ledger export FILE`` and ``ledger verify FILE --bundle B`` against
hashing the file once.

Builds a torch state-dict file (1 GiB; ``--size-gib N``), records it as a run's
final weights on a throw-away local Anvil (the same setup as ``bench/verify.py``),
then times, in the same run, on the same file, warm cache (the file read once
before timing), each command ``--repeat`` times interleaved after one unmeasured
warm-up:

* ``ledger cid FILE`` — the baseline: the file's CID, start-up included;
* ``ledger export FILE -o B`` — the run found by the file's CID, the file's
  sha256 for the Statement's subject (from the same read), the chain evidence,
  the documents and the DSSE signature;
* ``ledger verify FILE --bundle B --json`` — offline: the CID and the sha256 in
  one read, then every proof in the bundle (exit 7, PROVEN);
* ``ledger verify FILE --json`` — plain on-chain verify, to see it is not slowed.

In process, the engine alone: the CID, the CID with the sha256 fed from its
blocks (what both commands do), and the two hashes as before this change (the
CID on every core and a separate sha256 read of the file on a thread beside it).

Goal (issue #21): export and offline verify take no longer than hashing the file
plus 0.5 s, i.e. their medians minus ``ledger cid``'s at most 0.5 s.

Run: ``PYTHONPATH=. .venv/bin/python bench/bundle.py [--size-gib N] [--repeat N]``.
The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from verify import build_model, load_average, record  # noqa: E402

GiB = 1024**3
GOAL_OVER_HASHING_S = 0.5


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) of each command's runs: far less load-dependent than
wall time on a shared machine."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    argv: Sequence[str], env: dict[str, str], codes: tuple[int, ...] = (0,), name: str = ""
) -> float:
    """Wall time of one subprocess (its CPU time goes to :data:`CPU`); fails on an exit
    code not in ``codes``."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in codes:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    if name:
        CPU.setdefault(name, []).append(_children_cpu() - cpu)
    return elapsed


def two_passes(path: Path) -> None:
    """The CID and the sha256 as before: a second read of the file on a thread."""
    from concurrent.futures import ThreadPoolExecutor

    from ledger.hashing.cid import file_cid

    def sha256() -> str:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    with ThreadPoolExecutor(max_workers=1) as pool:
        sha = pool.submit(sha256)
        file_cid(path)
        sha.result()


def in_process(path: Path, repeat: int) -> dict[str, float]:
    from ledger.hashing.cid import file_cid, file_cid_and_sha256

    cases: dict[str, Callable[[], Any]] = {
        "cid": lambda: file_cid(path),
        "cid_and_sha256_one_read": lambda: file_cid_and_sha256(path),
        "cid_and_sha256_two_reads": lambda: two_passes(path),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():  # warm-up
        case()
    for _ in range(repeat):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-gib", type=float, default=1.0, help="model size (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the model")
    args = parser.parse_args(argv)
    size = int(args.size_gib * GiB)

    import shutil

    from ledger.chain.anvil import AnvilProcess

    work = Path(tempfile.mkdtemp(prefix="ledger-bench-bundle-", dir=args.workdir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    anvil = AnvilProcess(work / "chain", port=port)
    try:
        model = work / "model.pt"
        print(f"building a {size / GiB:.2f} GiB state dict in {work} ...", flush=True)
        tensors = build_model(model, size)
        anvil.start(persist=False)
        run_id = record(model, tensors, work / "ledger", anvil.rpc_url)
        print(f"recorded as run {run_id}", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(LEDGER_HOME=str(work / "ledger"), LEDGER_RPC_URL=anvil.rpc_url)
        env["PYTHONPATH"] = str(REPO)
        bundle = work / "model.pt.provenance.json"
        ledger = [sys.executable, "-m", "ledger"]
        offline = env | {"LEDGER_HOME": str(work / "empty"), "LEDGER_RPC_URL": "http://127.0.0.1:9"}
        commands: dict[str, tuple[list[str], dict[str, str], tuple[int, ...]]] = {
            "ledger_cid": ([*ledger, "cid", str(model)], env, (0,)),
            "export": ([*ledger, "export", str(model), "-o", str(bundle)], env, (0,)),
            "verify_bundle": (
                [*ledger, "verify", str(model), "--bundle", str(bundle), "--json"],
                offline,
                (7,),
            ),
            "verify_plain": ([*ledger, "verify", str(model), "--json"], env, (0,)),
        }
        model.read_bytes()  # warm cache for everyone
        for argv, cmd_env, codes in commands.values():  # warm-up, and the bundle exists
            timed(argv, cmd_env, codes)
        times: dict[str, list[float]] = {name: [] for name in commands}
        loads = []
        for n in range(args.repeat):
            loads.append(load_average())
            for name, (argv, cmd_env, codes) in commands.items():
                times[name].append(timed(argv, cmd_env, codes, name))
            print(
                f"round {n + 1}: load {loads[-1]:.2f} "
                + " ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                flush=True,
            )
        medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
        engine = in_process(model, args.repeat)
        over = {
            "export": round(medians["export"] - medians["ledger_cid"], 3),
            "verify_bundle": round(medians["verify_bundle"] - medians["ledger_cid"], 3),
        }
        for name, extra in over.items():
            verdict = "meets" if extra <= GOAL_OVER_HASHING_S else "misses"
            print(f"{name}: +{extra:.2f} s over `ledger cid` ({verdict} the +0.5 s goal)")
        print(
            json.dumps(
                {
                    "bench": "bundle",
                    "size_bytes": size,
                    "repeat": args.repeat,
                    "load_average": [round(x, 2) for x in loads],
                    "median_s": medians,
                    "median_cpu_s": {n: round(statistics.median(c), 3) for n, c in CPU.items()},
                    "over_ledger_cid_s": over,
                    "goal_over_hashing_s": GOAL_OVER_HASHING_S,
                    "engine_in_process_median_s": engine,
                    "bundle_bytes": bundle.stat().st_size,
                },
                sort_keys=True,
            )
        )
    finally:
        anvil.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark of data fingerprints (not part of CI): a folder of many files, cold and warm.

1. A folder of ``--files`` files (default 10,000) of ``--size`` bytes in all
   (default 2 GiB), random bytes, in a temporary folder (``--small``: 1,000
   files, 200 MiB). Files are spread over 100 sub-folders.
2. ``plain``: a plain parallel SHA-256 of the same files (one thread per core,
   1 MiB reads), the floor any tool that reads every byte pays.
3. ``cold``: :func:`ledger.record.data.fingerprint` of the folder with an empty
   fingerprint cache: every file read and hashed as ``ipfs add -r`` would,
   the cache filled.
4. ``warm``: the same call again (a new cache object, as the next run's start
   would make): the folder listed, each file's status compared, nothing read.
5. ``dvc add`` of the same folder in a fresh ``dvc init --no-scm`` project (DVC
   from PyPI in its own virtualenv, ``bench/.dvc``, as ``make bench-data`` builds
   it; ``--dvc`` names another binary, ``--no-dvc`` skips it): cold, then again
   with DVC's own state cache warm. DVC hashes with MD5 and copies the files into
   its cache (``cache.type copy``, the default where reflinks are not possible);
   ledger's cold pass reads each file once and stores nothing.

The files are in the page cache for all of them (they were just written; the
plain pass reads them first): the figures compare hashing work, not the disk.
Goals (issue #23): cold <= 0.6 x ``dvc add``, warm <= 0.5 s. The last line is
one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ledger.hashing.cid import path_cid
from ledger.record.data import RACY_NS, FingerprintCache, fingerprint


def make_folder(root: Path, files: int, total: int) -> Path:
    folder = root / "dataset"
    each = max(1, total // files)
    for i in range(files):
        sub = folder / f"shard-{i % 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"item-{i:06d}.bin").write_bytes(os.urandom(each))
    return folder


def plain_sha256(folder: Path) -> float:
    paths = sorted(p for p in folder.rglob("*") if p.is_file())

    def one(path: Path) -> str:
        hasher = hashlib.sha256()
        with open(path, "rb", buffering=0) as handle:
            while block := handle.read(1 << 20):
                hasher.update(block)
        return hasher.hexdigest()

    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def timed_fingerprint(folder: Path, cache_path: Path) -> tuple[float, dict[str, object], int]:
    start = time.perf_counter()
    with FingerprintCache(cache_path) as cache:
        found = fingerprint(folder, cache=cache)
        hits = cache.hits
    return time.perf_counter() - start, found, hits


DVC = Path(__file__).resolve().parent / ".dvc" / "bin" / "dvc"


def dvc_add(dvc: Path, repo: Path, folder: Path) -> float:
    """Wall time of ``dvc add FOLDER`` in ``repo`` (``dvc init --no-scm`` there first)."""
    if not (repo / ".dvc").exists():
        subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=repo, check=True)
        subprocess.run([str(dvc), "config", "core.analytics", "false"], cwd=repo, check=True)
    start = time.perf_counter()
    subprocess.run([str(dvc), "add", "-q", str(folder.relative_to(repo))], cwd=repo, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2 << 30, help="total bytes")
    parser.add_argument("--small", action="store_true", help="1,000 files, 200 MiB")
    parser.add_argument("--dvc", type=Path, default=DVC, help="the dvc binary to compare with")
    parser.add_argument("--no-dvc", action="store_true", help="skip the dvc add comparison")
    args = parser.parse_args()
    dvc: Path | None = None if args.no_dvc else args.dvc
    if dvc is not None and not dvc.exists():
        raise SystemExit(f"{dvc} is missing: run `make bench-data`, or pass --no-dvc")
    files, total = (1_000, 200 << 20) if args.small else (args.files, args.size)

    with tempfile.TemporaryDirectory(prefix="ledger-bench-data-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        folder = make_folder(repo, files, total)
        time.sleep(RACY_NS / 1e9 + 0.1)  # past the cache's racy window
        plain = plain_sha256(folder)
        cache_path = root / "cache" / "fingerprints.sqlite"
        cold, found, _ = timed_fingerprint(folder, cache_path)
        warm, again, hits = timed_fingerprint(folder, cache_path)
        assert again == found and found["cid"] == str(path_cid(folder))
        dvc_cold = dvc_warm = None
        if dvc is not None:
            dvc_cold = dvc_add(dvc, repo, folder)
            dvc_warm = dvc_add(dvc, repo, folder)
            shutil.rmtree(repo / ".dvc", ignore_errors=True)
        print(f"{files} files, {found['bytes'] / 2**20:.0f} MiB, {os.cpu_count()} cores")
        print(f"plain parallel sha256  {plain:8.3f} s")
        print(f"ledger cold            {cold:8.3f} s  ({cold / plain:.2f} x plain)")
        print(f"ledger warm            {warm:8.3f} s  ({hits} of {files} files from the cache)")
        if dvc_cold is not None and dvc_warm is not None:
            print(
                f"dvc add cold           {dvc_cold:8.3f} s  (ledger cold {cold / dvc_cold:.2f} x)"
            )
            print(f"dvc add warm           {dvc_warm:8.3f} s")
        result = {
            "files": files,
            "bytes": found["bytes"],
            "cores": os.cpu_count(),
            "plain_sha256_s": round(plain, 4),
            "cold_s": round(cold, 4),
            "warm_s": round(warm, 4),
            "warm_hits": hits,
            "goal_warm_le_0_5_s": warm <= 0.5,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        if dvc_cold is not None and dvc_warm is not None:
            result |= {
                "dvc_add_cold_s": round(dvc_cold, 4),
                "dvc_add_warm_s": round(dvc_warm, 4),
                "cold_over_dvc": round(cold / dvc_cold, 3),
                "goal_cold_le_0_6_dvc": cold <= 0.6 * dvc_cold,
            }
        print(json.dumps(result))


if __name__ == "__main__":
    main()

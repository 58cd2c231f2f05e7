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

The files are in the page cache for all three (they were just written; the
plain pass reads them first): the figures compare hashing work, not the disk.
Goals: warm <= 0.5 s. The last line is one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2 << 30, help="total bytes")
    parser.add_argument("--small", action="store_true", help="1,000 files, 200 MiB")
    args = parser.parse_args()
    files, total = (1_000, 200 << 20) if args.small else (args.files, args.size)

    with tempfile.TemporaryDirectory(prefix="ledger-bench-data-") as tmp:
        root = Path(tmp)
        folder = make_folder(root, files, total)
        time.sleep(RACY_NS / 1e9 + 0.1)  # past the cache's racy window
        plain = plain_sha256(folder)
        cache_path = root / "cache" / "fingerprints.sqlite"
        cold, found, _ = timed_fingerprint(folder, cache_path)
        warm, again, hits = timed_fingerprint(folder, cache_path)
        assert again == found and found["cid"] == str(path_cid(folder))
        print(f"{files} files, {found['bytes'] / 2**20:.0f} MiB, {os.cpu_count()} cores")
        print(f"plain parallel sha256  {plain:8.3f} s")
        print(f"ledger cold            {cold:8.3f} s  ({cold / plain:.2f} x plain)")
        print(f"ledger warm            {warm:8.3f} s  ({hits} of {files} files from the cache)")
        result = {
            "files": files,
            "bytes": found["bytes"],
            "cores": os.cpu_count(),
            "plain_sha256_s": round(plain, 4),
            "cold_s": round(cold, 4),
            "warm_s": round(warm, 4),
            "warm_hits": hits,
            "goal_warm_le_0_5_s": warm <= 0.5,
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()

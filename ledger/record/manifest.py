"""Run manifests: what a run is, probed from git and the environment.

A manifest is stored as canonical JSON (:mod:`ledger.documents`), so the same
content always has the same bytes and therefore the same CID. It describes
everything that defines a run: its config, its code (git commit and a digest of
uncommitted changes), its environment, fingerprints of its data, seed, parents
with their relation, distributed set-up, and the names of the digest schemes
used for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.documents import DOCUMENT_SCHEME, MANIFEST_SCHEMA, canonical_json
from ledger.errors import InputError
from ledger.hashing.cid import CIDV1_SCHEME
from ledger.hashing.tensors import TENSORS_SCHEME

DIGEST_SCHEMES = {"file": CIDV1_SCHEME, "tensors": TENSORS_SCHEME, "documents": DOCUMENT_SCHEME}


def code_version(root: Path | None = None) -> dict[str, Any]:
    """Git commit of ``root`` (default: cwd) and a digest of uncommitted changes."""
    return start_code_version(root)()


def start_code_version(root: Path | None = None) -> Callable[[], dict[str, Any]]:
    """Ask git about ``root`` and return at once; the function returned waits for
    the answer and gives :func:`code_version`'s. A run's start does its other
    work while git runs."""
    import subprocess  # here, not at the top: `ledger verify` imports this module

    cwd = str(root or Path.cwd())

    def git(*args: str) -> bytes | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, check=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout

    # One call tells the commit and whether anything differs from it (a run start
    # pays for every process it spawns); only a dirty tree is asked for its diff.
    command = ["git", "--no-optional-locks", "status", "--porcelain=v2", "--branch", "-uall", "-z"]
    try:
        probe: subprocess.Popen[bytes] | None = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except OSError:  # no git here
        probe = None

    def answer() -> dict[str, Any]:
        status = None
        if probe is not None:
            try:
                out, _ = probe.communicate(timeout=30)
                status = out if probe.returncode == 0 else None
            except subprocess.SubprocessError:
                probe.kill()
                probe.communicate()
        return _code_fields(status, git, cwd)

    return answer


def _code_fields(
    status: bytes | None, git: Callable[..., bytes | None], cwd: str
) -> dict[str, Any]:
    fields = (status or b"").split(b"\x00")
    oid = next((f[13:] for f in fields if f.startswith(b"# branch.oid ")), b"(initial)")
    if status is None or oid == b"(initial)":
        return {"vcs": None}
    if not any(f and not f.startswith(b"#") for f in fields):
        return {"vcs": "git", "commit": oid.decode(), "dirty": False, "uncommitted_sha256": None}
    diff = git("diff", "HEAD", "--binary") or b""
    untracked = [
        n
        for n in (git("ls-files", "--others", "--exclude-standard", "-z") or b"").split(b"\x00")
        if n
    ]
    dirty = bool(diff or untracked)
    digest = None
    if dirty:
        hasher = hashlib.sha256(diff)
        for name in sorted(untracked):  # untracked files count by name and content
            hasher.update(b"\x00" + name + b"\x00" + _file_sha256(Path(cwd) / name.decode()))
        digest = hasher.hexdigest()
    return {
        "vcs": "git",
        "commit": oid.decode(),
        "dirty": dirty,
        "uncommitted_sha256": digest,
    }


def _file_sha256(path: Path) -> bytes:
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    except OSError:
        return b"unreadable"
    return hasher.digest()


def installed_packages(cache_dir: Path | None = None) -> list[str]:
    """``name==version`` of every installed distribution, names lowercased, sorted.

    Read from the metadata files' header lines: the standard library's full
    e-mail parse of ~120 files costs a third of a second, on the training
    process's start. With ``cache_dir`` the list is kept there, keyed by what
    an install, upgrade or removal changes: the names and modification times of
    the metadata folders on ``sys.path`` (their names carry the versions). A
    run start then lists those folders instead of reading every metadata file.
    """
    if cache_dir is None:
        return _read_packages()
    found = _cached(cache_dir / "packages.json", _packages_key(), _read_packages)
    return [str(p) for p in found] if isinstance(found, list) else _read_packages()


def _cached(cache: Path, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, kept in the JSON file ``cache`` under ``key``: read back while
    the key is the same, computed and written anew when it differs, is absent or
    the file is damaged. A read-only data directory only loses the shortcut."""
    try:
        kept = json.loads(cache.read_bytes())
        if isinstance(kept, dict) and kept.get("key") == key and "value" in kept:
            return kept["value"]
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}-{os.getpid()}.json")
        tmp.write_text(json.dumps({"key": key, "value": value}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return value


def _packages_key() -> str:
    """A digest of every metadata folder on ``sys.path``: name and mtime."""
    hasher = hashlib.sha256(sys.prefix.encode())
    for folder in sys.path:
        try:
            entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
        except OSError:
            continue  # not a directory (a zip, or gone)
        hasher.update(b"\x00d" + os.fsencode(folder))
        for entry in entries:
            if entry.name.endswith((".dist-info", ".egg-info")):
                try:
                    mtime = entry.stat().st_mtime_ns
                    if "-" not in entry.name:  # no version in the name (a develop egg-info):
                        mtime = max(mtime, _metadata_mtime(entry.path))  # rewritten in place
                except OSError:
                    mtime = -1
                hasher.update(b"\x00" + os.fsencode(entry.name) + b"@%d" % mtime)
    return hasher.hexdigest()


def _metadata_mtime(folder: str) -> int:
    for name in ("METADATA", "PKG-INFO"):
        try:
            return os.stat(os.path.join(folder, name)).st_mtime_ns
        except FileNotFoundError:
            continue
    return -1


def _read_packages() -> list[str]:
    from importlib import metadata  # here, not at the top: `ledger verify` imports this module

    found = []
    for dist in metadata.distributions():
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        fields = {}
        for line in text.splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            key, sep, value = line.partition(":")
            if sep and key in ("Name", "Version") and key not in fields:
                fields[key] = value.strip()
        found.append(f"{fields.get('Name', '').lower()}=={fields.get('Version', '')}")
    return sorted(found)


def environment(cache_dir: Path | None = None) -> dict[str, Any]:
    """Interpreter, platform, torch/CUDA versions and a digest of installed packages
    (the list kept in ``cache_dir``, see :func:`installed_packages`)."""
    import platform  # here, not at the top: `ledger verify` imports this module

    packages = installed_packages(cache_dir)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": _platform_text(cache_dir),
        "machine": platform.machine(),
        "packages_sha256": hashlib.sha256("\n".join(packages).encode()).hexdigest(),
        "packages_count": len(packages),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = str(torch.__version__)
        env["cuda"] = torch.version.cuda
    return env


def _platform_text(cache_dir: Path | None) -> str:
    """``platform.platform()``, kept in ``cache_dir``: on Linux it runs ``uname -p``
    in a subprocess and scans the interpreter binary for its C library version,
    several milliseconds at every run start. Keyed by the kernel's uname (without
    the host name) and the interpreter binary's path and modification time."""
    import platform

    if cache_dir is None:
        return platform.platform()
    uname = os.uname()
    try:
        binary = os.path.realpath(sys.executable)
        stamp = os.stat(binary).st_mtime_ns
    except OSError:
        return platform.platform()
    key = json.dumps([uname.sysname, uname.release, uname.version, uname.machine, binary, stamp])
    found = _cached(cache_dir / "platform.json", key, platform.platform)
    return found if isinstance(found, str) else platform.platform()


def fingerprint(value: Any, *, cache_dir: Path | None = None) -> dict[str, Any]:
    """A content fingerprint of a data source: a file or folder (its CID), a list or
    glob of files, bytes, an array/tensor, a Hugging Face or torch dataset
    (:func:`ledger.record.data.fingerprint`, whose docstring lists the rules).
    ``cache_dir`` keeps file CIDs between calls (:class:`~ledger.record.data.FingerprintCache`)."""
    from ledger.record.data import fingerprint as of  # here: `ledger verify` imports this module

    return of(value, cache_dir=cache_dir)


def build_manifest(
    *,
    name: str,
    config: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    seed: int | None = None,
    parents: Sequence[Mapping[str, str]] = (),
    code_root: Path | None = None,
    world_size: int = 1,
    extra: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
    backend: str | None = None,
    sweep: str | None = None,
    trial: int | None = None,
    cache_dir: Path | None = None,
    code: Callable[[], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A manifest document; ``data`` values are fingerprinted unless already dicts
    (:mod:`ledger.record.data`; file CIDs kept in ``cache_dir``).

    ``code`` gives the code version when git was asked already
    (:func:`start_code_version`); else ``code_root`` is asked.

    ``cache_dir`` keeps the installed-package list between runs (the data
    directory's ``cache`` folder, for the training hook).

    ``backend`` names the ``torch.distributed`` backend when ``world_size`` > 1.
    ``sweep`` groups hyperparameter-search trials: the manifest then carries
    ``"sweep": {"id": sweep, "trial": trial}`` (the indexer relies on that shape);
    without a sweep there is no ``sweep`` key.
    """
    if trial is not None and sweep is None:
        raise InputError("a trial number needs a sweep id", hint="pass sweep=<id> with trial=")
    if sweep is not None and (not isinstance(sweep, str) or not sweep.strip()):
        raise InputError(f"sweep id {sweep!r} must be a non-empty string")
    if trial is not None and (isinstance(trial, bool) or not isinstance(trial, int)):
        raise InputError(f"trial {trial!r} must be an integer")
    from ledger.record.data import fingerprints as data_fingerprints

    fingerprints = data_fingerprints(data, cache_dir=cache_dir)
    env = environment(cache_dir)  # before waiting for git's answer, which may still run
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "created_at": (created_at or datetime.now(UTC)).isoformat(timespec="microseconds"),
        "config": dict(config),
        "code": dict(code()) if code is not None else code_version(code_root),
        "environment": env,
        "data": fingerprints,
        # canonical JSON numbers are IEEE doubles: larger seeds are kept exactly as text
        "seed": seed if seed is None or abs(seed) < 2**53 else str(seed),
        "parents": [dict(p) for p in parents],
        "distributed": {"world_size": world_size},
        "digests": DIGEST_SCHEMES,
    }
    if backend is not None:
        manifest["distributed"]["backend"] = backend
    if sweep is not None:
        manifest["sweep"] = {"id": sweep, "trial": trial}
    if extra:
        manifest["extra"] = dict(extra)
    canonical_json(manifest, what="manifest")  # fail early, naming the bad field
    return manifest

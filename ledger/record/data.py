"""Fingerprints of the data a run trains on, and the cache that keeps them cheap.

:func:`fingerprint` turns what a user passes as ``LedgerRun(data={...})`` into
a plain, canonical-JSON description of its content:

===================================  =============================================
value                                fingerprint
===================================  =============================================
a file (path)                        ``file``: its CID, name and bytes
a folder (path)                      ``folder``: what ``ipfs add -r -Q`` prints
                                     (hidden entries skipped, symlinks inside kept
                                     as links, not followed), the profile's scheme,
                                     the regular files it holds and their bytes
a list of paths, or a glob (text     ``files``: each entry as above, named by its
with ``*``, ``?`` or ``[`` that is   path below the entries' common folder
not an existing path)
bytes                                ``bytes``: sha256 and length
a numpy array or a tensor            ``array``: dtype, shape, sha256 of the bytes
``datasets.Dataset``                 ``hf-dataset``: rows, features and the CIDs of
                                     its Arrow cache files (a dataset held in
                                     memory: the sha256 of its Arrow IPC stream);
                                     a row selection or order held apart from
                                     those files adds ``indices_sha256``
``datasets.DatasetDict``             ``hf-dataset-dict``: each split as above
anything with ``ledger_fingerprint`` the value that method returns (a mapping is
                                     kept as given; anything else is
                                     fingerprinted)
``torch`` ``DataLoader``             its ``dataset``
``TensorDataset``                    ``tensor-dataset``: rows and each tensor
``Subset`` / ``ConcatDataset``       ``subset`` (the dataset and the sha256 of its
                                     indices) / ``concat`` (each part)
a mapping                            kept as given (a fingerprint made earlier)
===================================  =============================================

Any other dataset is refused with one line saying how to give it a
fingerprint: a ``ledger_fingerprint()`` method, or the files or arrays it reads.

Files are hashed on every core (:mod:`ledger.hashing._engine`). With a
``cache_dir``, each file's CID is kept in ``cache_dir/fingerprints.sqlite``
(:class:`FingerprintCache`), keyed, as git's index is, by the file's device,
inode, size, modification and change times (nanoseconds): an unchanged folder
is listed and its files' status read, but no file is read again. A file
written to, touched, replaced (a new inode) or renamed (a new change time) is
hashed anew.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ledger.errors import InputError
from ledger.hashing._multiformats import Cid
from ledger.hashing._unixfs import Link
from ledger.hashing.cid import CIDV1_SCHEME, import_profile, path_summary

log = logging.getLogger(__name__)

CACHE_FILE = "fingerprints.sqlite"
"""The cache's file name in the data directory's ``cache`` folder."""

RACY_NS = 100_000_000
"""A file changed less than this long (0.1 s) before it was looked at is hashed
but not kept: a write in the same tick of a coarse file-system clock could
leave its times as they were (git's "racily clean" entries)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    scheme TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    cid BLOB NOT NULL,
    tsize INTEGER NOT NULL,
    PRIMARY KEY (dev, ino, scheme)
)
"""


class FingerprintCache:
    """Each file's root link by (device, inode, scheme), valid while its size,
    modification and change times are the ones kept.

    One row per inode and scheme, replaced when the file changes, so the file
    grows with the files seen, not with the runs. A cache that cannot be
    opened or written (read-only, damaged, locked too long) only loses the
    shortcut: every file is then hashed, and a warning says why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[Any, ...]] = []
        self._since = time.time_ns() - RACY_NS
        self._broken = False

    def __enter__(self) -> FingerprintCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> sqlite3.Connection | None:
        if self._db is not None or self._broken:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self._give_up(exc)
            return None
        self._db = db
        return db

    def _give_up(self, exc: BaseException) -> None:
        log.warning("fingerprint cache %s unusable (%s); hashing every file", self.path, exc)
        self._broken = True
        if self._db is not None:
            self._db.close()
            self._db = None

    def get(self, info: os.stat_result, scheme: str) -> Link | None:
        """The link kept for this file status, or None (then counted a miss)."""
        db = self._open()
        row = None
        if db is not None:
            try:
                row = db.execute(
                    "SELECT size, mtime_ns, ctime_ns, cid, tsize FROM files "
                    "WHERE dev = ? AND ino = ? AND scheme = ?",
                    (info.st_dev, info.st_ino, scheme),
                ).fetchone()
            except sqlite3.Error as exc:
                self._give_up(exc)
        if row is None or tuple(row[:3]) != (info.st_size, info.st_mtime_ns, info.st_ctime_ns):
            self.misses += 1
            return None
        try:
            cid = _cid_from_bytes(row[3])
        except (InputError, ValueError):  # a damaged row: hash the file again
            self.misses += 1
            return None
        self.hits += 1
        return Link(cid, int(row[4]), info.st_size)

    def put(self, info: os.stat_result, scheme: str, link: Link) -> None:
        """Keep ``link`` for this file status (written on :meth:`flush`), unless racy."""
        if max(info.st_mtime_ns, info.st_ctime_ns) >= self._since:
            return
        self._pending.append(
            (
                info.st_dev,
                info.st_ino,
                scheme,
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
                link.cid.to_bytes(),
                link.tsize,
            )
        )

    def flush(self) -> None:
        """Write what :meth:`put` kept, in one transaction."""
        pending, self._pending = self._pending, []
        db = self._open() if pending else None
        if db is None:
            return
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", pending)
        except sqlite3.Error as exc:
            self._give_up(exc)

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None


def _cid_from_bytes(raw: bytes) -> Cid:
    from ledger.hashing._multiformats import DAG_PB

    if len(raw) == 34 and raw[:2] == b"\x12\x20":
        return Cid(version=0, codec=DAG_PB, digest=bytes(raw[2:]))
    return Cid._from_v1_bytes(bytes(raw))


def open_cache(cache_dir: Path | None) -> FingerprintCache | None:
    """The fingerprint cache in ``cache_dir`` (the data directory's ``cache``), if any."""
    return None if cache_dir is None else FingerprintCache(cache_dir / CACHE_FILE)


def fingerprint(
    value: Any,
    *,
    cache_dir: Path | None = None,
    cache: FingerprintCache | None = None,
    profile: str | None = None,
    hidden: bool = False,
) -> dict[str, Any]:
    """A content fingerprint of one data source (see the module docstring).

    File CIDs are kept in ``cache`` or, if not given, in ``cache_dir`` (the
    data directory's ``cache`` folder; none: no cache). ``profile`` chooses the
    import settings of file and folder CIDs (a Kubo profile name such as
    ``unixfs-v1-2025``, or a scheme; default CIDv1); ``hidden`` adds hidden
    entries of folders, as ``ipfs add -r --hidden``.
    """
    kept = cache if cache is not None else open_cache(cache_dir)
    with _Fingerprinter(kept, profile, hidden, close=cache is None) as maker:
        return maker.of(value)


def fingerprints(
    data: Mapping[str, Any] | None, *, cache_dir: Path | None = None
) -> dict[str, Any]:
    """:func:`fingerprint` of every value of ``data`` (mappings kept as given), one cache."""
    found: dict[str, Any] = {}
    with _Fingerprinter(open_cache(cache_dir), None, False) as maker:
        for key, value in (data or {}).items():
            try:
                found[str(key)] = maker.of(value, str(key))
            except InputError as exc:
                if f"{key!r}" in exc.message:
                    raise
                raise type(exc)(f"data {str(key)!r}: {exc.message}", hint=exc.hint) from exc
    return found


def found_data(
    sources: Iterable[tuple[str, Any]], *, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Fingerprints of the data sources a framework callback found (a trainer's
    datasets); one that cannot be fingerprinted is left out with a warning saying
    how to give it one, rather than stopping the training."""
    found: dict[str, Any] = {}
    with _Fingerprinter(open_cache(cache_dir), None, False) as maker:
        for key, value in sources:
            try:
                found[key] = maker.of(value, key)
            except InputError as exc:
                log.warning(
                    "ledger: data %r is not recorded: %s (%s)",
                    key,
                    exc.message,
                    exc.hint or "pass data= to the callback",
                )
    return found


def loader_datasets(name: str, loaders: Any) -> list[tuple[str, Any]]:
    """``(name, dataset)`` of each DataLoader in ``loaders`` (one, a list or a mapping
    of them, as frameworks accept); a list's entries are ``name.0``..., a mapping's
    ``name.key``."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return [
            pair for key, sub in loaders.items() for pair in loader_datasets(f"{name}.{key}", sub)
        ]
    if isinstance(loaders, (list, tuple)):
        if len(loaders) == 1:
            return loader_datasets(name, loaders[0])
        return [
            pair for i, sub in enumerate(loaders) for pair in loader_datasets(f"{name}.{i}", sub)
        ]
    if hasattr(loaders, "batch_sampler") and hasattr(loaders, "dataset"):  # a DataLoader
        return [(name, loaders.dataset)]
    return [(name, loaders)]


_GLOB_CHARS = frozenset("*?[")


class _Fingerprinter:
    def __init__(
        self,
        cache: FingerprintCache | None,
        profile: str | None,
        hidden: bool,
        *,
        close: bool = True,
    ) -> None:
        self.cache = cache
        self._close = close
        self.profile = profile
        self.scheme = import_profile(None, profile).scheme
        self.hidden = hidden

    def __enter__(self) -> _Fingerprinter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cache is not None:
            if self._close:
                self.cache.close()
            else:
                self.cache.flush()

    def of(self, value: Any, key: str | None = None) -> dict[str, Any]:
        if isinstance(value, str) and _GLOB_CHARS & set(value) and not os.path.lexists(value):
            return self._glob(value)
        if isinstance(value, (str, os.PathLike)):
            return self._path(Path(value), Path(value).name)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {
                "kind": "bytes",
                "sha256": hashlib.sha256(value).hexdigest(),
                "bytes": len(value),
            }
        if type(value).__module__.split(".")[0] == "datasets":  # a DatasetDict is a dict
            return self._hf(value, key)
        if isinstance(value, Mapping):
            return dict(value)
        if callable(getattr(value, "ledger_fingerprint", None)):
            given = value.ledger_fingerprint()
            return dict(given) if isinstance(given, Mapping) else self.of(given, key)
        if hasattr(value, "detach") or (hasattr(value, "tobytes") and hasattr(value, "dtype")):
            return array_fingerprint(value)
        if isinstance(value, (list, tuple)):
            if value and all(isinstance(v, (str, os.PathLike)) for v in value):
                return self._files([Path(v) for v in value], None)
            return {"kind": "list", "items": [self.of(v, key) for v in value]}
        if type(value).__module__.split(".")[0] == "torch":
            return self._torch(value, key)
        name = type(value).__name__
        raise InputError(
            f"cannot fingerprint {f'data {key!r}: ' if key else ''}a {name}",
            hint="pass a file or folder path, a list or glob of files, bytes, a numpy array "
            "or tensor, a Hugging Face dataset, or give the dataset a ledger_fingerprint() "
            "method returning the files or arrays it reads",
        )

    # -- files and folders ----------------------------------------------------------

    def _path(self, path: Path, name: str) -> dict[str, Any]:
        summary = path_summary(path, profile=self.profile, hidden=self.hidden, cache=self.cache)
        if self.cache is not None:
            self.cache.flush()
        if not summary.folder:
            found: dict[str, Any] = {
                "kind": "file",
                "name": name,
                "cid": str(summary.cid),
                "bytes": summary.bytes,
            }
            if self.scheme != CIDV1_SCHEME:
                found["scheme"] = self.scheme
            return found
        found = {
            "kind": "folder",
            "name": name,
            "cid": str(summary.cid),
            "scheme": self.scheme,
            "files": summary.files,
            "bytes": summary.bytes,
        }
        if self.hidden:
            found["hidden"] = True
        return found

    def _glob(self, pattern: str) -> dict[str, Any]:
        matches = glob_matches(pattern)
        if not matches:
            raise InputError(
                f"no file matches the data pattern {pattern!r}",
                hint="check the pattern; '**' matches folders at any depth",
            )
        found = self._files([Path(m) for m in matches], pattern)
        return found

    def _files(self, paths: Sequence[Path], pattern: str | None) -> dict[str, Any]:
        absolute = [p.absolute() for p in paths]
        common = Path(os.path.commonpath([str(p.parent) for p in absolute]))
        entries = [
            self._path(path, path.relative_to(common).as_posix())
            for path in absolute  # names below the common folder: no machine paths
        ]
        found: dict[str, Any] = {"kind": "files"}
        if pattern is not None:
            found["pattern"] = Path(pattern).name if os.path.isabs(pattern) else pattern
        found.update(
            count=len(entries),
            bytes=sum(int(e["bytes"]) for e in entries),
            files=entries,
        )
        return found

    # -- Hugging Face datasets ------------------------------------------------------

    def _hf(self, value: Any, key: str | None) -> dict[str, Any]:
        import datasets

        if isinstance(value, datasets.DatasetDict):
            return {
                "kind": "hf-dataset-dict",
                "splits": {str(split): self._hf_dataset(ds) for split, ds in value.items()},
            }
        if isinstance(value, datasets.Dataset):
            return self._hf_dataset(value)
        raise InputError(
            f"cannot fingerprint {f'data {key!r}: ' if key else ''}"
            f"a datasets.{type(value).__name__}",
            hint="pass a Dataset or DatasetDict (an IterableDataset streams: save it first, "
            "or pass the files it reads)",
        )

    def _hf_dataset(self, ds: Any) -> dict[str, Any]:
        found: dict[str, Any] = {
            "kind": "hf-dataset",
            "rows": int(ds.num_rows),
            "features": ds.features.to_dict(),
        }
        files = [Path(f["filename"]) for f in ds.cache_files]
        indices = getattr(ds, "_indices", None)
        if files and _file_backed(ds.data):
            found["files"] = self._files(files, None)["files"]
            if indices is not None and not _file_backed(indices):
                found["indices_sha256"] = _arrow_sha256(indices)
        else:  # held in memory: its table (with any row selection applied)
            if indices is not None:
                ds = ds.flatten_indices(keep_in_memory=True)
            found["arrow_sha256"] = _arrow_sha256(ds.data)
        return found

    # -- torch datasets -------------------------------------------------------------

    def _torch(self, value: Any, key: str | None) -> dict[str, Any]:
        from torch.utils import data

        if isinstance(value, data.DataLoader):
            return self.of(value.dataset, key)
        if isinstance(value, data.TensorDataset):
            return {
                "kind": "tensor-dataset",
                "rows": len(value),
                "tensors": [array_fingerprint(t) for t in value.tensors],
            }
        if isinstance(value, data.Subset):
            import numpy as np

            order = np.asarray(list(value.indices), dtype=np.int64)
            return {
                "kind": "subset",
                "rows": len(order),
                "indices_sha256": hashlib.sha256(order.tobytes()).hexdigest(),
                "of": self.of(value.dataset, key),
            }
        if isinstance(value, data.ConcatDataset):
            return {"kind": "concat", "parts": [self.of(d, key) for d in value.datasets]}
        name = type(value).__name__
        raise InputError(
            f"cannot fingerprint {f'data {key!r}: ' if key else ''}a {name}: "
            "ledger does not know which files or arrays it reads",
            hint=f"give {name} a ledger_fingerprint() method returning the files, folder "
            "or arrays it reads (or a ledger.training.fingerprint(...) of them), or pass "
            "those as data= instead",
        )


def array_fingerprint(value: Any) -> dict[str, Any]:
    """dtype, shape and sha256 of the raw bytes of a numpy array or tensor."""
    if hasattr(value, "detach"):  # torch tensor; raw bytes, as numpy lacks e.g. bfloat16
        import torch

        flat = value.detach().cpu().contiguous().reshape(-1)
        return {
            "kind": "array",
            "dtype": str(value.dtype).removeprefix("torch."),
            "shape": list(value.shape),
            "sha256": hashlib.sha256(flat.view(torch.uint8).numpy().data).hexdigest(),
        }
    return {
        "kind": "array",
        "dtype": str(value.dtype),
        "shape": list(value.shape),
        "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
    }


def _file_backed(table: Any) -> bool:
    """Whether a ``datasets`` table is read from Arrow files (memory-mapped) throughout."""
    from datasets.table import ConcatenationTable, MemoryMappedTable

    if isinstance(table, MemoryMappedTable):
        return True
    if isinstance(table, ConcatenationTable):
        return all(_file_backed(block) for row in table.blocks for block in row)
    return False


def _arrow_sha256(table: Any) -> str:
    """sha256 of a table's Arrow IPC stream (its schema and record batches)."""
    import pyarrow as pa

    arrow = getattr(table, "table", table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, arrow.schema) as writer:
        writer.write_table(arrow)
    return hashlib.sha256(memoryview(sink.getvalue())).hexdigest()


MAX_GLOB_PATHS = 5_000_000
"""Most paths a data pattern may walk through (files and folders) before it is
refused (a pattern over a whole disk)."""


def glob_matches(pattern: str) -> list[str]:
    """The files and folders ``pattern`` matches, sorted, as ``glob.glob(pattern,
    recursive=True)`` names them (``**``: folders at any depth; names starting
    with a dot only where the pattern's part does), except that linked folders are
    neither walked into nor matched.

    Why not ``glob.glob`` itself: it follows links to folders, so two links back
    to the folder (``a -> .``) make 2**40 paths under ``**`` and ``/**`` loops in
    ``/proc``, and a link can lead out of the dataset. A file that is itself a
    link (a Hugging Face cache's snapshot files) is kept; FIFOs, sockets and
    devices are not data. Python 3.13's ``glob.translate`` would give the
    pattern's regular expression; on 3.11 :func:`_pattern_regex` writes it."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    rest = parts[len(fixed) :]
    prefix = os.path.join(*fixed) if fixed else ""
    if not rest:  # no wildcard: the path itself, if it is data
        return [pattern] if _is_data(pattern) else []
    regex = _pattern_regex(rest)
    root = prefix or "."
    found: list[str] = []
    if rest[-1] == "**" and regex.fullmatch("") and os.path.isdir(root):
        found.append(os.path.join(prefix, ""))  # glob names the folder itself too
    walked = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        below = os.path.relpath(folder, root)
        below = "" if below == "." else below + "/"
        kept_dirs = []
        for name in sorted(dirs) + sorted(files):
            walked += 1
            if walked > MAX_GLOB_PATHS:
                raise InputError(
                    f"the data pattern {pattern!r} walks more than {MAX_GLOB_PATHS:,} paths",
                    hint="narrow the pattern (a folder of its own, a file extension)",
                )
            path = os.path.join(folder, name)
            linked_dir = os.path.islink(path) and os.path.isdir(path)
            if name in dirs and not linked_dir:
                kept_dirs.append(name)
            if not linked_dir and regex.fullmatch(below + name) and _is_data(path):
                found.append(os.path.join(prefix, below + name) if prefix else below + name)
        dirs[:] = kept_dirs
    return sorted(found)


def _is_data(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # gone, or a dangling link
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _pattern_regex(parts: Sequence[str]) -> re.Pattern[str]:
    """A regular expression for the relative paths the glob ``parts`` match."""
    pieces = []
    for number, part in enumerate(parts):
        last = number == len(parts) - 1
        if part == "**":  # any number of folders (none too), not hidden ones
            pieces.append("(?:(?!\\.)[^/]+(?:/(?!\\.)[^/]+)*)?" if last else "(?:(?!\\.)[^/]+/)*")
            continue
        segment = "" if part.startswith(".") else "(?!\\.)"
        at = 0
        while at < len(part):
            char = part[at]
            if char == "*":
                segment += "[^/]*"
            elif char == "?":
                segment += "[^/]"
            elif char == "[" and (close := part.find("]", at + 2)) != -1:
                inner = part[at + 1 : close]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                segment += "[" + inner.replace("\\", "\\\\").replace("[", "\\[") + "]"
                at = close
            else:
                segment += re.escape(char)
            at += 1
        pieces.append(segment + ("" if last else "/"))
    return re.compile("".join(pieces))

"""The embedded store: one file per artifact in ``<data dir>/store``, written to a
temporary file, fsynced and renamed into place, so a crash never leaves a partial
artifact under a CID.

Weights files (:meth:`LocalStore.put_weights`, :meth:`LocalStore.put_file`) are
read once: the same blocks give the file's CID, its tensors' digests and the
store's copy (:func:`ledger.hashing._onepass.hash_and_copy`), so the copy is
the bytes that were hashed and is never read back. Two modes, the setting
``LEDGER_STORE_WEIGHTS`` (``store_weights`` in config.json):

* ``copy`` (the default): the bytes are kept in the store. Where the filesystem
  can clone (``FICLONE``: btrfs, XFS, bcachefs...), the copy is a copy-on-write
  clone that takes no new disk space, and its CID is hashed from the clone; else
  the bytes are written as they are read. Copy is the default because a record
  is worth what its bytes are: replaying a run, ``ledger store push`` and an
  auditor's re-check need them, and training scripts delete and overwrite
  checkpoints (Lightning's ``save_top_k``, rotating ``last.ckpt``).
* ``reference`` (Kubo's ``--nocopy`` filestore, embedded): the store records
  where the file lives (path, size, mtime_ns, CID, under ``refs/<cid>``)
  instead of copying it, and re-hashes it on every read; a file moved away is
  an :class:`~ledger.errors.ArtifactNotFoundError` and a changed one an
  :class:`~ledger.errors.IntegrityError`, each naming the path and what
  changed. No checkpoint byte is written twice; but the record is only as
  durable as the files where training left them.

Documents (:meth:`LocalStore.put_bytes`) are always copied.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from ledger.errors import (
    ArtifactNotFoundError,
    ConfigError,
    FileMissingError,
    InputError,
    IntegrityError,
    StoreError,
    StoreFullError,
)
from ledger.hashing._onepass import hash_and_copy
from ledger.hashing._unixfs import Link
from ledger.hashing.cid import Cid, bytes_cid

WeightsMode = Literal["copy", "reference"]
WEIGHTS_MODES: tuple[WeightsMode, ...] = ("copy", "reference")
DEFAULT_WEIGHTS_MODE: WeightsMode = "copy"

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


class LocalStore:
    """Artifacts as files named by their CID under ``root``."""

    def __init__(self, root: Path, *, weights: str = DEFAULT_WEIGHTS_MODE) -> None:
        if weights not in WEIGHTS_MODES:
            raise ConfigError(
                f"store_weights is {weights!r}, not one of {', '.join(WEIGHTS_MODES)}",
                hint="set LEDGER_STORE_WEIGHTS (or store_weights in config.json) to copy"
                " or reference",
            )
        self.root = Path(root)
        self.weights: WeightsMode = "reference" if weights == "reference" else "copy"
        self._blobs = str(self.root / "blobs")
        self._refs = str(self.root / "refs")
        self._deferred: set[Path] | None = None  # folders to fsync (see synced_together)

    def path_for(self, cid: Cid) -> Path:
        """Where the copy of ``cid`` is (or would be); see :meth:`file_for`."""
        return Path(f"{self._blobs}{os.sep}{cid}")

    def has(self, cid: Cid) -> bool:
        # plain strings: the indexer asks this of tens of thousands of digests per pass
        return os.path.isfile(f"{self._blobs}{os.sep}{cid}") or os.path.isfile(
            f"{self._refs}{os.sep}{cid}"
        )

    def cids(self) -> list[Cid]:
        """Every CID in the store, copied or referenced, sorted (files that are not
        named by a CID are skipped)."""
        found: set[Cid] = set()
        for folder in (self.root / "blobs", self.root / "refs"):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith(".") or not entry.is_file():
                    continue  # a write in progress (.incoming-*) or something else
                try:
                    found.add(Cid.parse(entry.name))
                except InputError:
                    continue
        return sorted(found, key=str)

    def reference(self, cid: Cid) -> dict[str, Any] | None:
        """What the store recorded of a file it holds by reference (``path``,
        ``size``, ``mtime_ns``, ``cid``), or None."""
        where = Path(f"{self._refs}{os.sep}{cid}")
        try:
            record = json.loads(_read_regular(where, limit=_REFERENCE_LIMIT))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            raise IntegrityError(
                f"the store's reference {where} is unreadable ({_first_line(exc)})",
                hint="store the weights file again (`ledger sync` re-stores pending records)",
            ) from None
        if not (
            isinstance(record, dict)
            and isinstance(record.get("path"), str)
            and isinstance(record.get("size"), int)
            and isinstance(record.get("mtime_ns"), int)
            and record.get("cid") == str(cid)
        ):
            raise IntegrityError(
                f"the store's reference {where} is not a reference to {cid}",
                hint="store the weights file again",
            )
        return record

    def file_for(self, cid: Cid) -> Path:
        """The file holding ``cid``'s bytes: the store's copy, else the referenced
        file, checked to be where it was and unchanged in size and mtime (not
        re-hashed: whoever reads it re-hashes)."""
        copy = self.path_for(cid)
        if copy.is_file():
            return copy
        record = self.reference(cid)
        if record is None:
            raise self._missing(cid)
        return self._referenced(cid, record)

    def _missing(self, cid: Cid) -> ArtifactNotFoundError:
        return ArtifactNotFoundError(
            f"artifact {cid} is not in the store at {self.root}",
            hint="it may live in another store; copy it here or configure that store",
        )

    def _referenced(self, cid: Cid, record: dict[str, Any]) -> Path:
        path = Path(record["path"])
        try:
            info = os.stat(path)
        except ValueError:  # a NUL in the recorded path: no file can be there
            raise IntegrityError(
                f"the store's reference to {cid} names no possible path ({record['path']!r})",
                hint="store the weights file again",
            ) from None
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"artifact {cid} is stored by reference to {path}, which is gone"
                " (moved or deleted)",
                hint="put the file back at that path; the store keeps no copy of it"
                " (LEDGER_STORE_WEIGHTS=reference)",
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}, which holds artifact {cid}: {exc}") from exc
        changed = []
        if info.st_size != record["size"]:
            changed.append(f"size {record['size']} -> {info.st_size} bytes")
        if info.st_mtime_ns != record["mtime_ns"]:
            changed.append(f"mtime_ns {record['mtime_ns']} -> {info.st_mtime_ns}")
        if changed:
            raise IntegrityError(
                f"artifact {cid} is stored by reference to {path}, which changed since it"
                f" was stored ({', '.join(changed)})",
                hint="restore that file from another copy; the store keeps no copy of it"
                " (LEDGER_STORE_WEIGHTS=reference)",
            )
        return path

    def put_bytes(self, data: bytes) -> Cid:
        cid = bytes_cid(data)
        target = self.path_for(cid)
        if target.is_file() and target.read_bytes() == data:
            return cid  # already stored intact; a damaged copy is rewritten below
        self._write_atomically(target, lambda handle: handle.write(data))
        return cid

    def put_file(self, path: Path) -> Cid:
        """Store a file's bytes (copied or referenced, per the mode); returns its CIDv1."""
        return self.put_weights(path)[0]

    def put_weights(
        self, path: Path, spans: Sequence[tuple[int, int]] = ()
    ) -> tuple[Cid, list[bytes]]:
        link, digests = self.put_weights_link(path, spans)
        return link.cid, digests

    def put_weights_link(
        self,
        path: Path,
        spans: Sequence[tuple[int, int]] = (),
        hashers: Sequence[Any] | None = None,
    ) -> tuple[Link, list[bytes]]:
        """Store the file at ``path`` from one read of it; returns its CIDv1 and the
        sha256 of each of ``spans`` (offset, length: its tensors' bytes, see
        :func:`ledger.hashing.tensors.tensor_plan`).

        In copy mode the file is cloned (FICLONE) and the clone hashed, or else
        written as it is read; in reference mode it is only read, and its path,
        size and mtime recorded under ``refs/``. A file whose size or mtime
        changes meanwhile is refused (:class:`~ledger.errors.StoreError`), and
        nothing lands under a CID.

        Returns the file's UnixFS root link (what a folder's node links to).
        ``hashers``, one per span, may be shared by spans of several files (a
        sharded checkpoint's tensor, its rows in several shard files): they are
        fed in order and left open, see :func:`~ledger.hashing._onepass.hash_and_copy`.
        """
        shown = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileMissingError(f"no file at {shown!r}") from None
        except OSError as exc:
            raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise FileMissingError(f"{shown!r} is not a regular file")
            if self.weights == "reference":
                link, digests = self._hash(fd, before.st_size, spans, path, hashers)
                _check_same(path, before, os.fstat(fd))
                if not os.path.isfile(self.path_for(link.cid)):
                    self._write_reference(link.cid, path, before)
                return link, digests
            return self._copy(fd, before, spans, path, hashers)
        finally:
            os.close(fd)

    def _hash(
        self,
        fd: int,
        size: int,
        spans: Sequence[tuple[int, int]],
        path: Path,
        hashers: Sequence[Any] | None = None,
    ) -> tuple[Link, list[bytes]]:
        try:
            return hash_and_copy(fd, size, spans=spans, hashers=hashers)
        except OSError as exc:
            raise InputError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from exc

    def _copy(
        self,
        src: int,
        before: os.stat_result,
        spans: Sequence[tuple[int, int]],
        path: Path,
        hashers: Sequence[Any] | None = None,
    ) -> tuple[Link, list[bytes]]:
        folder = Path(self._blobs)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".incoming-{os.getpid()}-{os.urandom(6).hex()}"
            dst = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise self._write_error(exc) from exc
        try:
            if _clone(dst, src):  # the clone cannot change under us: hash it, not the source
                link, digests = self._hash(dst, before.st_size, spans, path, hashers)
            else:

                def sink(block: memoryview) -> None:
                    try:
                        _write_all(dst, block)
                    except OSError as exc:
                        raise self._write_error(exc) from exc

                try:
                    link, digests = hash_and_copy(
                        src, before.st_size, spans=spans, sink=sink, hashers=hashers
                    )
                except OSError as exc:  # the sink's own errors arrive as StoreErrors
                    raise InputError(
                        f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}"
                    ) from exc
            cid = link.cid
            _check_same(path, before, os.fstat(src))
            target = self.path_for(cid)
            if os.path.isfile(target):  # already stored: the clone or copy goes
                os.close(dst)
                dst = -1
                tmp.unlink()
                return link, digests
            os.fsync(dst)
            os.close(dst)
            dst = -1
            os.replace(tmp, target)
            if self._deferred is not None:
                self._deferred.add(folder)
            else:
                _fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._write_error(exc) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if dst >= 0:
                os.close(dst)
        return link, digests

    def _write_reference(self, cid: Cid, path: Path, info: os.stat_result) -> None:
        record = {
            "cid": str(cid),
            "path": os.path.abspath(path),
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
        }
        data = json.dumps(record, sort_keys=True).encode() + b"\n"
        self._write_atomically(
            Path(f"{self._refs}{os.sep}{cid}"), lambda handle: handle.write(data)
        )

    def get_bytes(self, cid: Cid) -> bytes:
        path = self.path_for(cid)
        try:
            data = _read_regular(path)
        except FileNotFoundError as exc:
            record = self.reference(cid)
            if record is None:
                raise self._missing(cid) from exc
            return self._get_referenced(cid, record)
        except ValueError as exc:  # not a regular file, or it grew as it was read
            raise IntegrityError(
                f"stored artifact {cid} is damaged ({exc})",
                hint=f"the file {path} was changed on disk; restore it from another copy",
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read stored artifact {cid} at {path}: {exc}") from exc
        actual = bytes_cid(data, cid_version=cid.version)
        if actual != cid:  # codec too: a dag-pb root's block must not pass as raw bytes
            raise IntegrityError(
                f"stored artifact {cid} no longer matches its CID (now {actual})",
                hint=f"the file {path} was changed on disk; restore it from another copy",
            )
        return data

    @contextlib.contextmanager
    def synced_together(self) -> Iterator[None]:
        """Writes inside the block sync their folder once, as the block ends.

        Each artifact file is still fsynced before it is renamed into place; the
        folder entries (the renames) are made durable by one fsync of the folder
        when the block ends, not one per artifact. Whoever records that the
        artifacts are stored must do so after the block.
        """
        outer = self._deferred is not None
        if not outer:
            self._deferred = set()
        try:
            yield
        finally:
            if not outer:
                folders, self._deferred = self._deferred or set(), None
                try:
                    for folder in sorted(folders):
                        _fsync_dir(folder)
                except OSError as exc:
                    raise self._write_error(exc) from exc

    def _write_atomically(self, target: Path, write: Callable[[IO[bytes]], object]) -> None:
        folder = target.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".incoming-{os.getpid()}-{os.urandom(6).hex()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with open(fd, "wb") as handle:
                    write(handle)
                    handle.flush()
                    os.fsync(fd)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, target)
            if self._deferred is not None:
                self._deferred.add(folder)
            else:
                _fsync_dir(folder)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _write_error(self, exc: OSError) -> StoreError:
        """A failed write as the outbox needs it: a full disk (or quota, or a failing
        device) is retried once there is room; anything else is for good."""
        if exc.errno in _FULL:
            return StoreFullError(
                f"cannot write to the store at {self.root}: {exc.strerror or exc}",
                hint="free space on that disk; records wait in the outbox and are stored "
                "once there is room (`ledger sync` finishes them)",
            )
        return StoreError(f"cannot write to the store at {self.root}: {exc}")

    def _get_referenced(self, cid: Cid, record: dict[str, Any]) -> bytes:
        path = self._referenced(cid, record)
        try:  # what was recorded, and one byte more to see that it grew
            data = _read_regular(path, limit=int(record["size"]))
        except ValueError as exc:  # not a regular file (a FIFO, a device), or grew
            raise IntegrityError(
                f"artifact {cid} is stored by reference to {path}, which changed since it"
                f" was stored ({exc})",
                hint="restore that file from another copy; the store keeps no copy of it"
                " (LEDGER_STORE_WEIGHTS=reference)",
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}, which holds artifact {cid}: {exc}") from exc
        actual = bytes_cid(data, cid_version=cid.version)
        if actual != cid:
            raise IntegrityError(
                f"artifact {cid} is stored by reference to {path}, whose bytes changed"
                f" (they hash to {actual}; size and mtime as recorded)",
                hint="restore that file from another copy; the store keeps no copy of it"
                " (LEDGER_STORE_WEIGHTS=reference)",
            )
        return data


_REFERENCE_LIMIT = 64 * 1024
"""Largest reference record read (a path and three fields: far below this)."""


def _read_regular(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (None: its
    size as it is opened); ValueError if it is not a regular file (opened without
    waiting: a FIFO does not block) or holds more than ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        limit = info.st_size if limit is None else limit
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes")
    return data


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _check_same(path: Path, before: os.stat_result, after: os.stat_result) -> None:
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise StoreError(
            f"{os.fspath(path)} changed while it was being stored; store it again",
            hint="write each checkpoint to a new file and leave it alone once handed over",
        )


def _clone(dst: int, src: int) -> bool:
    """Make ``dst`` a copy-on-write clone of ``src`` where the filesystem can
    (``FICLONE``); False (and ``dst`` left empty) where it cannot."""
    try:
        import fcntl

        fcntl.ioctl(dst, _FICLONE, src)
    except (ImportError, OSError):  # not Linux, another filesystem, across mounts...
        return False
    return True


def _write_all(fd: int, block: memoryview) -> None:
    """Write the whole of ``block`` to ``fd``."""
    done = 0
    while done < len(block):
        with block[done:] as rest:
            done += os.write(fd, rest)


# write errors that say "no room (yet)", not "never": full disk, quota, failing device
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

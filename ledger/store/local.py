"""The embedded store: one file per artifact in ``<data dir>/store``, written to a
temporary file, fsynced and renamed into place, so a crash never leaves a partial
artifact under a CID."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ledger.errors import (
    ArtifactNotFoundError,
    InputError,
    IntegrityError,
    StoreError,
    StoreFullError,
)
from ledger.hashing.cid import Cid, bytes_cid, file_cid


class LocalStore:
    """Artifacts as files named by their CID under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = str(self.root / "blobs")
        self._deferred: set[Path] | None = None  # folders to fsync (see synced_together)

    def path_for(self, cid: Cid) -> Path:
        return Path(f"{self._blobs}{os.sep}{cid}")

    def has(self, cid: Cid) -> bool:
        # plain strings: the indexer asks this of tens of thousands of digests per pass
        return os.path.isfile(f"{self._blobs}{os.sep}{cid}")

    def cids(self) -> list[Cid]:
        """Every CID in the store, sorted (files that are not named by a CID are skipped)."""
        folder = self.root / "blobs"
        if not folder.is_dir():
            return []
        found: list[Cid] = []
        for entry in folder.iterdir():
            if entry.name.startswith(".") or not entry.is_file():
                continue  # a write in progress (.incoming-*) or something else
            try:
                found.append(Cid.parse(entry.name))
            except InputError:
                continue
        return sorted(found, key=str)

    def put_bytes(self, data: bytes) -> Cid:
        cid = bytes_cid(data)
        target = self.path_for(cid)
        if target.is_file() and target.read_bytes() == data:
            return cid  # already stored intact; a damaged copy is rewritten below
        self._write_atomically(target, lambda handle: handle.write(data))
        return cid

    def put_file(self, path: Path) -> Cid:
        cid = file_cid(path)
        target = self.path_for(cid)
        if target.is_file():
            return cid

        def copy(handle: IO[bytes]) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)

        self._write_atomically(target, copy)
        # The source may have changed while we copied: re-hash what landed.
        if file_cid(target) != cid:
            target.unlink(missing_ok=True)
            raise StoreError(f"{path} changed while it was being stored; store it again")
        return cid

    def get_bytes(self, cid: Cid) -> bytes:
        path = self.path_for(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"artifact {cid} is not in the store at {self.root}",
                hint="it may live in another store; copy it here or configure that store",
            ) from exc
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


# write errors that say "no room (yet)", not "never": full disk, quota, failing device
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

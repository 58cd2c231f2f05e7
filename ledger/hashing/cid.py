"""IPFS content identifiers (CIDs) for files, equal to what ``ipfs add`` prints.

A CID names content by its hash. For a file, IPFS does not hash the bytes in one
go: the UnixFS importer cuts the file into 256 KiB chunks, hashes each as a leaf
block, and links the leaves into a balanced tree of dag-pb nodes (at most 174
links each); the CID is the hash of the tree's root block. So the CID depends on
the file's bytes *and* on those import settings, which is why ledger names the
settings it uses with a scheme string stored beside every CID:

* ``cidv1-raw-sha256-256k`` (:data:`CIDV1_SCHEME`, the default): what
  ``ipfs add --cid-version=1 --only-hash FILE`` prints, a ``bafy...`` (or, for a
  file of at most one chunk, ``bafk...``) CID. Leaves are raw blocks.
* ``cidv0-dagpb-sha256-256k`` (:data:`CIDV0_SCHEME`): what plain
  ``ipfs add --only-hash FILE`` prints with Kubo's default settings, a ``Qm...``
  CID. Leaves are dag-pb nodes wrapping the chunk.

* ``cidv1-raw-sha256-1m-unixfs-v1-2025`` (:data:`UNIXFS_V1_2025_SCHEME`): Kubo's
  IPIP-499 profile ``unixfs-v1-2025`` (``ipfs config profile apply
  unixfs-v1-2025``): CIDv1, raw leaves, 1 MiB chunks, 1,024 links per file
  node, and folders sharded by their exact block size (below).

Folders: :func:`path_cid` gives what ``ipfs add -r -Q PATH`` prints, with the
same settings. As ``ipfs add -r`` does by default:

* hidden entries (a name starting with ``.``), files and folders alike, are
  skipped unless ``hidden=True`` (``ipfs add -r --hidden``); PATH itself is
  always added, whatever its name;
* a symbolic link *inside* the folder is added as a UnixFS symlink node holding
  its target (not followed, dangling or not); PATH itself is followed if it is
  a link (like ``--dereference-args``: naming a link means what it points to);
* empty folders and empty files are kept; sockets, FIFOs and devices are
  refused, as Kubo refuses them.

A folder becomes a dag-pb directory node whose links, sorted by name, point at
its entries. When that node would be too large, Kubo stores the folder as a
HAMT with 256 slots per node (:mod:`ledger.hashing._hamt`) instead. The default
profiles follow Kubo's default estimate (``Import.UnixFSHAMTDirectorySizeEstimation
= links``): the sum over entries of the name's bytes plus the entry's binary CID;
``unixfs-v1-2025`` uses the serialized size of the directory block itself
(``block``). Either way the folder is sharded when the estimate is *over*
256 KiB (a folder at exactly 262,144 bytes stays plain, as in current Kubo and
boxo since IPIP-499). js-ipfs (the IPFS node the tests run) shards by entry
count (over 1,000) instead; where the two differ, ledger follows Kubo.

These functions compute the very same blocks Kubo (formerly go-ipfs) would
build, byte for byte, and hash them with sha2-256, but store nothing and talk
to no IPFS node. They treat the file as opaque bytes: nothing is unpickled,
parsed or executed. :func:`file_cid` hashes the file with the engine in
:mod:`ledger.hashing._engine`: every core reads and hashes its own blocks into a
reused buffer, memory bounded whatever the file size; ``workers=1``
gives the single-threaded path, with the same result. The result
is checked against public test vectors from Kubo and other IPFS projects in
``tests/hashing/test_cid_vectors.py``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Literal, Protocol

from ledger.errors import FileMissingError, InputError
from ledger.hashing._engine import (
    READ_BLOCK,
    Progress,
    Whole,
    default_workers,
    hash_file_parallel,
    hash_stream_parallel,
)
from ledger.hashing._hamt import DEFAULT_FANOUT, shard_link
from ledger.hashing._multiformats import DAG_PB, RAW, Cid
from ledger.hashing._unixfs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_LINKS,
    DIRECTORY_DATA,
    Link,
    UnixFsHasher,
    dag_node_link,
    encode_pb_node,
    symlink_link,
)

__all__ = [
    "CIDV0_SCHEME",
    "CIDV1_SCHEME",
    "DAG_PB",
    "DEFAULT_CHUNK_SIZE",
    "PROFILES",
    "RAW",
    "UNIXFS_V1_2025_SCHEME",
    "Cid",
    "ImportProfile",
    "LinkCache",
    "PathSummary",
    "Progress",
    "UnixFsHasher",
    "bytes_cid",
    "default_workers",
    "file_cid",
    "import_profile",
    "path_cid",
    "path_summary",
    "scheme_for",
]

CIDV1_SCHEME = "cidv1-raw-sha256-256k"
"""``ipfs add --cid-version=1``: CIDv1, raw leaves, sha2-256, 256 KiB chunks, balanced."""

CIDV0_SCHEME = "cidv0-dagpb-sha256-256k"
"""``ipfs add`` (Kubo defaults): CIDv0, dag-pb leaves, sha2-256, 256 KiB chunks, balanced."""

UNIXFS_V1_2025_SCHEME = "cidv1-raw-sha256-1m-unixfs-v1-2025"
"""Kubo's ``unixfs-v1-2025`` profile (IPIP-499): CIDv1, raw leaves, 1 MiB chunks,
1,024 links per node, folders sharded (fanout 256) over 256 KiB of directory block."""

_SCHEMES = {1: CIDV1_SCHEME, 0: CIDV0_SCHEME}

HAMT_THRESHOLD = 262144
"""Kubo's ``Import.UnixFSHAMTDirectorySizeThreshold``: 256 KiB, in both profiles."""


@dataclass(frozen=True, slots=True)
class ImportProfile:
    """The ``ipfs add`` settings a CID depends on, under the scheme name that records them."""

    scheme: str
    cid_version: int
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = DEFAULT_MAX_LINKS
    hamt_threshold: int = HAMT_THRESHOLD
    """A folder whose size estimate is over this many bytes is sharded."""
    hamt_fanout: int = DEFAULT_FANOUT
    estimate: Literal["links", "block"] = "links"
    """``links``: names plus binary CIDs (Kubo's default); ``block``: the directory block."""


PROFILES = {
    CIDV1_SCHEME: ImportProfile(CIDV1_SCHEME, 1),
    CIDV0_SCHEME: ImportProfile(CIDV0_SCHEME, 0),
    UNIXFS_V1_2025_SCHEME: ImportProfile(
        UNIXFS_V1_2025_SCHEME, 1, chunk_size=1 << 20, max_links=1024, estimate="block"
    ),
}
"""Every profile by scheme name."""

PROFILE_NAMES = {
    "unixfs-v1-2025": UNIXFS_V1_2025_SCHEME,
    "unixfs-v0-2015": CIDV0_SCHEME,  # IPIP-499's name for Kubo's historical defaults
}
"""Kubo's profile names (``--profile``) and the scheme each is recorded under."""


def import_profile(cid_version: int | None = None, profile: str | None = None) -> ImportProfile:
    """The settings for ``profile`` (a Kubo profile name or a scheme), else for ``cid_version``.

    Without either: CIDv1 (:data:`CIDV1_SCHEME`). A profile fixes the CID
    version itself: asking for another one as well is refused.
    """
    if profile is None:
        return PROFILES[scheme_for(1 if cid_version is None else cid_version)]
    chosen = PROFILES.get(PROFILE_NAMES.get(profile, profile))
    if chosen is None:
        known = ", ".join([*PROFILE_NAMES, *PROFILES])
        raise InputError(f"unknown import profile {profile!r}", hint=f"known: {known}")
    if cid_version is not None and chosen.cid_version != cid_version:
        raise InputError(
            f"profile {profile!r} makes CIDv{chosen.cid_version}; "
            f"it cannot be combined with CID version {cid_version}",
            hint="leave the CID version out when you name a profile",
        )
    return chosen


def scheme_for(cid_version: int) -> str:
    """The scheme name recorded next to a CID computed with ``cid_version``."""
    try:
        return _SCHEMES[cid_version]
    except (KeyError, TypeError):
        raise InputError(
            f"cid_version must be 0 or 1, got {cid_version!r}",
            hint=f"1 gives {CIDV1_SCHEME}, 0 gives {CIDV0_SCHEME}",
        ) from None


def bytes_cid(data: bytes, *, cid_version: int = 1) -> Cid:
    """The CID ``ipfs add`` would give a file holding exactly ``data``."""
    hasher = UnixFsHasher(cid_version)
    hasher.update(data)
    return hasher.finalize()


def file_cid(
    path: str | os.PathLike[str],
    *,
    cid_version: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    profile: str | None = None,
) -> Cid:
    """The CID ``ipfs add --only-hash`` would give the regular file at ``path``.

    ``cid_version`` (default 1) or ``profile`` (see :func:`import_profile`)
    choose the settings. Blocks are read and hashed on ``workers`` threads
    (default: one per core; ``1`` reads and hashes on the calling thread, the
    reference path). ``progress``, if given, is called on the calling thread
    with the number of bytes hashed since its last call.

    Raises :class:`~ledger.errors.FileMissingError` if ``path`` does not exist or
    is not a regular file (e.g. a directory: see :func:`path_cid`), and
    :class:`~ledger.errors.InputError` if it cannot be read.
    """
    chosen = import_profile(cid_version, profile)  # refuses bad settings before the file
    shown = os.fspath(path)
    info = _stat(path, follow=True)
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise FileMissingError(
            f"{shown!r} is {kind}; a CID is computed for one regular file",
            hint="'ledger cid' takes a folder too (what 'ipfs add -r' prints)"
            if stat.S_ISDIR(info.st_mode)
            else None,
        )
    return _file_link(path, info.st_size, chosen, workers, progress).cid


def file_cid_and_sha256(
    path: str | os.PathLike[str], *, workers: int | None = None
) -> tuple[Cid, str]:
    """:func:`file_cid` (default settings) and the file's sha256 (hex), from one read.

    The sha256 is fed each block the CID's workers read, in file order (see
    :func:`~ledger.hashing._engine.hash_file_parallel`): what a provenance
    bundle's subject needs, for about the cost of the CID alone plus one core's
    sha256 spread over the others' work.
    """
    import hashlib

    chosen = import_profile(None, None)
    shown = os.fspath(path)
    info = _stat(path, follow=True)
    if not stat.S_ISREG(info.st_mode):
        raise FileMissingError(f"{shown!r} is not a regular file")
    whole = hashlib.sha256()
    link = _file_link(path, info.st_size, chosen, workers, None, whole)
    return link.cid, whole.hexdigest()


def _stat(path: str | os.PathLike[str], *, follow: bool) -> os.stat_result:
    shown = os.fspath(path)
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise FileMissingError(f"no file at {shown!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc


def _file_link(
    path: str | os.PathLike[str],
    size: int,
    chosen: ImportProfile,
    workers: int | None,
    progress: Progress | None,
    whole: Whole | None = None,
    *,
    follow: bool = True,
) -> Link:
    """The UnixFS link of the file at ``path`` (``follow`` False: an entry a folder
    walk found, which must not have turned into a link since)."""
    shown = os.fspath(path)
    chunk_size = chosen.chunk_size
    try:
        # found as a regular file by the walk: opened without following a link or
        # waiting on a FIFO that replaced it since, and checked to be one still
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        fd = os.open(path, flags)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InputError(f"{shown!r} changed into something other than a file; try again")
        os.set_blocking(fd, True)
        with open(fd, "rb", buffering=0) as stream:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if workers == 1 or size <= READ_BLOCK:
                # the reference path; for one block, threads and a full-size buffer cost more
                chunks = max(1, -(-min(size, READ_BLOCK) // chunk_size))
                root = hash_stream_parallel(
                    stream,
                    chosen.cid_version,
                    workers=1 if workers is None or workers >= 1 else workers,
                    chunk_size=chunk_size,
                    read_block=chunks * chunk_size,
                    progress=progress,
                    max_links=chosen.max_links,
                    whole=whole,
                )
            else:
                root = hash_file_parallel(
                    stream.fileno(),
                    size,
                    chosen.cid_version,
                    workers=workers,
                    chunk_size=chunk_size,
                    progress=progress,
                    max_links=chosen.max_links,
                    whole=whole,
                )
            if os.fstat(stream.fileno()).st_size != size:
                raise InputError(f"{shown!r} changed size while it was being hashed; try again")
    except FileNotFoundError:
        raise FileMissingError(f"{shown!r} disappeared while it was being read") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
    return root


def path_cid(
    path: str | os.PathLike[str],
    *,
    cid_version: int | None = None,
    profile: str | None = None,
    hidden: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    cache: LinkCache | None = None,
) -> Cid:
    """What ``ipfs add -r -Q --only-hash PATH`` prints: a file's CID or a folder's.

    Settings as for :func:`file_cid`; ``hidden=True`` is ``--hidden``. What
    is skipped, followed or refused is in the module docstring. Files are
    hashed on ``workers`` threads; ``progress`` gets the bytes of every file.
    ``cache`` keeps each file's result by its status (:class:`LinkCache`).
    Raises :class:`~ledger.errors.FileMissingError` if ``path`` does not exist
    and :class:`~ledger.errors.InputError` naming the entry that cannot be
    read or added.
    """
    return path_summary(
        path,
        cid_version=cid_version,
        profile=profile,
        hidden=hidden,
        workers=workers,
        progress=progress,
        cache=cache,
    ).cid


class LinkCache(Protocol):
    """Keeps a file's root link by its status: what an unchanged file hashed to.

    ``get`` answers only while the status (device, inode, size, modification
    and change times) is the one ``put`` was given; see
    :class:`ledger.record.data.FingerprintCache`.
    """

    def get(self, info: os.stat_result, scheme: str) -> Link | None: ...

    def put(self, info: os.stat_result, scheme: str, link: Link) -> None: ...


@dataclass(frozen=True, slots=True)
class PathSummary:
    """A file's or folder's CID, with the regular files it holds and their bytes."""

    cid: Cid
    files: int
    bytes: int
    folder: bool


def path_summary(
    path: str | os.PathLike[str],
    *,
    cid_version: int | None = None,
    profile: str | None = None,
    hidden: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    cache: LinkCache | None = None,
) -> PathSummary:
    """:func:`path_cid`, with the number of regular files added and their total bytes."""
    chosen = import_profile(cid_version, profile)
    info = _stat(path, follow=True)
    if stat.S_ISREG(info.st_mode):
        link = cache.get(info, chosen.scheme) if cache is not None else None
        if link is None:
            link = _file_link(path, info.st_size, chosen, workers, progress)
            if cache is not None:
                cache.put(info, chosen.scheme, link)
        return PathSummary(link.cid, 1, info.st_size, folder=False)
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(
            f"{os.fspath(path)!r} is neither a file nor a folder; "
            "'ipfs add' refuses sockets, FIFOs and devices too"
        )
    hasher = _FolderHasher(chosen, hidden, workers, progress, cache)
    cid = hasher.folder(os.fspath(path)).cid
    return PathSummary(cid, hasher.file_count, hasher.byte_count, folder=True)


_Folder = list[tuple[bytes, "Link | int | _Folder"]]
"""A walked folder: per entry its name and its link (symlink), file number or sub-folder."""


class _FolderHasher:
    """Walks one folder; hashes its files on a pool, then builds the directory nodes."""

    def __init__(
        self,
        chosen: ImportProfile,
        hidden: bool,
        workers: int | None,
        progress: Progress | None,
        cache: LinkCache | None = None,
    ) -> None:
        self.profile = chosen
        self.hidden = hidden
        self.workers = default_workers() if workers is None else max(1, workers)
        self.progress = progress
        self.cache = cache
        self.file_count = 0
        self.byte_count = 0

    def folder(self, root: str) -> Link:
        files: list[tuple[str, int]] = []
        infos: list[os.stat_result] = []
        tree = self._walk(root, files, infos)
        self.file_count = len(files)
        self.byte_count = sum(size for _, size in files)
        links = self._cached_files(files, infos)
        return self._build(tree, links)

    def _cached_files(
        self, files: list[tuple[str, int]], infos: list[os.stat_result]
    ) -> list[Link]:
        """The files' links: from the cache where a file's status is unchanged, else hashed."""
        cache, scheme = self.cache, self.profile.scheme
        if cache is None:
            return self._hash_files(files)
        links = [cache.get(info, scheme) for info in infos]
        missing = [index for index, link in enumerate(links) if link is None]
        hashed = self._hash_files([files[index] for index in missing])
        for index, link in zip(missing, hashed, strict=True):
            links[index] = link
            cache.put(infos[index], scheme, link)
        return [link for link in links if link is not None]

    def _walk(
        self, folder: str, files: list[tuple[str, int]], infos: list[os.stat_result] | None = None
    ) -> _Folder:
        """The folder's entries, depth first; regular files are queued in ``files``."""
        entries: _Folder = []
        stack: list[tuple[str, _Folder]] = [(folder, entries)]
        while stack:
            current, into = stack.pop()
            try:
                scan = list(os.scandir(current))
            except OSError as exc:
                raise InputError(f"cannot list {current!r}: {exc.strerror or exc}") from exc
            for entry in scan:
                name = os.fsencode(entry.name)
                if not self.hidden and name.startswith(b"."):
                    continue
                info = _stat(entry.path, follow=False)
                if stat.S_ISLNK(info.st_mode):
                    try:
                        target = os.readlink(os.fsencode(entry.path))
                    except OSError as exc:
                        raise InputError(
                            f"cannot read the link {entry.path!r}: {exc.strerror or exc}"
                        ) from exc
                    into.append((name, symlink_link(target, self.profile.cid_version)))
                elif stat.S_ISREG(info.st_mode):
                    into.append((name, len(files)))
                    files.append((entry.path, info.st_size))
                    if infos is not None:
                        infos.append(info)
                elif stat.S_ISDIR(info.st_mode):
                    sub: _Folder = []
                    into.append((name, sub))
                    stack.append((entry.path, sub))
                else:
                    raise InputError(
                        f"{entry.path!r} is neither a file, a folder nor a symbolic link; "
                        "'ipfs add -r' refuses it too",
                        hint="move it out of the folder (or hide it: a leading '.')",
                    )
        return entries

    def _hash_files(self, files: list[tuple[str, int]]) -> list[Link]:
        chosen, progress = self.profile, self.progress
        small = [index for index, (_, size) in enumerate(files) if size <= READ_BLOCK]
        links: list[Link | None] = [None] * len(files)
        for index, (path, size) in enumerate(files):
            if size > READ_BLOCK:  # a large file: every core on its blocks
                links[index] = _file_link(path, size, chosen, self.workers, progress, follow=False)
        if self.workers == 1 or len(small) < 2:
            for index in small:
                links[index] = _file_link(*files[index], chosen, 1, progress, follow=False)
        else:  # small files: one per thread (hashlib and reads release the GIL)
            from concurrent.futures import ThreadPoolExecutor

            def one(index: int) -> Link:
                return _file_link(*files[index], chosen, 1, None, follow=False)

            with ThreadPoolExecutor(self.workers, thread_name_prefix="ledger-hash") as pool:
                for index, link in zip(small, pool.map(one, small), strict=True):
                    links[index] = link
                    if progress is not None:
                        progress(files[index][1])
        return [link for link in links if link is not None]

    def _build(self, tree: _Folder, files: list[Link]) -> Link:
        """The folder's node, built bottom up with an explicit stack: a tree nested
        thousands deep must not exhaust Python's recursion (the walk has none)."""
        built: dict[int, Link] = {}  # id of a subfolder's entries -> its node
        pending: list[tuple[_Folder, bool]] = [(tree, False)]
        while pending:
            folder, children_done = pending.pop()
            if not children_done:
                pending.append((folder, True))
                pending.extend((item, False) for _, item in folder if isinstance(item, list))
                continue
            links: list[tuple[bytes, Link]] = []
            for name, item in folder:
                if isinstance(item, Link):
                    links.append((name, item))
                elif isinstance(item, int):
                    links.append((name, files[item]))
                else:
                    links.append((name, built.pop(id(item))))
            chosen = self.profile
            if _estimate(links, chosen) > chosen.hamt_threshold:
                node = shard_link(links, chosen.cid_version, fanout=chosen.hamt_fanout)
            else:
                node = dag_node_link(links, DIRECTORY_DATA, chosen.cid_version)
            built[id(folder)] = node
        return built[id(tree)]


def _estimate(links: list[tuple[bytes, Link]], chosen: ImportProfile) -> int:
    """Kubo's size estimate of the plain directory node holding ``links``."""
    if chosen.estimate == "links":
        return sum(len(name) + len(link.cid.to_bytes()) for name, link in links)
    return len(encode_pb_node(links, DIRECTORY_DATA))

"""Artifacts in an IPFS node, through its Kubo RPC API.

:class:`IpfsStore` is the :class:`~ledger.store.ArtifactStore` that teams share:
every artifact goes to an IPFS node (Kubo, or any node serving the same
``/api/v0`` API) under the very CID that ledger records on chain. The node is
trusted for nothing:

* **adds** use the parameters of ledger's CID scheme (:data:`ADD_PARAMS`:
  CIDv1, raw leaves, 256 KiB chunks, sha2-256) and the bytes are hashed
  locally *as they are sent*; the node's CID must equal the local one, or the
  add is an :class:`~ledger.errors.IntegrityError` and nothing is pinned. Only
  then is the CID pinned (added unpinned first, so a refused add leaves only
  garbage the node may collect).
* **reads** re-hash what the node sent, codec included, before anyone sees it.
* a node that does not answer (refused, reset, timed out) is a
  :class:`~ledger.errors.StoreUnavailableError` naming its address: the
  outbox retries those later.

Files are streamed from disk to the node in 1 MiB pieces, and
:meth:`IpfsStore.get_file` streams from the node to disk, so memory does not
grow with the artifact. The HTTP client is :mod:`ledger.store._kubo`.

:meth:`IpfsStore.add_path` adds a dataset's file or folder as ``ipfs add -r``
does (any import profile, hidden entries or not), for ``ledger data add
--push``: the root CID the node answers must be the one ledger computed.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ledger.errors import (
    ArtifactNotFoundError,
    FileMissingError,
    InputError,
    IntegrityError,
    StoreError,
    StoreRefusedError,
)
from ledger.hashing._unixfs import DEFAULT_MAX_LINKS
from ledger.hashing.cid import (
    CIDV1_SCHEME,
    DEFAULT_CHUNK_SIZE,
    Cid,
    ImportProfile,
    UnixFsHasher,
    import_profile,
)
from ledger.store._kubo import (
    FILE_PART,
    FOLDER_PART,
    SYMLINK_PART,
    ApiAddress,
    KuboRpc,
    Part,
    parse_api_address,
)

DEFAULT_TIMEOUT = 60.0
"""Seconds one socket operation (connect, send a piece, wait for an answer) may take."""

DEFAULT_FIND_TIMEOUT = 20.0
"""Seconds the node may look for an artifact's root block before it counts as missing."""

ADD_PARAMS: list[tuple[str, str]] = [
    ("cid-version", "1"),
    ("raw-leaves", "true"),
    ("chunker", f"size-{DEFAULT_CHUNK_SIZE}"),
    ("hash", "sha2-256"),
    ("trickle", "false"),
    ("cid-base", "base32"),  # js-ipfs answers base58btc otherwise
    ("pin", "false"),  # pinned only once the CID is checked
    ("progress", "false"),
]
"""``ipfs add`` query parameters equal to :data:`~ledger.hashing.cid.CIDV1_SCHEME`."""

_PIECE = 1 << 20

_ROOT = b"dataset"
"""The name the root of an :meth:`IpfsStore.add_path` is sent under (a root's own
name is not part of its CID, so a fixed one spares encoding the real one)."""


def add_params(chosen: ImportProfile) -> list[tuple[str, str]]:
    """``ipfs add`` query parameters that import with ``chosen``'s settings.

    ``max-file-links`` is sent only where the profile departs from the default
    174 (Kubo 0.35 and later take it; js-ipfs ignores it). How a folder is
    sharded is the node's own configuration (Kubo's ``Import.UnixFSHAMT*``;
    js-ipfs shards by entry count): a node set otherwise answers another CID,
    which :meth:`IpfsStore.add_path` refuses.
    """
    params = [
        ("cid-version", str(chosen.cid_version)),
        ("raw-leaves", "true" if chosen.cid_version == 1 else "false"),
        ("chunker", f"size-{chosen.chunk_size}"),
        ("hash", "sha2-256"),
        ("trickle", "false"),
        ("wrap-with-directory", "false"),
    ]
    if chosen.max_links != DEFAULT_MAX_LINKS:
        params.append(("max-file-links", str(chosen.max_links)))
    if chosen.cid_version == 1:  # a CIDv0 has one text form; js-ipfs refuses base32 for it
        params.append(("cid-base", "base32"))
    return [*params, ("pin", "false"), ("progress", "false")]


Progress = Callable[[int], None]


class IpfsStore:
    """Artifacts pinned in the IPFS node whose RPC API is at ``api``.

    Creating the store does not contact the node; every call does, with
    ``timeout`` seconds per socket operation. A read first asks the node for
    the artifact's root block, giving it ``find_timeout`` seconds (an IPFS
    node looks for a missing block until told to stop); the transfer that
    follows has no overall limit, so large artifacts are not cut short.
    """

    def __init__(
        self,
        api: str | ApiAddress,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        find_timeout: float = DEFAULT_FIND_TIMEOUT,
    ) -> None:
        self.address = api if isinstance(api, ApiAddress) else parse_api_address(api)
        self._rpc = KuboRpc(self.address, timeout=timeout)
        self.find_timeout = min(find_timeout, timeout / 2)

    def __repr__(self) -> str:
        return f"IpfsStore({self.address.text!r})"

    # -- ArtifactStore ----------------------------------------------------------

    def put_bytes(self, data: bytes) -> Cid:
        view = memoryview(data)
        pieces = (view[i : i + _PIECE] for i in range(0, len(view), _PIECE))
        return self._add(pieces, "artifact", expected=None, progress=None)

    def put_file(
        self, path: Path, *, expected: Cid | None = None, progress: Progress | None = None
    ) -> Cid:
        """Stream ``path`` to the node; returns its CIDv1 once checked and pinned.

        ``expected``, if given, is the CID the file must have (e.g. its name in
        the local store): other bytes are refused before anything is pinned.
        ``progress`` is called with the number of bytes sent since its last call.
        """
        shown = os.fspath(path)
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise FileMissingError(f"no file at {shown!r}") from None
        except OSError as exc:
            raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
        with handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FileMissingError(f"{shown!r} is not a regular file; store one file at a time")
            cid = self._add(_read_pieces(handle, shown), Path(path).name, expected, progress)
            if os.fstat(handle.fileno()).st_size != info.st_size:
                raise StoreError(f"{shown} changed size while it was being stored; store it again")
        return cid

    def add_path(
        self,
        path: Path,
        expected: Cid,
        *,
        profile: str | None = None,
        hidden: bool = False,
    ) -> Cid:
        """Add a file, or a folder recursively, as ``ipfs add -r`` (``--hidden``) does
        with ``profile``'s settings; pin it once the node's root CID is ``expected``.

        What is sent follows :func:`ledger.hashing.cid.path_cid`: hidden entries
        only with ``hidden``, symbolic links inside as links (not followed), empty
        files and folders kept; anything else (a FIFO, a socket) is an
        :class:`~ledger.errors.InputError` that cuts the add short, nothing pinned.
        Parts are streamed, so memory does not grow with the dataset. A root CID other
        than ``expected`` (the data changed since it was fingerprinted, or the
        node imports otherwise) is an :class:`~ledger.errors.IntegrityError` and
        nothing is pinned.
        """
        chosen = import_profile(None, profile)
        return self._add_tree(_tree_parts(path, hidden), expected, chosen, os.fspath(path))

    def add_listing(self, files: Mapping[str, Path], expected: Cid, *, shown: str) -> Cid:
        """Add a flat folder whose entries are ``files`` ({name: the file that holds
        its bytes}), as ``ipfs add -r --hidden`` adds such a folder, without laying it
        out on disk; pin it once the node's root CID is ``expected``.

        Names must be plain (no ``/``, NUL, ``.`` or ``..``); each file must be a
        regular file, else an :class:`~ledger.errors.InputError` cuts the add short
        and nothing is pinned. ``shown`` names the folder in errors.
        """
        chosen = import_profile(None, None)
        return self._add_tree(_listing_parts(files), expected, chosen, shown)

    def _add_tree(
        self, parts: Iterator[Part], expected: Cid, chosen: ImportProfile, shown: str
    ) -> Cid:
        answers = self._rpc.upload_parts("add", add_params(chosen), parts, duplex=True)
        roots = [
            a["Hash"]
            for a in answers
            if isinstance(a, dict) and a.get("Name") == _ROOT.decode() and "Hash" in a
        ]
        if len(roots) != 1:
            raise StoreError(
                f"the IPFS node at {self.address} answered the add of {shown} with "
                f"{len(roots)} root CIDs instead of one"
            )
        try:
            node = Cid.parse(str(roots[0]))
        except InputError as exc:
            raise IntegrityError(
                f"the IPFS node at {self.address} filed {shown} under {roots[0]!r}, "
                f"which is not a CID ({exc.message}); it was not pinned"
            ) from exc
        if node != expected:
            raise IntegrityError(
                f"the IPFS node at {self.address} filed {shown} under {node}, but ledger "
                f"computed {expected} ({chosen.scheme}); it was not pinned",
                hint="if the data changed since it was fingerprinted, run the command again; "
                "otherwise the node imports with other settings (a Kubo node applies "
                "--profile unixfs-v1-2025 only with `ipfs config profile apply "
                "unixfs-v1-2025`; js-ipfs shards folders of over 1,000 entries and drops "
                "symbolic links, where Kubo does not): use a Kubo node",
            )
        self._rpc.call("pin/add", [("arg", str(node)), ("recursive", "true")])
        return node

    def get_bytes(self, cid: Cid) -> bytes:
        data = bytearray()
        self._fetch(cid, data.extend)
        return bytes(data)

    def has(self, cid: Cid) -> bool:
        """Whether the node pins ``cid`` itself (its codec too), as an add of ledger's does.

        Nodes look pins up by multihash and echo the CID they were asked about,
        so a raw CID would pass for a pinned dag-pb root with the same digest: a
        yes is confirmed against the node's list of recursive pins.
        """
        try:
            self._rpc.call("pin/ls", [("arg", str(cid)), ("type", "recursive")])
        except StoreRefusedError as exc:
            if "not pinned" in exc.node_message or "not found" in exc.node_message:
                return False
            raise
        return cid in self.pinned()

    # -- beyond the protocol ----------------------------------------------------

    def get_file(self, cid: Cid, target: Path, *, progress: Progress | None = None) -> None:
        """Stream ``cid`` into the file ``target``, which appears only once re-checked."""
        target = Path(target)
        try:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
                dir=target.parent, prefix=".incoming-", delete=False
            )
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        tmp = Path(handle.name)
        try:
            with handle:

                def write(piece: bytes) -> None:
                    handle.write(piece)
                    if progress is not None:
                        progress(len(piece))

                self._fetch(cid, write)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def pinned(self) -> set[Cid]:
        """Every CID the node pins recursively (what an add of ledger's pins)."""
        answer = self._rpc.call("pin/ls", [("type", "recursive")])
        keys: Any = answer.get("Keys", {}) if isinstance(answer, dict) else {}
        found: set[Cid] = set()
        for text in keys:
            try:
                found.add(Cid.parse(text))
            except InputError:  # a pin ledger did not make (another hash or codec)
                continue
        return found

    def children(self, folder: Cid) -> dict[str, Cid]:
        """The entries of a folder the node holds, by name (``ipfs ls``): what the
        node itself says the folder links to, with their CIDs."""
        answer = self._rpc.call("ls", [("arg", str(folder))])
        objects: Any = answer.get("Objects", []) if isinstance(answer, dict) else []
        found: dict[str, Cid] = {}
        for entry in objects if isinstance(objects, list) else []:
            links = entry.get("Links", []) if isinstance(entry, dict) else []
            for link in links if isinstance(links, list) else []:
                if not isinstance(link, dict):
                    continue
                try:
                    found[str(link["Name"])] = Cid.parse(str(link["Hash"]))
                except (KeyError, InputError):
                    continue
        return found

    def version(self) -> str:
        """The node's version string (also a cheap check that it answers)."""
        answer = self._rpc.call("version")
        return str(answer.get("Version", "?")) if isinstance(answer, dict) else "?"

    # -- internals --------------------------------------------------------------

    def _add(
        self,
        pieces: Iterator[bytes | memoryview],
        name: str,
        expected: Cid | None,
        progress: Progress | None,
    ) -> Cid:
        hasher = UnixFsHasher(1)

        def hashed() -> Iterator[bytes | memoryview]:
            for piece in pieces:
                hasher.update(piece)
                yield piece
                if progress is not None:
                    progress(len(piece))

        answers = self._rpc.upload("add", ADD_PARAMS, name, hashed())
        local = hasher.finalize()
        node = self._cid_from_add(answers, name)
        if node != local:
            raise IntegrityError(
                f"the IPFS node at {self.address} filed {name} under {node}, but ledger "
                f"computes {local} ({CIDV1_SCHEME}); it was not pinned",
                hint="the node imports with other settings (chunker, raw leaves, hash or DAG "
                "layout); use a Kubo-compatible node",
            )
        if expected is not None and local != expected:
            raise IntegrityError(
                f"{name} should have the CID {expected} but its bytes give {local}; "
                "it was not pinned",
                hint="the local copy was changed; restore it from another copy",
            )
        self._rpc.call("pin/add", [("arg", str(local)), ("recursive", "true")])
        return local

    def _cid_from_add(self, answers: list[Any], name: str) -> Cid:
        hashes = [a["Hash"] for a in answers if isinstance(a, dict) and "Hash" in a]
        if len(hashes) != 1:
            raise StoreError(
                f"the IPFS node at {self.address} answered the add of {name} with "
                f"{len(hashes)} CIDs instead of one"
            )
        try:
            return Cid.parse(str(hashes[0]))
        except InputError as exc:
            raise IntegrityError(
                f"the IPFS node at {self.address} filed {name} under {hashes[0]!r}, "
                f"which is not a {CIDV1_SCHEME} CID ({exc.message}); it was not pinned"
            ) from exc

    def _fetch(self, cid: Cid, sink: Callable[[bytes], object]) -> None:
        hasher = UnixFsHasher(cid.version)
        try:
            # Bounded look-up first: a node never gives up on a block by itself.
            self._rpc.call(
                "block/stat", [("arg", str(cid)), ("timeout", f"{self.find_timeout:g}s")]
            )
            with self._rpc.stream("cat", [("arg", str(cid))]) as pieces:
                for piece in pieces:
                    hasher.update(piece)
                    sink(piece)
        except StoreRefusedError as exc:
            raise ArtifactNotFoundError(
                f"the IPFS node at {self.address} cannot provide {cid}: {exc.node_message}",
                hint="push it from the machine that recorded it (`ledger store push`)",
            ) from exc
        actual = hasher.finalize()
        if actual != cid:  # codec too: a dag-pb root's block must not pass as raw bytes
            raise IntegrityError(
                f"the IPFS node at {self.address} sent bytes for {cid} that hash to {actual}",
                hint="the node's copy is damaged or the node is not honest; fetch it elsewhere",
            )


def _tree_parts(path: Path, hidden: bool) -> Iterator[Part]:
    """The parts of ``ipfs add -r PATH``: a folder before its entries, depth first,
    entries by name; the root named :data:`_ROOT`.

    PATH is looked at now; what is below it as the parts are sent. Errors while
    sending are :class:`~ledger.errors.InputError` (not an ``OSError``, which the
    RPC client would take for a node that does not answer).
    """
    root = os.fsencode(path)
    shown = os.fspath(path)
    try:
        info = os.stat(root)  # PATH itself is followed, as path_cid does
    except FileNotFoundError:
        raise FileMissingError(f"no file or folder at {shown!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(info.st_mode):
        return iter([(_ROOT, FILE_PART, _file_pieces(root))])
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(f"{shown!r} is neither a file nor a folder; 'ipfs add' refuses it too")
    return _folder_parts(root, hidden)


def _folder_parts(root: bytes, hidden: bool) -> Iterator[Part]:
    yield _ROOT, FOLDER_PART, ()
    # An explicit stack of folders being listed, not recursion: depth is not bounded.
    stack: list[tuple[bytes, Iterator[os.DirEntry[bytes]]]] = [(_ROOT, _entries(root))]
    while stack:
        name, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if not hidden and entry.name.startswith(b"."):
            continue
        child = name + b"/" + entry.name
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError as exc:
            raise InputError(f"cannot read {os.fsdecode(entry.path)!r}: {exc.strerror}") from exc
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(entry.path)
            except OSError as exc:
                raise InputError(
                    f"cannot read the link {os.fsdecode(entry.path)!r}: {exc.strerror}"
                ) from exc
            yield child, SYMLINK_PART, (target,)
        elif stat.S_ISREG(mode):
            yield child, FILE_PART, _file_pieces(entry.path)
        elif stat.S_ISDIR(mode):
            yield child, FOLDER_PART, ()
            stack.append((child, _entries(entry.path)))
        else:
            raise InputError(
                f"{os.fsdecode(entry.path)!r} is neither a file, a folder nor a symbolic link; "
                "'ipfs add -r' refuses it too",
                hint="move it out of the folder (or hide it: a leading '.')",
            )


def _entries(folder: bytes) -> Iterator[os.DirEntry[bytes]]:
    try:
        with os.scandir(folder) as scan:
            found = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise InputError(f"cannot list {os.fsdecode(folder)!r}: {exc.strerror or exc}") from exc
    return iter(found)


def _listing_parts(files: Mapping[str, Path]) -> Iterator[Part]:
    """The parts of ``ipfs add -r`` of a flat folder holding ``files`` under their
    names, in the order :func:`_folder_parts` gives (entries by encoded name)."""
    named = sorted((name.encode("utf-8"), Path(path)) for name, path in files.items())
    for name, _ in named:
        if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
            raise InputError(f"{name!r} cannot name an entry of a folder")
    yield _ROOT, FOLDER_PART, ()
    for name, path in named:
        yield _ROOT + b"/" + name, FILE_PART, _file_pieces(os.fsencode(path), regular=True)


def _file_pieces(path: bytes, *, regular: bool = False) -> Iterator[bytes]:
    """The bytes of the file ``path``; with ``regular``, a path that is not a regular
    file (a FIFO would block, a device never end) is refused before any read."""
    shown = os.fsdecode(path)
    try:
        if regular:  # O_NONBLOCK: opening a FIFO must not wait for a writer
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise InputError(f"{shown!r} is not a regular file; it cannot be added")
            os.set_blocking(fd, True)
            handle = open(fd, "rb", buffering=0)  # noqa: SIM115 - closed below
        else:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise FileMissingError(f"no file at {shown!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
    with handle:
        yield from _read_pieces(handle, shown)


def _read_pieces(handle: Any, shown: str) -> Iterator[bytes]:
    while True:
        try:
            piece: bytes = handle.read(_PIECE)
        except OSError as exc:
            raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
        if not piece:
            return
        yield piece

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
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
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
from ledger.hashing.cid import CIDV1_SCHEME, DEFAULT_CHUNK_SIZE, Cid, UnixFsHasher
from ledger.store._kubo import ApiAddress, KuboRpc, parse_api_address

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


def _read_pieces(handle: Any, shown: str) -> Iterator[bytes]:
    while True:
        try:
            piece: bytes = handle.read(_PIECE)
        except OSError as exc:
            raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
        if not piece:
            return
        yield piece

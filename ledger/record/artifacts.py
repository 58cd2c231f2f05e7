"""The documents stored for one weights file, as the outbox worker stores them.

:func:`store_weights` stores the file (its CID is the weights digest), a tensor
index (per-tensor digests under the tensor root) and a metrics document that
binds the step, the metrics and both weights identities. The on-chain metrics
digest (the metrics document's) therefore authenticates everything a verifier
needs to explain a mismatch.

The embedded store (:meth:`~ledger.store.LocalStore.put_weights`) reads the
weights file once: the tensors' byte ranges are found from the file's header
(:func:`~ledger.hashing.tensors.tensor_plan`), then the same blocks give the
file CID, each tensor's digest and the store's copy (or, in reference mode,
only the two hashes). Other stores (an IPFS node) get the file, and the
tensors are hashed from a second read. The outbox worker
(:mod:`ledger.record.outbox.worker`) calls it for each checkpoint and final
weights file, then sends the chain record it yields.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ledger.documents import METRICS_SCHEMA, canonical_json
from ledger.errors import StoreError
from ledger.hashing._unixfs import Link
from ledger.hashing.cid import CIDV1_SCHEME, Cid
from ledger.hashing.tensors import TensorDigest, tensor_digest, tensor_plan
from ledger.store import ArtifactStore

__all__ = ["READ_WHOLE", "store_weights"]

READ_WHOLE = 16 << 20
"""For stores without ``put_weights``: weights files up to this size are read into
memory once and hashed from there."""


def store_weights(
    store: ArtifactStore,
    run_id_hex: str,
    weights: Path,
    metrics: Mapping[str, Any],
    step: int | None,
    tensors: TensorDigest | None = None,
) -> tuple[Cid, TensorDigest, Cid]:
    """Store a weights file, its tensor index and its metrics document.

    ``step`` None marks the final weights. Returns the file CID, the tensor
    digest and the metrics document's CID (the on-chain metrics digest), which
    binds the step, the metrics and both weights identities.
    """
    path = Path(weights)
    files: dict[str, str] | None = None
    put_weights = getattr(store, "put_weights", None)
    if path.is_dir():  # a sharded checkpoint (DCP) or a model folder
        file_cid, tensors, files = _store_folder(store, path, tensors)
    elif put_weights is not None:  # the embedded store: one read for all three
        plan = tensor_plan(path) if tensors is None else None
        file_cid, digests = put_weights(path, plan.spans if plan is not None else ())
        if tensors is None:
            # None: only torch reads this file (legacy format...); a second read
            tensors = plan.digest(digests) if plan is not None else tensor_digest(path)
    elif tensors is None and path.is_file() and path.stat().st_size <= READ_WHOLE:
        # one read serves the file CID, the stored copy and the tensor leaves
        data = path.read_bytes()
        file_cid = store.put_bytes(data)
        tensors = tensor_digest(path, data=data)
    else:
        file_cid = store.put_file(path)
        tensors = tensors or tensor_digest(path)
    index_cid = store.put_bytes(canonical_json(tensors.index(), what="tensor index"))
    document = {
        "schema": METRICS_SCHEMA,
        "run_id": run_id_hex,
        "step": step,
        "final": step is None,
        "metrics": dict(metrics),
        "weights": {
            "cid": str(file_cid),
            "tensor_root": tensors.root.hex(),
            "tensor_index": str(index_cid),
            **({"files": files} if files is not None else {}),
        },
    }
    metrics_cid = store.put_bytes(canonical_json(document, what="metrics"))
    return file_cid, tensors, metrics_cid


class _Known:
    """The links of files just stored, for :func:`~ledger.hashing.cid.path_summary`:
    the folder's node is built from them instead of reading the files again. A
    file whose status changed since is hashed afresh (and the worker then finds
    the checkpoint changed)."""

    def __init__(self) -> None:
        self.links: dict[tuple[int, int, int, int], Link] = {}
        # whether links path_summary hashes are kept too (to name each file's CID
        # once a folder was hashed whole)
        self.learn = False

    @staticmethod
    def _key(info: os.stat_result) -> tuple[int, int, int, int]:
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)

    def add(self, info: os.stat_result, link: Link) -> None:
        self.links[self._key(info)] = link

    def get(self, info: os.stat_result, scheme: str) -> Link | None:
        return self.links.get(self._key(info)) if scheme == CIDV1_SCHEME else None

    def put(self, info: os.stat_result, scheme: str, link: Link) -> None:
        if scheme == CIDV1_SCHEME and self.learn:
            self.add(info, link)


def _store_folder(
    store: ArtifactStore, folder: Path, tensors: TensorDigest | None
) -> tuple[Cid, TensorDigest, dict[str, str]]:
    """Store every file of a checkpoint folder; returns the folder's CID (``ipfs add
    -r --hidden``: a DCP folder's layout is its hidden ``.metadata``), the tensor
    root and each file's CID by name.

    With the embedded store each file is read once: its CID, its copy (or
    reference) and, for a DCP folder, the rows of each tensor it holds, fed to
    that tensor's sha256 in row order across the shard files
    (:mod:`ledger.hashing.dcp`). Other stores get each file, and the tensors are
    hashed from a second read.
    """
    from ledger.hashing.cid import path_summary
    from ledger.hashing.dcp import dcp_plan, is_dcp_folder, one_pass_ok, pieces_in_order
    from ledger.hashing.tensors import TensorLeaf, digest_leaves

    names = sorted(
        entry.name for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)
    )
    put_link = getattr(store, "put_weights_link", None)
    plan = dcp_plan(folder) if tensors is None and is_dcp_folder(folder) else None
    hashers = [hashlib.sha256() for _ in plan.tensors] if plan is not None else []
    ok = one_pass_ok(plan) if plan is not None else []
    pieces = dict(pieces_in_order(plan)) if plan is not None else {}
    known = _Known()
    cids: dict[str, str] = {}
    # the shard files in the plan's order (a tensor's rows rank by rank), then the rest
    order = [n for n in (plan.files if plan is not None else ()) if n in names]
    order += [n for n in names if n not in order]
    add_path = getattr(store, "add_path", None)
    if put_link is None and add_path is not None:
        # an IPFS node: the folder is added whole, as `ipfs add -r --hidden` does, so
        # the node holds its directory node too (its CID is the one recorded), not
        # only the files; each file's CID is read off the same hashing pass
        known.learn = True
        cid = path_summary(folder, hidden=True, cache=known).cid
        add_path(folder, cid, hidden=True)
        for name in names:
            try:
                link = known.get((folder / name).stat(), CIDV1_SCHEME)
            except OSError:  # gone, or the folder replaced by a file: changed either way
                link = None
            if link is None:
                raise StoreError(f"{folder / name} changed while its folder was being stored")
            cids[name] = str(link.cid)
        return cid, tensors if tensors is not None else tensor_digest(folder), cids
    for name in order:
        path = folder / name
        if put_link is None:
            cids[name] = str(store.put_file(path))
            continue
        mine = [(number, piece) for number, piece in pieces.get(name, []) if ok[number]]
        info = path.stat()
        link, _ = put_link(
            path,
            [(piece.offset, piece.length) for _, piece in mine],
            [hashers[number] for number, _ in mine],
        )
        known.add(info, link)
        cids[name] = str(link.cid)
    if tensors is None:
        if plan is not None and put_link is not None:
            from ledger.hashing.dcp import _feed

            leaves = []
            for number, layout in enumerate(plan.tensors):
                if not ok[number]:  # rows not met in order: read them again, in order
                    hashers[number] = _rehash(folder, layout, _feed)
                leaves.append(
                    TensorLeaf(layout.name, layout.dtype, layout.shape, hashers[number].digest())
                )
            tensors = digest_leaves(leaves)
        else:
            tensors = tensor_digest(folder)
    cid = path_summary(folder, hidden=True, cache=known).cid
    return cid, tensors, cids


def _rehash(folder: Path, layout: Any, feed: Any) -> Any:
    digest = hashlib.sha256()
    for piece in layout.pieces:
        fd = os.open(folder / piece.file, os.O_RDONLY)
        try:
            feed(digest, fd, piece.offset, piece.length)
        finally:
            os.close(fd)
    return digest

"""Folder CIDs against the test IPFS node: ``ipfs add -r --only-hash`` over its RPC API.

The folders stay small (js-ipfs shards over 1,000 entries, Kubo by size: the
sharding vectors are Kubo's, in tests/hashing/test_folder_cids.py).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from ledger.hashing.cid import Cid, path_cid
from tests.store.ipfs.node import IpfsNode


def node_add_folder(node: IpfsNode, folder: Path, *, version: int, hidden: bool) -> str:
    """POST the folder as multipart parts, as the Kubo CLI does; the root entry's CID."""
    boundary = uuid.uuid4().hex
    body = bytearray()

    def part(name: str, kind: str, data: bytes) -> None:
        body.extend(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{urllib.parse.quote(name, safe="")}"\r\n'
            f"Content-Type: {kind}\r\n\r\n".encode()
        )
        body.extend(data + b"\r\n")

    part(folder.name, "application/x-directory", b"")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not hidden and any(piece.startswith(".") for piece in relative.parts):
            continue
        name = f"{folder.name}/{relative.as_posix()}"
        if path.is_dir():
            part(name, "application/x-directory", b"")
        else:
            part(name, "application/octet-stream", path.read_bytes())
    body.extend(f"--{boundary}--\r\n".encode())
    query = f"only-hash=true&cid-version={version}&raw-leaves={str(version == 1).lower()}"
    request = urllib.request.Request(
        f"{node.url}/api/v0/add?{query}",
        data=bytes(body),
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    (root,) = [line["Hash"] for line in lines if line["Name"] == folder.name]
    return str(root)  # js-ipfs writes a CIDv1 in base58btc ('z...')


@pytest.mark.parametrize("version", [0, 1])
def test_nested_folders_empty_ones_and_empty_files_match_the_node(
    ipfs_node: IpfsNode, tmp_path: Path, version: int
) -> None:
    folder = tmp_path / "dataset"
    (folder / "train" / "shard-0").mkdir(parents=True)
    (folder / "empty-folder").mkdir()
    (folder / "train" / "shard-0" / "part.bin").write_bytes(bytes(range(256)) * 1500)
    (folder / "train" / "labels.csv").write_text("id,label\n1,cat\n")
    (folder / "empty-file").write_bytes(b"")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("hidden")
    for hidden in (False, True):
        expected = node_add_folder(ipfs_node, folder, version=version, hidden=hidden)
        assert path_cid(folder, cid_version=version, hidden=hidden) == Cid.parse(expected)

"""``IpfsStore.add_path``: a file or folder added as ``ipfs add -r`` does, checked
against the CID ledger computed, against the real test node (js-ipfs).

Folders stay far under the 1,000 entries at which js-ipfs shards by count (Kubo
decides by size), so both build the same plain directories.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger.errors import FileMissingError, InputError, IntegrityError
from ledger.hashing.cid import CIDV1_SCHEME, PROFILES, bytes_cid, path_cid
from ledger.store.ipfs import ADD_PARAMS, IpfsStore, add_params
from tests.store.ipfs.node import IpfsNode
from tests.store.ipfs.test_ipfs_store import pinned_on


def test_default_params_are_the_stores_own() -> None:
    assert sorted(add_params(PROFILES[CIDV1_SCHEME])) == sorted(
        [*ADD_PARAMS, ("wrap-with-directory", "false")]
    )


def test_a_deep_folder_is_sent_whole(ipfs: IpfsStore, ipfs_node: IpfsNode, tmp_path: Path) -> None:
    folder = tmp_path / "deep"
    leaf = folder.joinpath(*[f"d{i}" for i in range(60)])
    leaf.mkdir(parents=True)
    (leaf / "bottom.txt").write_bytes(os.urandom(100))
    (folder / "top.bin").write_bytes(os.urandom(300_000))
    cid = ipfs.add_path(folder, path_cid(folder))
    assert cid == path_cid(folder) and pinned_on(ipfs_node, cid)


def test_another_cid_than_expected_is_refused_and_not_pinned(
    ipfs: IpfsStore, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "a.txt").write_bytes(os.urandom(64))
    expected = path_cid(folder)
    (folder / "a.txt").write_bytes(os.urandom(64))  # changed after it was fingerprinted
    with pytest.raises(IntegrityError, match="not pinned") as caught:
        ipfs.add_path(folder, expected)
    assert str(expected) in caught.value.message
    assert not pinned_on(ipfs_node, expected) and not pinned_on(ipfs_node, path_cid(folder))
    single = folder / "a.txt"
    with pytest.raises(IntegrityError):
        ipfs.add_path(single, bytes_cid(b"other bytes"))
    assert not pinned_on(ipfs_node, path_cid(single))


def test_what_ipfs_add_refuses_is_refused_and_the_add_cut_short(
    ipfs: IpfsStore, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    os.mkfifo(folder / "pipe")
    with pytest.raises(InputError, match="pipe"):
        ipfs.add_path(folder, bytes_cid(b"x"))
    with pytest.raises(FileMissingError):
        ipfs.add_path(tmp_path / "absent", bytes_cid(b"x"))
    with pytest.raises(InputError, match="neither a file nor a folder"):
        ipfs.add_path(folder / "pipe", bytes_cid(b"x"))

"""``IpfsStore.add_path``: a file or folder added as ``ipfs add -r`` does, checked
against the CID ledger computed, against the real test node (js-ipfs).

Folders stay far under the 1,000 entries at which js-ipfs shards by count (Kubo
decides by size), so both build the same plain directories.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from ledger.errors import FileMissingError, InputError, IntegrityError, StoreUnavailableError
from ledger.hashing.cid import CIDV1_SCHEME, PROFILES, Cid, bytes_cid, path_cid
from ledger.store._kubo import FILE_PART, FOLDER_PART, KuboRpc, Part, parse_api_address
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


class _ChattyNode:
    """A node that, like Kubo, answers a line per piece of an upload while it is still
    reading it, and reads no further while its answer cannot be sent: a client that
    reads only after sending everything stalls it (its buffers are small, its answer
    is 4 times the 20 MB body: more than the client's socket buffers can hold)."""

    LINE = json.dumps({"Name": "x", "Hash": "bafy", "Pad": "p" * 1_000}).encode() + b"\n"

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):  # inherited by the connection
            self.server.setsockopt(socket.SOL_SOCKET, option, 1 << 16)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with suppress(OSError):
            connection, _ = self.server.accept()
            with connection:
                seen = b""
                while b"\r\n\r\n" not in seen:
                    seen += connection.recv(65536)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                tail = seen.split(b"\r\n\r\n", 1)[1]
                while not tail.endswith(b"0\r\n\r\n"):
                    got = connection.recv(65536)
                    if not got:
                        return
                    tail = (tail + got)[-16:]
                    lines = self.LINE * 4 * -(-len(got) // 1024)  # 4 lines per KiB read
                    connection.sendall(b"%x\r\n%s\r\n" % (len(lines), lines))
                last = json.dumps({"Name": "dataset", "Hash": "done"}).encode() + b"\n"
                connection.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))

    def close(self) -> None:
        self.server.close()
        self.thread.join(10)


def _parts(count: int) -> list[Part]:
    return [(f"dataset/f{i}".encode(), FILE_PART, [b"q" * 8192]) for i in range(count)]


def test_an_upload_reads_the_answer_while_it_sends() -> None:
    node = _ChattyNode()
    try:
        rpc = KuboRpc(parse_api_address(f"http://127.0.0.1:{node.port}"), timeout=5)
        lines = rpc.upload_parts("add", [], _parts(2500), duplex=True)
    finally:
        node.close()
    assert lines[-1] == {"Name": "dataset", "Hash": "done"} and len(lines) > 100


def test_an_upload_that_reads_late_stalls_such_a_node() -> None:
    # The test above means something: without duplex the same exchange stalls.
    node = _ChattyNode()
    try:
        rpc = KuboRpc(parse_api_address(f"http://127.0.0.1:{node.port}"), timeout=2)
        with pytest.raises(StoreUnavailableError):
            rpc.upload_parts("add", [], _parts(2500), duplex=False)
    finally:
        node.close()


def test_a_body_that_fails_midway_is_raised_as_it_is(ipfs_node: IpfsNode) -> None:
    def parts() -> Iterator[Part]:
        yield b"dataset", FOLDER_PART, ()
        yield b"dataset/a", FILE_PART, [b"a" * 1000]
        raise InputError("cannot read 'dataset/b': gone")

    rpc = KuboRpc(parse_api_address(ipfs_node.api), timeout=10)
    with pytest.raises(InputError, match="gone"):
        rpc.upload_parts("add", [("pin", "false")], parts(), duplex=True)
    assert rpc.call("version")  # the node is fine


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_sharded_checkpoint_reaches_the_node_with_its_folder(
    ipfs: IpfsStore, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    """A ``torch.distributed.checkpoint`` folder stored through an IPFS node is
    there under the folder CID that was recorded (its directory node, hidden
    ``.metadata`` included), not only file by file, so ``ipfs get <cid>`` works."""
    torch = pytest.importorskip("torch")
    from torch.distributed.checkpoint import save

    from ledger.hashing.tensors import tensor_digest
    from ledger.record.artifacts import store_weights

    folder = tmp_path / "step-000001"
    state = {"w": torch.arange(70_000, dtype=torch.float32), "b": torch.ones(3)}
    save(state, checkpoint_id=folder)
    cid, tensors, metrics = store_weights(ipfs, "00" * 32, folder, {"loss": 0.5}, 1)
    assert cid == path_cid(folder, hidden=True)
    assert pinned_on(ipfs_node, cid)  # recursively: the folder node and every file
    assert tensors == tensor_digest(folder)
    files = json.loads(ipfs.get_bytes(metrics))["weights"]["files"]
    names = sorted(p.name for p in folder.iterdir())
    assert sorted(files) == names and ".metadata" in names
    for name, file_cid in files.items():
        assert ipfs.get_bytes(Cid.parse(file_cid)) == (folder / name).read_bytes()


def test_a_listing_is_added_as_the_folder_it_names(
    ipfs: IpfsStore, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    """``add_listing`` sends a flat folder from files kept elsewhere under other
    names (a store's copies): the node's CID is the laid-out folder's. A FIFO among
    them is refused before it is opened for a blocking read, a name that could not
    be an entry is refused, and nothing is pinned either way."""
    folder = tmp_path / "laid-out"
    folder.mkdir()
    kept = tmp_path / "kept"
    kept.mkdir()
    files = {".metadata": os.urandom(700), "__0_0.distcp": os.urandom(300_000), "b": b""}
    for index, (name, data) in enumerate(files.items()):
        (folder / name).write_bytes(data)
        (kept / f"blob-{index}").write_bytes(data)
    sources = {name: kept / f"blob-{index}" for index, name in enumerate(files)}
    expected = path_cid(folder, hidden=True)
    assert ipfs.add_listing(sources, expected, shown="the test folder") == expected
    assert pinned_on(ipfs_node, expected)
    assert sorted(ipfs.children(expected)) == sorted(files)

    os.mkfifo(tmp_path / "fifo")
    other = {**sources, "b": tmp_path / "fifo"}
    with pytest.raises(InputError, match="not a regular file"):
        ipfs.add_listing(other, bytes_cid(b"never"), shown="the test folder")
    for bad in ("..", "a/b", "a\0b", ""):
        with pytest.raises(InputError, match="cannot name an entry"):
            ipfs.add_listing({bad: kept / "blob-0"}, bytes_cid(b"never"), shown="a folder")
    assert not pinned_on(ipfs_node, bytes_cid(b"never"))

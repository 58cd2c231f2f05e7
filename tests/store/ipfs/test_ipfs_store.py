"""IpfsStore against a real IPFS node (js-ipfs serving the Kubo RPC API)."""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ledger.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
)
from ledger.hashing.cid import DAG_PB, RAW, Cid, bytes_cid, file_cid
from ledger.store import find_by_digest
from ledger.store.ipfs import IpfsStore
from tests.conftest import free_port
from tests.hashing.test_cid_vectors import kubo_deterministic
from tests.store.ipfs.node import IpfsNode

CHUNK = 262144


def unique(size: int) -> bytes:
    """Bytes no other test adds to the session node."""
    return os.urandom(size)


def write(path: Path, pieces: Iterator[bytes]) -> Path:
    with open(path, "wb") as handle:
        for piece in pieces:
            handle.write(piece)
    return path


def pinned_on(node: IpfsNode, cid: Cid | str) -> bool:
    keys = json.loads(node.rpc("pin/ls", type="recursive"))["Keys"]
    wanted = Cid.parse(str(cid))
    return any(Cid.parse(key) == wanted for key in keys)


# -- round trips and CIDs --------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 5, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_put_bytes_round_trip_under_the_local_cid(
    ipfs: IpfsStore, ipfs_node: IpfsNode, size: int
) -> None:
    data = unique(size)
    cid = ipfs.put_bytes(data)
    assert cid == bytes_cid(data)
    assert cid.codec == (RAW if size <= CHUNK else DAG_PB)
    assert ipfs.has(cid)
    assert pinned_on(ipfs_node, cid)
    assert ipfs.get_bytes(cid) == data


@pytest.mark.parametrize(
    ("chunks", "extra"),
    [
        pytest.param(0, 1000, id="small"),
        pytest.param(40, 12345, id="multi-chunk"),
        pytest.param(175, 1000, id="depth-2", marks=pytest.mark.slow),
    ],
)
def test_put_file_cid_equals_file_cid(
    ipfs: IpfsStore, ipfs_node: IpfsNode, tmp_path: Path, chunks: int, extra: int
) -> None:
    size = chunks * CHUNK + extra
    seed = f"ledger-ipfs-{os.urandom(8).hex()}"
    path = write(tmp_path / "blob.bin", kubo_deterministic(size, seed))
    sent: list[int] = []
    cid = ipfs.put_file(path, progress=sent.append)
    assert cid == file_cid(path)
    assert sum(sent) == size
    if chunks > 174:  # more leaves than one node links: a root over two nodes
        root = json.loads(ipfs_node.rpc("object/links", arg=str(cid)))
        assert len(root["Links"]) == 2
    fetched = tmp_path / "fetched.bin"
    ipfs.get_file(cid, fetched)
    assert file_cid(fetched) == cid and fetched.stat().st_size == size


def test_find_by_digest_on_the_node(ipfs: IpfsStore) -> None:
    small, large = unique(100), unique(2 * CHUNK)
    small_cid, large_cid = ipfs.put_bytes(small), ipfs.put_bytes(large)
    assert find_by_digest(ipfs, small_cid.digest) == small_cid  # raw leaf
    assert find_by_digest(ipfs, large_cid.digest) == large_cid  # dag-pb root
    assert find_by_digest(ipfs, bytes_cid(unique(10)).digest) is None


def test_missing_artifact_is_not_found(ipfs: IpfsStore, tmp_path: Path) -> None:
    absent = bytes_cid(unique(64))
    assert not ipfs.has(absent)
    with pytest.raises(ArtifactNotFoundError, match=str(absent)):
        ipfs.get_bytes(absent)
    with pytest.raises(ArtifactNotFoundError):
        ipfs.get_file(absent, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left


# -- the node is checked, not trusted ----------------------------------------------------


def test_get_rechecks_the_codec(ipfs: IpfsStore, ipfs_node: IpfsNode) -> None:
    # Added without raw leaves, one chunk is a dag-pb node: same bytes, another CID.
    data = unique(1000)
    answer = json.loads(
        upload(ipfs_node, data, {"cid-version": "1", "raw-leaves": "false", "cid-base": "base32"})
    )
    dag_pb = Cid.parse(answer["Hash"])
    assert dag_pb.codec == DAG_PB and dag_pb != bytes_cid(data)
    with pytest.raises(IntegrityError, match="hash to"):
        ipfs.get_bytes(dag_pb)


class _Proxy:
    """A front to the real node that imports with other settings, or alters what it sends."""

    def __init__(
        self,
        node: IpfsNode,
        *,
        chunker: str | None,
        flip_cat: bool,
        add_error: tuple[int, str] | None = None,
    ) -> None:
        target = node.url

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qsl(url.query)
                if url.path.endswith("/add") and chunker:
                    query = [(k, chunker if k == "chunker" else v) for k, v in query]
                body = self._body()
                if url.path.endswith("/add") and add_error:
                    self._refuse(*add_error)
                    return
                request = urllib.request.Request(
                    f"{target}{url.path}?{urllib.parse.urlencode(query)}",
                    data=body,
                    method="POST",
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, answer = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                if url.path.endswith("/cat") and flip_cat and answer:
                    answer = bytes([answer[0] ^ 1]) + answer[1:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _refuse(self, status: int, message: str) -> None:
                """Answer as the node does: an error document, or (Kubo, mid-stream)
                HTTP 200 with the error in X-Stream-Error."""
                answer = b""
                self.send_response(status)
                if status == 200:
                    self.send_header("X-Stream-Error", message)
                else:
                    answer = json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode()
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding") != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.api = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_node_that_answers_another_cid_is_refused_and_nothing_is_pinned(
    ipfs_node: IpfsNode,
) -> None:
    proxy = _Proxy(ipfs_node, chunker="size-1000", flip_cat=False)
    try:
        store = IpfsStore(proxy.api)
        data = unique(5000)
        with pytest.raises(IntegrityError, match="not pinned") as caught:
            store.put_bytes(data)
    finally:
        proxy.close()
    message = str(caught.value)
    assert str(bytes_cid(data)) in message
    node_cid = message.split(" under ")[1].split(",")[0]
    assert Cid.parse(node_cid) != bytes_cid(data)
    assert not pinned_on(ipfs_node, node_cid)
    assert not pinned_on(ipfs_node, bytes_cid(data))


def test_a_node_that_refuses_an_add_says_why(ipfs_node: IpfsNode) -> None:
    proxy = _Proxy(ipfs_node, chunker="size-abc", flip_cat=False)
    try:
        with pytest.raises(StoreRefusedError, match=r"refused `add`: .*[Cc]hunker") as caught:
            IpfsStore(proxy.api).put_bytes(unique(1000))
    finally:
        proxy.close()
    assert caught.value.exit_code == 20 and proxy.api.split("//")[1] in str(caught.value)


# What nodes answer when their repository cannot take more. Filling the test's
# js-ipfs node for real is slow and flaky, so a proxy in front of the real node
# answers `add` with the messages Kubo and js-ipfs give for a full disk.
FULL_ANSWERS = [
    # Kubo's Datastore.StorageMax check (corerepo.ErrMaxStorageExceeded)
    (500, "maximum storage limit exceeded. Try to unpin some files."),
    # Kubo's flatfs blockstore on a full disk
    (500, "put QmX: write /data/ipfs/blocks/AB/.temp-123: no space left on device"),
    # js-ipfs (Node.js fs error through the datastore)
    (500, "ENOSPC: no space left on device, write"),
    # a quota on the node's disk
    (500, "open /data/ipfs/blocks/.temp: disk quota exceeded"),
    # Kubo, when the write fails mid-stream: HTTP 200 and the X-Stream-Error trailer
    (200, "write /data/ipfs/datastore/000123.log: no space left on device"),
]


@pytest.mark.parametrize(("status", "message"), FULL_ANSWERS)
def test_a_full_node_is_full_not_refused(ipfs_node: IpfsNode, status: int, message: str) -> None:
    """A full repository is retryable (StoreFullError), so the outbox keeps the record."""
    proxy = _Proxy(ipfs_node, chunker=None, flip_cat=False, add_error=(status, message))
    data = unique(1000)
    try:
        with pytest.raises(StoreFullError, match="is full") as caught:
            IpfsStore(proxy.api).put_bytes(data)
    finally:
        proxy.close()
    assert not isinstance(caught.value, StoreRefusedError)
    assert proxy.api.split("//")[1] in str(caught.value)
    assert caught.value.hint is not None and "free space" in caught.value.hint
    assert not pinned_on(ipfs_node, bytes_cid(data))


def test_a_node_that_sends_other_bytes_is_caught(ipfs: IpfsStore, ipfs_node: IpfsNode) -> None:
    data = unique(3 * CHUNK)
    cid = ipfs.put_bytes(data)
    proxy = _Proxy(ipfs_node, chunker=None, flip_cat=True)
    try:
        with pytest.raises(IntegrityError, match=str(cid)):
            IpfsStore(proxy.api).get_bytes(cid)
    finally:
        proxy.close()


def test_push_of_a_damaged_copy_is_refused(ipfs: IpfsStore, tmp_path: Path) -> None:
    data = unique(2 * CHUNK)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = bytes_cid(unique(10))  # not what the file holds
    with pytest.raises(IntegrityError, match="not pinned"):
        ipfs.put_file(path, expected=expected)
    assert not ipfs.has(bytes_cid(data))


# -- the node goes away ------------------------------------------------------------------


def test_no_node_is_unavailable_naming_the_address() -> None:
    api = f"/ip4/127.0.0.1/tcp/{free_port()}/http"
    store = IpfsStore(api, timeout=5)
    with pytest.raises(StoreUnavailableError, match=api) as caught:
        store.put_bytes(b"x")
    assert caught.value.exit_code == 20 and caught.value.http_status == 503
    assert isinstance(caught.value, ConnectionError)
    with pytest.raises(StoreUnavailableError):
        store.has(bytes_cid(b"x"))


def test_node_stopped_mid_run_then_restarted(own_node: IpfsNode, tmp_path: Path) -> None:
    store = IpfsStore(own_node.api, timeout=20, find_timeout=2)
    kept = unique(3 * CHUNK + 5)
    kept_cid = store.put_bytes(kept)

    big = tmp_path / "big.bin"
    big.write_bytes(unique(24 * CHUNK))
    sent: list[int] = []

    def stop_after_two_pieces(done: int) -> None:
        sent.append(done)
        if len(sent) == 2:
            own_node.stop()  # the node goes away in the middle of the upload

    with pytest.raises(StoreUnavailableError, match=own_node.api):
        store.put_file(big, progress=stop_after_two_pieces)
    assert sum(sent) < big.stat().st_size
    with pytest.raises(StoreUnavailableError):
        store.has(kept_cid)

    own_node.start()
    assert store.has(kept_cid)  # the pin survived the restart
    assert store.get_bytes(kept_cid) == kept
    assert not store.has(file_cid(big))  # the interrupted add left no pin
    assert store.put_file(big) == file_cid(big)


def upload(node: IpfsNode, data: bytes, params: dict[str, str]) -> bytes:
    """A raw ``add`` through the node's API, around the store."""
    boundary = "test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{node.url}/api/v0/add?{urllib.parse.urlencode(params)}",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: bytes = response.read()
    return answer

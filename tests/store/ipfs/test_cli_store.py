"""``ledger store push`` and ``ledger store get``, run as real processes against a real node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.hashing.cid import Cid, bytes_cid
from ledger.store import LocalStore
from tests.conftest import free_port
from tests.store.ipfs.node import IpfsNode
from tests.store.ipfs.test_ipfs_store import pinned_on, upload


def ledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        env=full_env,
        capture_output=True,
        timeout=300,
        check=False,
    )


def local_store(data_dir: Path, sizes: list[int]) -> tuple[LocalStore, list[Cid]]:
    store = LocalStore(data_dir / "store")
    return store, [store.put_bytes(os.urandom(size)) for size in sizes]


def test_push_copies_everything_then_nothing(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    data_dir = tmp_path / "ledger"
    store, cids = local_store(data_dir, [10, 300_000, 3_000_000])
    env = {"LEDGER_IPFS_API": ipfs_node.api}

    first = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert first.returncode == 0, first.stderr
    assert b"pushed 3 artifacts" in first.stdout and b"0 already pinned" in first.stdout
    assert all(pinned_on(ipfs_node, cid) for cid in cids)

    # Resumable: what the node pins is skipped; a new artifact alone is copied.
    cids.append(store.put_bytes(os.urandom(1000)))
    second = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert second.returncode == 0, second.stderr
    assert b"pushed 1 artifacts" in second.stdout and b"3 already pinned" in second.stdout
    third = ledger("store", "push", "--data-dir", str(data_dir), "--api", ipfs_node.url)
    assert third.returncode == 0, third.stderr
    assert b"pushed 0 artifacts" in third.stdout and b"4 already pinned" in third.stdout


def test_push_refuses_a_damaged_copy_and_pushes_the_rest(
    ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    data_dir = tmp_path / "ledger"
    store, (good, bad) = local_store(data_dir, [400_000, 500_000])
    path = store.path_for(bad)
    damaged = bytearray(path.read_bytes())
    damaged[7] ^= 0xFF
    path.write_bytes(bytes(damaged))

    out = ledger("store", "push", "--data-dir", str(data_dir), "--api", ipfs_node.api)
    assert out.returncode == 20
    assert f"failed {bad}".encode() in out.stderr and b"Traceback" not in out.stderr
    assert b"pushed 1 artifacts" in out.stdout and b"1 failed" in out.stdout
    assert pinned_on(ipfs_node, good)
    assert not pinned_on(ipfs_node, bad)
    assert not pinned_on(ipfs_node, bytes_cid(bytes(damaged)))


def test_push_needs_a_node(tmp_path: Path) -> None:
    local_store(tmp_path, [10])
    unconfigured = ledger("store", "push", "--data-dir", str(tmp_path))
    assert unconfigured.returncode == 10 and b"LEDGER_IPFS_API" in unconfigured.stderr
    api = f"/ip4/127.0.0.1/tcp/{free_port()}/http"
    down = ledger("store", "push", "--data-dir", str(tmp_path), "--api", api)
    assert down.returncode == 20
    assert api.encode() in down.stderr and b"does not answer" in down.stderr


def test_get_fetches_and_rechecks(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    data = os.urandom(700_000)
    env = {"LEDGER_IPFS_API": ipfs_node.api}
    data_dir = tmp_path / "ledger"  # an empty local store: the node is asked
    cid = Cid.parse(json.loads(upload(ipfs_node, data, _kubo_v1()))["Hash"])
    assert cid == bytes_cid(data)

    out = tmp_path / "out.bin"
    to_file = ledger("store", "get", str(cid), "-o", str(out), "--data-dir", str(data_dir), env=env)
    assert to_file.returncode == 0, to_file.stderr
    assert out.read_bytes() == data and b"verified" in to_file.stderr
    to_stdout = ledger("store", "get", str(cid), "--data-dir", str(data_dir), env=env)
    assert to_stdout.returncode == 0 and to_stdout.stdout == data

    # One chunk imported as a dag-pb leaf: the node's bytes do not give this CID.
    other = Cid.parse(json.loads(upload(ipfs_node, data[:1000], _dag_pb_leaves()))["Hash"])
    refused = tmp_path / "refused.bin"
    bad = ledger("store", "get", str(other), "-o", str(refused), env=env)
    assert bad.returncode == 20 and str(other).encode() in bad.stderr
    assert not refused.exists()

    not_a_cid = ledger("store", "get", "bafy-not-a-cid", env=env)
    assert not_a_cid.returncode == 11


def test_get_reads_the_embedded_store_when_no_node_is_configured(tmp_path: Path) -> None:
    _, (cid,) = local_store(tmp_path, [12345])
    out = ledger("store", "get", str(cid), "--data-dir", str(tmp_path))
    assert out.returncode == 0 and bytes_cid(out.stdout) == cid


def _kubo_v1() -> dict[str, str]:
    return {
        "cid-version": "1",
        "raw-leaves": "true",
        "chunker": "size-262144",
        "cid-base": "base32",
    }


def _dag_pb_leaves() -> dict[str, str]:
    return {"cid-version": "1", "raw-leaves": "false", "cid-base": "base32"}


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize("mode", ["copy", "reference"])
def test_push_adds_a_sharded_checkpoint_under_its_folder_cid(
    ipfs_node: IpfsNode, tmp_path: Path, mode: str
) -> None:
    """The folder CID a sharded run records is carried by no file of the store:
    push lays the folder out from its files and adds it whole, so the node holds
    the directory node; the files need no push of their own, then or later."""
    torch = pytest.importorskip("torch")
    from torch.distributed.checkpoint import save

    from ledger.hashing.cid import path_cid
    from ledger.record.artifacts import store_weights

    data_dir = tmp_path / "ledger"
    store = LocalStore(data_dir / "store", weights=mode)
    folder = tmp_path / "step-000003"
    save({"w": torch.arange(90_000, dtype=torch.float32)}, checkpoint_id=folder)
    cid, _, _ = store_weights(store, "00" * 32, folder, {"loss": 0.25}, 3)
    assert cid == path_cid(folder, hidden=True)
    env = {"LEDGER_IPFS_API": ipfs_node.api}

    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    first = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert first.returncode == 0, first.stderr
    assert b"added 1 checkpoint folders" in first.stdout and b"0 failed" in first.stdout
    assert b"2 of the artifacts inside them" in first.stdout  # the shard and .metadata
    assert pinned_on(ipfs_node, cid)
    # the folder is streamed from the store's files (or the referenced ones where
    # they are): push lays nothing out and copies nothing into the data directory
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    listing = json.loads(ipfs_node.rpc("ls", arg=str(cid)))["Objects"][0]["Links"]
    assert sorted(link["Name"] for link in listing) == sorted(p.name for p in folder.iterdir())

    again = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert again.returncode == 0, again.stderr
    assert b"pushed 0 artifacts" in again.stdout and b"added" not in again.stdout

    # a crafted listing claiming another artifact sits in the pinned folder: the
    # node's own listing says otherwise, so the artifact is still pushed
    from ledger.documents import METRICS_SCHEMA, canonical_json

    other = store.put_bytes(os.urandom(3000))
    crafted = {"schema": METRICS_SCHEMA, "weights": {"cid": str(cid), "files": {
        sorted(p.name for p in folder.iterdir())[-1]: str(other)}}}  # fmt: skip
    store.put_bytes(canonical_json(crafted))
    third = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert third.returncode == 0, third.stderr
    assert b"pushed 2 artifacts" in third.stdout and pinned_on(ipfs_node, other)


def test_push_follows_no_crafted_folder_listing(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    """Metrics documents in the store are data: a listing whose names would leave
    the folder or cannot be file names, or a document nested too deep to parse, is
    not followed; a folder that cannot be rebuilt from its listing (it held a
    subfolder) is noted, and its files still go one by one."""
    from ledger.documents import METRICS_SCHEMA

    data_dir = tmp_path / "ledger"
    store = LocalStore(data_dir / "store")
    loose = store.put_bytes(os.urandom(2000))

    def document(folder: Cid | str, files: str) -> bytes:
        head = f'{{"schema":"{METRICS_SCHEMA}","weights":{{"cid":"{folder}","files":{{'
        return (head + files + "}}}").encode()

    store.put_bytes(document(bytes_cid(b"x"), f'"../../escape":"{loose}"'))
    store.put_bytes(document(bytes_cid(b"y"), f'"\\ud800":"{loose}"'))
    store.put_bytes(document(bytes_cid(b"z"), f'"a\\u0000b":"{loose}"'))
    store.put_bytes(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    nested = tmp_path / "nested"
    (nested / "sub").mkdir(parents=True)
    (nested / "top.bin").write_bytes(os.urandom(500))
    (nested / "sub" / "low.bin").write_bytes(os.urandom(500))
    top = store.put_bytes((nested / "top.bin").read_bytes())
    from ledger.hashing.cid import path_cid

    store.put_bytes(document(path_cid(nested, hidden=True), f'"top.bin":"{top}"'))
    env = {"LEDGER_IPFS_API": ipfs_node.api}

    out = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert out.returncode == 0, out.stderr
    assert b"Traceback" not in out.stderr and b"0 failed" in out.stdout
    assert b"not added whole" in out.stderr and b"added 0" not in out.stdout
    assert not (tmp_path / "escape").exists() and not (data_dir / "escape").exists()
    assert pinned_on(ipfs_node, loose) and pinned_on(ipfs_node, top)
    assert not pinned_on(ipfs_node, path_cid(nested, hidden=True))


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_push_of_a_folder_whose_files_went_wrong(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    """A sharded checkpoint kept by reference whose shard became a FIFO (mtime as
    recorded), and a copy damaged in the store behind a listing crafted to match
    it: neither folder is pinned, push never blocks on the FIFO or stops at the
    first bad file, and each failure is named while the rest is pushed."""
    torch = pytest.importorskip("torch")
    from torch.distributed.checkpoint import save

    from ledger.documents import METRICS_SCHEMA, canonical_json
    from ledger.hashing.cid import path_cid
    from ledger.record.artifacts import store_weights

    data_dir = tmp_path / "ledger"
    store = LocalStore(data_dir / "store", weights="reference")
    folder = tmp_path / "step-000001"
    save({"w": torch.arange(1000, dtype=torch.float32)}, checkpoint_id=folder)
    shard = next(p for p in folder.iterdir() if p.suffix == ".distcp")
    cid, _, _ = store_weights(store, "00" * 32, folder, {"loss": 1.0}, 1)
    info = shard.stat()
    shard.unlink()
    os.mkfifo(shard)
    os.utime(shard, ns=(info.st_atime_ns, info.st_mtime_ns))

    # a copy in the store damaged after it was stored, and a folder CID crafted from
    # the damaged bytes, listed as holding the copy's CID
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "w.bin").write_bytes(os.urandom(4000))
    blob = store.put_bytes((loose / "w.bin").read_bytes())
    damaged = bytearray(store.path_for(blob).read_bytes())
    damaged[0] ^= 1
    store.path_for(blob).chmod(0o644)
    store.path_for(blob).write_bytes(bytes(damaged))
    (loose / "w.bin").write_bytes(bytes(damaged))
    crafted = {"schema": METRICS_SCHEMA, "weights": {
        "cid": str(path_cid(loose, hidden=True)), "files": {"w.bin": str(blob)}}}  # fmt: skip
    store.put_bytes(canonical_json(crafted))
    plain = store.put_bytes(os.urandom(1500))
    env = {"LEDGER_IPFS_API": ipfs_node.api}

    out = ledger("store", "push", "--data-dir", str(data_dir), env=env)
    assert b"Traceback" not in out.stderr
    assert out.returncode == 20, out.stderr  # a store error: some were not pushed
    assert f"{cid} not added whole".encode() in out.stderr
    assert str(shard).encode() in out.stderr  # the shard that changed is named
    assert f"failed {blob}".encode() in out.stderr  # its copy does not hash to it
    assert not pinned_on(ipfs_node, cid) and not pinned_on(ipfs_node, blob)
    assert pinned_on(ipfs_node, plain)

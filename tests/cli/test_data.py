"""``ledger data add|show|ls|revoke`` and ``ledger verify`` of a model trained on a
revoked dataset, as real processes against the session's Anvil; `data add --push`
against a real IPFS node (js-ipfs), and `hf:` kept off the network."""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.hashing.cid import Cid, path_cid
from ledger.ids import Relation
from ledger.store import LocalStore
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import OTHER_KEYS, Chain, free_port
from tests.runs import record_run
from tests.store.ipfs.node import IpfsNode
from tests.store.ipfs.test_ipfs_store import pinned_on


def _dataset(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    (root / "a.csv").write_text("x,y\n1,2\n")
    (root / "nested" / "b.bin").write_bytes(bytes(range(256)) * 2000)
    return root


def test_add_prints_the_folder_cid_and_refuses_what_is_not_there(tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "D")
    env = {"LEDGER_HOME": str(tmp_path / "data")}
    out = ledger("data", "add", str(folder), "--json", env=env)
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["cid"] == str(path_cid(folder)) and added["kind"] == "folder"
    assert added["digest"] == "0x" + path_cid(folder).digest.hex()
    plain = ledger("data", "add", str(folder), env=env)
    assert plain.stdout.split()[0] == added["cid"]
    glob = ledger("data", "add", str(tmp_path / "D" / "**" / "*.bin"), "--json", env=env)
    assert glob.returncode == 0, glob.stderr
    assert json.loads(glob.stdout)["kind"] == "files"
    missing = ledger("data", "add", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 11 and "nope" in missing.stderr
    nothing = ledger("data", "add", str(tmp_path / "*.nothing"), env=env)
    assert nothing.returncode == 11 and "no file matches" in nothing.stderr
    stored = ledger("data", "add", str(folder), "--store", "--json", env=env)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["stored"]


def test_show_ls_revoke_and_verify(chain: Chain, tmp_path: Path) -> None:
    env = chain_env(chain, tmp_path / "data")
    store = LocalStore(tmp_path / "data" / "store")
    d_folder = _dataset(tmp_path / "D")
    e_folder = _dataset(tmp_path / "E")
    (e_folder / "a.csv").write_text("other")
    d = json.loads(ledger("data", "add", str(d_folder), "--json", env=env).stdout)
    e = json.loads(ledger("data", "add", str(e_folder), "--json", env=env).stdout)
    reg = chain.registry
    trained = record_run(reg, store, "on-d", data={"train": d["fingerprint"]})
    tuned = record_run(reg, store, "tuned", parents=[(trained.run_id, Relation.FINE_TUNE)])
    other = record_run(reg, store, "on-e", data={"train": e["fingerprint"]})

    listed = ledger("data", "ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["cid"]: r for r in json.loads(listed.stdout)}
    assert rows[d["cid"]]["runs"] == 1 and rows[e["cid"]]["runs"] == 1
    assert not rows[d["cid"]]["revoked"]

    shown = ledger("data", "show", str(d_folder), "--json", env=env)  # by its path
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["cid"] == d["cid"] and body["revoked"] is False
    assert [r["run_id"] for r in body["used_by"]] == [trained.hex]
    assert [r["run_id"] for r in body["descendants"]] == [tuned.hex]

    model = tmp_path / "tuned.bin"
    model.write_bytes(tuned.weights[-1])
    assert ledger("verify", str(model), env=env).returncode == 0

    not_admin = ledger(
        "data",
        "revoke",
        d["cid"],
        "--reason",
        "x",
        env={**env, "LEDGER_PRIVATE_KEY": OTHER_KEYS[0]},
    )
    assert not_admin.returncode == 30 and "admin" in not_admin.stderr
    bad = ledger("data", "revoke", "not-a-cid", "--reason", "x", env=env)
    assert bad.returncode == 11 and "not-a-cid" in bad.stderr

    revoked = ledger("data", "revoke", d["cid"], "--reason", "personal data", env=env)
    assert revoked.returncode == 0, revoked.stderr
    twice = ledger("data", "revoke", d["digest"], "--reason", "again", env=env)
    assert twice.returncode == 11 and "already revoked" in twice.stderr

    verdict = ledger("verify", str(model), "--json", env=env)
    assert verdict.returncode == 5, verdict.stdout + verdict.stderr
    report = json.loads(verdict.stdout)
    check = next(c for c in report["checks"] if c["name"] == "data not revoked")
    assert d["cid"] in check["detail"] and "personal data" in check["detail"]
    assert trained.hex in check["detail"]
    clean = tmp_path / "other.bin"
    clean.write_bytes(other.weights[-1])
    assert ledger("verify", str(clean), env=env).returncode == 0

    shown = json.loads(ledger("data", "show", d["cid"], "--json", env=env).stdout)
    assert shown["revoked"] is True and shown["revocation"]["reason"] == "personal data"
    rows = {r["cid"]: r for r in json.loads(ledger("data", "ls", "--json", env=env).stdout)}
    assert rows[d["cid"]]["revoked"] and not rows[e["cid"]]["revoked"]
    plain = ledger("data", "show", d["cid"], "--no-sync", env=env).stdout
    assert "REVOKED: personal data" in plain and trained.hex in plain and tuned.hex in plain
    lines = ledger("data", "ls", env=env).stdout.splitlines()
    assert any(d["cid"] in line and "REVOKED: personal data" in line for line in lines)
    assert any(e["cid"] in line and "REVOKED" not in line for line in lines)


@pytest.mark.parametrize("name", ["nope", "0x1234", "Qm"])
def test_show_refuses_what_is_not_a_dataset_name(tmp_path: Path, name: str) -> None:
    out = ledger("data", "show", name, "--no-sync", env={"LEDGER_HOME": str(tmp_path)})
    assert out.returncode == 11 and name in out.stderr


def test_add_a_saved_hugging_face_dataset(tmp_path: Path) -> None:
    import datasets

    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["a", "bb"], "label": [0, 1]})}
    )
    splits.save_to_disk(str(tmp_path / "ds"))
    env = {"LEDGER_HOME": str(tmp_path / "data")}
    out = ledger("data", "add", f"hf:{tmp_path / 'ds'}", "--json", env=env)
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["kind"] == "hf-dataset-dict"
    from ledger.datasets import dataset_cid

    assert added["cid"] == str(dataset_cid(added["fingerprint"]))
    empty = ledger("data", "add", "hf:", env=env)
    assert empty.returncode == 11


# -- --name -------------------------------------------------------------------------


def test_name_is_kept_and_shown_but_never_changes_the_cid(tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "D")
    env = {"LEDGER_HOME": str(tmp_path / "data")}
    plain = json.loads(ledger("data", "add", str(folder), "--json", env=env).stdout)
    named = ledger("data", "add", str(folder), "--name", "  survey 2024  ", "--json", env=env)
    assert named.returncode == 0, named.stderr
    body = json.loads(named.stdout)
    assert body["name"] == "survey 2024" and body["fingerprint"]["name"] == "survey 2024"
    assert plain["fingerprint"]["name"] == "D"  # the folder's own name without --name
    assert body["cid"] == plain["cid"] == str(path_cid(folder))
    text = ledger("data", "add", str(folder), "--name", "survey 2024", env=env).stdout
    assert "'survey 2024'" in text.splitlines()[0]

    # A fingerprint document (a glob) keeps the name too, and its CID is the unnamed one:
    # a run that recorded the files unnamed and a revocation of this CID meet.
    pattern = str(tmp_path / "D" / "**" / "*")
    unnamed = json.loads(ledger("data", "add", pattern, "--json", env=env).stdout)
    globbed = json.loads(ledger("data", "add", pattern, "--name", "g", "--json", env=env).stdout)
    assert globbed["fingerprint"]["name"] == "g" and "name" not in unnamed["fingerprint"]
    assert globbed["cid"] == unnamed["cid"]
    from ledger.datasets import dataset_cid, run_datasets

    assert str(dataset_cid(globbed["fingerprint"])) == unnamed["cid"]
    (whole, *_parts) = run_datasets({"data": {"train": globbed["fingerprint"]}})
    assert whole.cid == unnamed["cid"] and whole.name == "g"
    # A mapping of the user's own kind is hashed whole: there a name may be its identity.
    assert dataset_cid({"kind": "mine", "name": "a"}) != dataset_cid({"kind": "mine", "name": "b"})

    for bad in ["", "   ", "x" * 201, "tab\there", "new\nline"]:
        out = ledger("data", "add", str(folder), "--name", bad, env=env)
        assert out.returncode == 11 and "--name" in out.stderr, (bad, out.stderr)


def test_a_named_dataset_is_listed_under_its_name(chain: Chain, tmp_path: Path) -> None:
    env = chain_env(chain, tmp_path / "data")
    store = LocalStore(tmp_path / "data" / "store")
    folder = _dataset(tmp_path / "D")
    added = ledger("data", "add", str(folder), "--name", "survey", "--json", env=env)
    d = json.loads(added.stdout)
    record_run(chain.registry, store, "on-named", data={"train": d["fingerprint"]})
    rows = {r["cid"]: r for r in json.loads(ledger("data", "ls", "--json", env=env).stdout)}
    assert rows[d["cid"]]["name"] == "survey"


# -- --push -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """A real IPFS node (js-ipfs) of this module's own."""
    started = IpfsNode(tmp_path_factory.mktemp("ipfs"))
    started.start()
    yield started
    started.stop()


def _nested(root: Path) -> Path:
    """A small nested dataset (far under the 1,000 entries at which js-ipfs shards a
    folder by count, where Kubo decides by size: both build the same plain folders)."""
    (root / "train" / "shard-0").mkdir(parents=True)
    (root / "train" / "empty-folder").mkdir()
    (root / "train" / "shard-0" / "part.bin").write_bytes(bytes(range(256)) * 2600)  # 3 chunks
    (root / "train" / "labels.csv").write_text("id,label\n1,cat\n")
    (root / "empty-file").write_bytes(b"")
    (root / "odd name + % é.txt").write_text("names are percent-encoded")
    (root / ".cache").mkdir()
    (root / ".cache" / "hidden.txt").write_text("hidden")
    return root


def _node_file(node: IpfsNode, path: str) -> bytes:
    return node.rpc("cat", arg=urllib.parse.quote(path))


@pytest.mark.parametrize(
    ("flags", "hidden", "profile"),
    [
        ((), False, None),
        (("--hidden",), True, None),
        (("--profile", "unixfs-v1-2025"), False, "unixfs-v1-2025"),
        (("--profile", "unixfs-v0-2015"), False, "unixfs-v0-2015"),
    ],
)
def test_push_adds_the_folder_under_the_cid_ledger_computed(
    node: IpfsNode, tmp_path: Path, flags: tuple[str, ...], hidden: bool, profile: str | None
) -> None:
    folder = _nested(tmp_path / "D")
    env = {"LEDGER_HOME": str(tmp_path / "data"), "LEDGER_IPFS_API": node.api}
    out = ledger("data", "add", str(folder), "--push", *flags, "--json", env=env)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    expected = path_cid(folder, profile=profile, hidden=hidden)
    assert Cid.parse(body["fingerprint"]["cid"]) == expected
    assert body["pushed"] == {"api": node.api, "cids": [str(expected)]}
    assert pinned_on(node, expected)
    # The node serves the bytes under the folder's paths, empty file and odd names too.
    part = _node_file(node, f"{expected}/train/shard-0/part.bin")
    assert part == (folder / "train" / "shard-0" / "part.bin").read_bytes()
    assert _node_file(node, f"{expected}/empty-file") == b""
    assert _node_file(node, f"{expected}/odd name + % é.txt") == b"names are percent-encoded"
    listing = json.loads(node.rpc("ls", arg=f"{expected}/train"))
    names = {link["Name"] for link in listing["Objects"][0]["Links"]}
    assert names == {"shard-0", "empty-folder", "labels.csv"}
    top = {
        link["Name"]
        for link in json.loads(node.rpc("ls", arg=str(expected)))["Objects"][0]["Links"]
    }
    assert (".cache" in top) is hidden


def test_push_a_file_and_a_glob(node: IpfsNode, tmp_path: Path) -> None:
    folder = _nested(tmp_path / "D")
    env = {"LEDGER_HOME": str(tmp_path / "data"), "LEDGER_IPFS_API": node.api}
    one = folder / "train" / "shard-0" / "part.bin"
    out = ledger("data", "add", str(one), "--push", env=env)
    assert out.returncode == 0, out.stderr
    assert f"pinned: {path_cid(one)}" in out.stdout and pinned_on(node, path_cid(one))
    pattern = str(folder / "train" / "*")
    globbed = ledger("data", "add", pattern, "--push", "--json", env=env)
    assert globbed.returncode == 0, globbed.stderr
    entries = json.loads(globbed.stdout)["fingerprint"]["files"]
    cids = json.loads(globbed.stdout)["pushed"]["cids"]
    assert cids == [e["cid"] for e in entries] and len(cids) == 3
    assert all(pinned_on(node, cid) for cid in cids)


def test_a_node_that_files_the_folder_otherwise_is_refused_and_nothing_pinned(
    node: IpfsNode, tmp_path: Path
) -> None:
    # js-ipfs drops symbolic links from an add (Kubo keeps them, as path_cid does): the
    # node's root CID differs from ledger's, which must be refused, not accepted.
    folder = _nested(tmp_path / "D")
    (folder / "unique.bin").write_bytes(os.urandom(32))  # not pinned by another test
    (folder / "train" / "link").symlink_to("labels.csv")
    env = {"LEDGER_HOME": str(tmp_path / "data"), "LEDGER_IPFS_API": node.api}
    out = ledger("data", "add", str(folder), "--push", env=env)
    assert out.returncode == 20, out.stdout + out.stderr
    assert str(path_cid(folder)) in out.stderr and "not pinned" in out.stderr
    assert "Traceback" not in out.stderr
    assert not pinned_on(node, path_cid(folder))
    (folder / "train" / "link").unlink()
    built = path_cid(folder)  # what the node built: the folder without its link
    assert str(built) in out.stderr and not pinned_on(node, built)


def test_push_needs_a_node_that_answers(tmp_path: Path) -> None:
    folder = _nested(tmp_path / "D")
    env = {"LEDGER_HOME": str(tmp_path / "data")}
    unconfigured = ledger("data", "add", str(folder), "--push", env=env)
    assert unconfigured.returncode == 10 and "LEDGER_IPFS_API" in unconfigured.stderr
    down = {**env, "LEDGER_IPFS_API": f"/ip4/127.0.0.1/tcp/{free_port()}/http"}
    out = ledger("data", "add", str(folder), "--push", env=down)
    assert out.returncode == 20 and "does not answer" in out.stderr
    hf = ledger("data", "add", f"hf:{folder}", "--push", env={**env, **down})
    assert hf.returncode == 11 and "--push" in hf.stderr


# -- hf: never downloads --------------------------------------------------------------


@pytest.fixture
def hub_trap() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket posing as the Hugging Face Hub (HF_ENDPOINT): a download
    attempt would connect to it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield f"http://127.0.0.1:{server.getsockname()[1]}", server


def _connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_hf_takes_local_folders_only_and_never_the_network(
    tmp_path: Path, hub_trap: tuple[str, socket.socket]
) -> None:
    endpoint, server = hub_trap
    env = {
        "LEDGER_HOME": str(tmp_path / "data"),
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
    }
    for name in ["some/hub-name", "imdb", "https://example.org/ds", str(tmp_path / "absent")]:
        out = ledger("data", "add", f"hf:{name}", env=env)
        assert out.returncode == 11, (name, out.stderr)
        assert "never downloads" in out.stderr and "Traceback" not in out.stderr
    a_file = tmp_path / "rows.csv"
    a_file.write_text("text,label\na,0\n")
    out = ledger("data", "add", f"hf:{a_file}", env=env)
    assert out.returncode == 11 and "a file" in out.stderr

    # A folder of data files is read by datasets itself, with the Hub switched off.
    files = tmp_path / "csv-folder"
    files.mkdir()
    (files / "train.csv").write_text("text,label\na,0\nbb,1\n")
    out = ledger("data", "add", f"hf:{files}", "--json", env=env)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)["fingerprint"]
    assert found["kind"] == "hf-dataset-dict" and found["splits"]["train"]["rows"] == 2

    # A damaged saved dataset, and a folder with nothing datasets can read: exit 11.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "state.json").write_text("{not json")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    for folder in (damaged, nothing):
        out = ledger("data", "add", f"hf:{folder}", env=env)
        assert out.returncode == 11, (folder, out.stderr)
        assert "Traceback" not in out.stderr
    assert not _connected(server)

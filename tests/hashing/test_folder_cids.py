"""Folder CIDs (``ipfs add -r -Q``) and the ``unixfs-v1-2025`` profile, against Kubo's vectors.

Vectors come from Kubo's own tests: sharness ``t0040-add-and-cat.sh`` (small
nested folders), ``t0260-sharding.sh`` (2,000 files, sharded and not) and
``test/cli/cid_profiles_test.go`` (folders one byte under and over the HAMT
threshold in both IPIP-499 profiles, files at and over the 1 MiB chunk). The
folders are rebuilt here exactly as those tests build them. js-ipfs, the node
the store tests run, shards any folder of more than 1,000 entries; Kubo shards
by estimated size, so for the sharding vectors below js-ipfs would print other
CIDs: Kubo's are what ``ledger cid`` must match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from Crypto.Cipher import ChaCha20

from ledger.errors import FileMissingError, InputError
from ledger.hashing._multiformats import DAG_PB, Cid
from ledger.hashing.cid import (
    CIDV0_SCHEME,
    CIDV1_SCHEME,
    PROFILES,
    UNIXFS_V1_2025_SCHEME,
    _FolderHasher,
    bytes_cid,
    file_cid,
    import_profile,
    path_cid,
)

# -- Kubo's deterministic test data (test/cli/testutils) --------------------------

ALPHABET_EASY = "abcdefghijklmnopqrstuvwxyz01234567890-_"


def deterministic_bytes(size: int, seed: str) -> bytes:
    """Kubo's DeterministicRandomReaderBytes: ChaCha20 keystream, key sha256(seed), zero nonce."""
    cipher = ChaCha20.new(key=hashlib.sha256(seed.encode()).digest(), nonce=bytes(12))
    return cipher.encrypt(bytes(size))


def deterministic_files(folder: Path, count: int, name_len: int, last_len: int, seed: str) -> Path:
    """Kubo's createDeterministicFiles: ``count`` files holding "x", pseudo-random names."""
    folder.mkdir()
    stream = deterministic_bytes(1 << 20, seed)
    pos = 0
    for index in range(count):
        length = last_len if index == count - 1 else name_len
        name = "".join(ALPHABET_EASY[b % len(ALPHABET_EASY)] for b in stream[pos : pos + length])
        pos += length
        (folder / name).write_bytes(b"x")
    return folder


def sharness_files(folder: Path, count: int) -> Path:
    """t0260's folder: file1..fileN, each holding its number and a newline."""
    folder.mkdir()
    for index in range(1, count + 1):
        (folder / f"file{index}").write_text(f"{index}\n")
    return folder


# -- small folders: t0040 ------------------------------------------------------------


def planets(tmp_path: Path) -> Path:
    folder = tmp_path / "planets"
    folder.mkdir()
    (folder / "mars.txt").write_text("Hello Mars!\n")
    (folder / "venus.txt").write_text("Hello Venus!\n")
    return folder


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (0, "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"),
        (1, "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi"),
    ],
)
def test_a_small_folder_matches_kubo(tmp_path: Path, version: int, expected: str) -> None:
    assert str(path_cid(planets(tmp_path), cid_version=version)) == expected


def test_a_nested_folder_matches_kubo(tmp_path: Path) -> None:
    folder = tmp_path / "test_current_dir"
    (folder / "hello").mkdir(parents=True)
    (folder / "hey").write_text("Hey\n")
    (folder / "hello" / "world").write_text("World\n")
    assert str(path_cid(folder, cid_version=0)) == "QmZQWnfcqJ6hNkkPvrY9Q5X39GP3jUnUbAV4AbmbbR3Cb1"
    # t0040 'ipfs add -r adds directory content when ./ is symlink': the argument is followed
    link = tmp_path / "hellolink"
    link.symlink_to(folder)
    assert path_cid(link, cid_version=0) == path_cid(folder, cid_version=0)


def test_a_file_gives_the_same_cid_as_file_cid(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(300_000))
    for version in (0, 1):
        assert path_cid(path, cid_version=version) == file_cid(path, cid_version=version)


def test_empty_folders_and_empty_files_are_kept(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # the empty UnixFS directory, in both versions (Kubo: 'ipfs object new unixfs-dir')
    assert str(path_cid(empty, cid_version=0)) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    assert str(path_cid(empty)) == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    outer = tmp_path / "outer"
    (outer / "sub").mkdir(parents=True)
    (outer / "nothing").write_bytes(b"")
    with_both = path_cid(outer)
    (outer / "sub").rmdir()
    assert path_cid(outer) != with_both  # the empty sub-folder is an entry of its own


# -- hidden files, symlinks, what is refused ----------------------------------------


def test_hidden_entries_are_skipped_unless_asked_for(tmp_path: Path) -> None:
    folder = planets(tmp_path)
    plain = path_cid(folder)
    (folder / ".secret").write_text("not added by default\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert path_cid(folder) == plain
    with_hidden = path_cid(folder, hidden=True)
    assert with_hidden != plain
    (folder / ".secret").unlink()
    (folder / ".git" / "HEAD").unlink()
    (folder / ".git").rmdir()
    assert path_cid(folder, hidden=True) == plain


def test_a_hidden_folder_named_on_the_command_line_is_added(tmp_path: Path) -> None:
    folder = tmp_path / ".data"
    folder.mkdir()
    (folder / "mars.txt").write_text("Hello Mars!\n")
    (folder / "venus.txt").write_text("Hello Venus!\n")
    assert str(path_cid(folder, cid_version=0)) == "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"


def _symlink_node_cid(target: bytes, version: int) -> Cid:
    """The UnixFS symlink node written out by hand: PBNode{Data: Data{Type: 4, Data: target}}."""
    unixfs = b"\x08\x04\x12" + bytes((len(target),)) + target
    block = b"\x0a" + bytes((len(unixfs),)) + unixfs
    return Cid.from_digest(hashlib.sha256(block).digest(), DAG_PB, version)


def test_symlinks_inside_are_symlink_nodes_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "link").symlink_to("../outside.bin")  # dangling at first: still added
    dangling = path_cid(folder)
    (tmp_path / "outside.bin").write_bytes(b"some bytes")
    assert path_cid(folder) == dangling  # the target's content plays no part
    # the folder is exactly one entry 'link' pointing at the hand-written symlink node
    node = _symlink_node_cid(b"../outside.bin", 1)
    tsize = 2 + 2 + 2 + len(b"../outside.bin")  # the node's block size
    link = b"\x0a\x24" + node.to_bytes() + b"\x12\x04link\x18" + bytes((tsize,))
    block = b"\x12" + bytes((len(link),)) + link + b"\x0a\x02\x08\x01"
    assert dangling == Cid.from_digest(hashlib.sha256(block).digest(), DAG_PB, 1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "link").write_bytes(b"some bytes")
    assert path_cid(other) != dangling


def test_a_socket_in_the_folder_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "with-socket"
    folder.mkdir()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(folder / "control.sock"))
        with pytest.raises(InputError, match=r"control\.sock.*neither a file"):
            path_cid(folder)
    finally:
        server.close()


def test_a_missing_path_and_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileMissingError, match="nope"):
        path_cid(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown import profile"):
        path_cid(tmp_path, profile="unixfs-v9")
    with pytest.raises(InputError, match="cannot be combined"):
        path_cid(tmp_path, profile="unixfs-v1-2025", cid_version=0)
    with pytest.raises(FileMissingError, match=r"(?s)directory.*'ledger cid' takes a folder"):
        file_cid(tmp_path)


# -- sharding: t0260 and the IPIP-499 threshold vectors ------------------------------


def test_two_thousand_files_stay_plain_under_kubos_size_threshold(tmp_path: Path) -> None:
    # ~76 KB of names and CIDs: far under 256 KiB, so Kubo keeps one node; js-ipfs
    # would shard (over 1,000 entries) and print another CID
    folder = sharness_files(tmp_path / "testdata", 2000)
    assert str(path_cid(folder, cid_version=0)) == "QmavrTrQG4VhoJmantURAYuw3bowq3E2WcvP36NRQDAC1N"
    # t0260 'force sharding on' (threshold 1 B): the same files as a HAMT
    forced = dataclasses.replace(PROFILES[CIDV0_SCHEME], hamt_threshold=1)
    sharded = _FolderHasher(forced, False, None, None).folder(str(folder)).cid
    assert str(sharded) == "QmSCJD1KYLhVVHqBK3YyXuoEqHt7vggyJhzoFYbT8v1XYL"


@pytest.mark.parametrize(
    ("count", "name_len", "expected"),
    [
        (4096, 30, "QmX5GtRk3TSSEHtdrykgqm4eqMEn3n2XhfkFAis5fjyZmN"),  # exactly 256 KiB: plain
        (4033, 31, "QmeMiJzmhpJAUgynAcxTQYek5PPKgdv3qEvFsdV3XpVnvP"),  # one byte over: HAMT
    ],
)
def test_kubo_default_shards_by_names_and_cids(
    tmp_path: Path, count: int, name_len: int, expected: str
) -> None:
    folder = deterministic_files(tmp_path / "d", count, name_len, name_len, "hamt-unixfs-v0-2015")
    assert str(path_cid(folder, cid_version=0)) == expected


@pytest.mark.parametrize(
    ("last_len", "expected"),
    [
        (21, "bafybeic3h7rwruealwxkacabdy45jivq2crwz6bufb5ljwupn36gicplx4"),  # block = 256 KiB
        (22, "bafybeiegvuterwurhdtkikfhbxcldohmxp566vpjdofhzmnhv6o4freidu"),  # one byte over
    ],
)
def test_unixfs_v1_2025_shards_by_block_size(tmp_path: Path, last_len: int, expected: str) -> None:
    folder = deterministic_files(tmp_path / "d", 4766, 11, last_len, "hamt-unixfs-v1-2025")
    assert str(path_cid(folder, profile="unixfs-v1-2025")) == expected
    # the default CIDv1 profile estimates names + CIDs (~224 KB here): one plain node,
    # the same as unixfs-v1-2025's at the threshold (1-byte files: same leaves), not over it
    assert (path_cid(folder) == path_cid(folder, profile="unixfs-v1-2025")) is (last_len == 21)


# -- the unixfs-v1-2025 profile for files ----------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1 << 20, "bafkreiacndfy443ter6qr2tmbbdhadvxxheowwf75s6zehscklu6ezxmta"),
        ((1 << 20) + 1, "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64"),
    ],
)
@pytest.mark.parametrize("workers", [1, None])
def test_unixfs_v1_2025_files_use_1_mib_chunks(
    tmp_path: Path, size: int, expected: str, workers: int | None
) -> None:
    path = tmp_path / "chunk.bin"
    path.write_bytes(deterministic_bytes(size, "chunk-v1-seed"))
    assert str(file_cid(path, profile="unixfs-v1-2025", workers=workers)) == expected
    assert str(path_cid(path, profile="unixfs-v1-2025", workers=workers)) == expected


def test_kubo_default_chunk_vectors_still_hold(tmp_path: Path) -> None:
    # the same test file's unixfs-v0-2015 vectors, for files (today's CIDv0 scheme)
    for size, expected in [
        (262144, "QmWmRj3dFDZdb6ABvbmKhEL6TmPbAfBZ1t5BxsEyJrcZhE"),
        (262145, "QmYyLxtzZyW22zpoVAtKANLRHpDjZtNeDjQdJrcQNWoRkJ"),
    ]:
        path = tmp_path / f"{size}.bin"
        path.write_bytes(deterministic_bytes(size, "chunk-v0-seed"))
        assert str(file_cid(path, profile="unixfs-v0-2015")) == expected
        assert str(file_cid(path, cid_version=0)) == expected
    assert str(bytes_cid(b"hello world")) == (
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )


def test_profiles_are_named_by_scheme() -> None:
    assert import_profile().scheme == CIDV1_SCHEME
    assert import_profile(0).scheme == CIDV0_SCHEME
    v2025 = import_profile(profile="unixfs-v1-2025")
    assert v2025.scheme == UNIXFS_V1_2025_SCHEME == "cidv1-raw-sha256-1m-unixfs-v1-2025"
    assert (v2025.chunk_size, v2025.max_links, v2025.hamt_fanout) == (1 << 20, 1024, 256)
    assert import_profile(profile=UNIXFS_V1_2025_SCHEME) is v2025


def test_the_result_does_not_depend_on_workers(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "big.bin").write_bytes(os.urandom(9 << 20))  # over one read block
    for index in range(30):
        (folder / "a" / f"f{index}").write_bytes(os.urandom(index * 1000))
    (folder / "a" / "b" / "deep").write_bytes(b"deep")
    seen: list[int] = []
    one = path_cid(folder, workers=1)
    assert path_cid(folder, workers=4, progress=seen.append) == one
    assert sum(seen) == (9 << 20) + sum(index * 1000 for index in range(30)) + 4


def test_ledger_cid_prints_a_folders_cid(tmp_path: Path) -> None:
    folder = planets(tmp_path)
    (folder / ".hidden").write_text("x")

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        return subprocess.run(
            [sys.executable, "-m", "ledger", "cid", *args],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    out = ledger(str(folder), "--cid-version", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"
    profiled = ledger(str(folder), "--profile", "unixfs-v1-2025", "--hidden")
    assert profiled.stdout.strip() == str(path_cid(folder, profile="unixfs-v1-2025", hidden=True))
    clash = ledger(str(folder), "--profile", "unixfs-v1-2025", "--cid-version", "0")
    assert clash.returncode == 11 and "cannot be combined" in clash.stderr
    assert "Traceback" not in clash.stderr

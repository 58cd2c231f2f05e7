"""The embedded store's modes for weights files: copy (default) and reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger.config import load_settings
from ledger.errors import ArtifactNotFoundError, ConfigError, IntegrityError
from ledger.hashing.cid import file_cid
from ledger.store import LocalStore, open_store
from tests.store.test_local import BIG, pattern


def referenced(tmp_path: Path) -> tuple[LocalStore, Path]:
    source = tmp_path / "ckpt" / "step-1.pt"
    source.parent.mkdir()
    source.write_bytes(pattern(BIG, seed=9))
    store = LocalStore(tmp_path / "store", weights="reference")
    return store, source


def test_reference_mode_records_where_the_file_is_instead_of_copying(tmp_path: Path) -> None:
    store, source = referenced(tmp_path)
    cid = store.put_file(source)
    assert cid == file_cid(source)
    assert not store.path_for(cid).exists()  # no copy
    record = store.reference(cid)
    assert record == {
        "cid": str(cid),
        "path": str(source.resolve()),
        "size": BIG,
        "mtime_ns": source.stat().st_mtime_ns,
    }
    assert store.has(cid)
    assert store.cids() == [cid]
    assert store.file_for(cid) == source.resolve()
    assert store.get_bytes(cid) == source.read_bytes()
    # documents are still copied
    doc = store.put_bytes(b'{"a": 1}')
    assert store.path_for(doc).is_file()
    # a store opened in copy mode reads what reference mode stored
    assert LocalStore(store.root).get_bytes(cid) == source.read_bytes()


def test_a_moved_referenced_file_is_reported_as_gone_with_its_path(tmp_path: Path) -> None:
    store, source = referenced(tmp_path)
    cid = store.put_file(source)
    source.rename(tmp_path / "elsewhere.pt")
    with pytest.raises(ArtifactNotFoundError, match="moved or deleted") as info:
        store.get_bytes(cid)
    assert str(source.resolve()) in info.value.message
    with pytest.raises(ArtifactNotFoundError, match="moved or deleted"):
        store.file_for(cid)


def test_a_referenced_file_that_grew_is_reported_with_what_changed(tmp_path: Path) -> None:
    store, source = referenced(tmp_path)
    cid = store.put_file(source)
    with open(source, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(IntegrityError, match=f"size {BIG} -> {BIG + 1} bytes") as info:
        store.get_bytes(cid)
    assert str(source.resolve()) in info.value.message


def test_a_referenced_file_rewritten_in_place_is_caught_by_the_rehash(tmp_path: Path) -> None:
    store, source = referenced(tmp_path)
    cid = store.put_file(source)
    stamp = source.stat()
    data = bytearray(source.read_bytes())
    data[BIG // 2] ^= 0xFF  # same size; the mtime put back as it was
    source.write_bytes(bytes(data))
    os.utime(source, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with pytest.raises(IntegrityError, match="whose bytes changed") as info:
        store.get_bytes(cid)
    assert str(source.resolve()) in info.value.message
    source.touch()  # and a changed mtime alone is named as such
    with pytest.raises(IntegrityError, match="mtime_ns"):
        store.get_bytes(cid)


def test_what_stands_where_a_referenced_file_was_is_never_waited_on(tmp_path: Path) -> None:
    """A FIFO where an empty referenced file was (size and mtime as recorded) is not
    opened for a blocking read, a FIFO standing for the reference record neither,
    and a record crafted to point at a device, at no possible path or nested too
    deep to parse is the store's own error, never a hang or a raw exception."""
    store = LocalStore(tmp_path / "store", weights="reference")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cid = store.put_file(empty)
    stamp = empty.stat()
    empty.unlink()
    os.mkfifo(empty)
    os.utime(empty, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with pytest.raises(IntegrityError, match="not a regular file"):
        store.get_bytes(cid)

    record = store.root / "refs" / str(cid)
    for path in ("/dev/zero", r"/tmp/a\u0000b", r"/tmp/\ud800"):  # JSON escapes
        record.write_text(
            f'{{"cid": "{cid}", "path": "{path}", "size": 0, "mtime_ns": {stamp.st_mtime_ns}}}'
        )
        with pytest.raises(IntegrityError):
            store.get_bytes(cid)
    record.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(IntegrityError, match="unreadable"):
        store.get_bytes(cid)
    record.unlink()
    os.mkfifo(record)
    with pytest.raises(IntegrityError, match="unreadable"):
        store.reference(cid)


def test_a_file_already_copied_is_not_referenced_again(tmp_path: Path) -> None:
    store, source = referenced(tmp_path)
    cid = LocalStore(store.root).put_file(source)  # copied earlier, in copy mode
    assert store.put_file(source) == cid
    assert store.reference(cid) is None
    source.unlink()
    assert store.get_bytes(cid) == pattern(BIG, seed=9)


def test_the_setting_picks_the_mode_and_a_bad_value_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_IPFS_API", raising=False)
    monkeypatch.delenv("LEDGER_STORE_WEIGHTS", raising=False)
    store = open_store(load_settings(tmp_path))
    assert isinstance(store, LocalStore) and store.weights == "copy"  # the default
    monkeypatch.setenv("LEDGER_STORE_WEIGHTS", "reference")
    store = open_store(load_settings(tmp_path))
    assert isinstance(store, LocalStore) and store.weights == "reference"
    monkeypatch.setenv("LEDGER_STORE_WEIGHTS", "nocopy")
    with pytest.raises(
        ConfigError, match="LEDGER_STORE_WEIGHTS is 'nocopy', not copy or reference"
    ):
        load_settings(tmp_path)
    monkeypatch.delenv("LEDGER_STORE_WEIGHTS")
    (tmp_path / "config.json").write_text('{"store_weights": "reference"}')
    assert load_settings(tmp_path).store_weights == "reference"
    (tmp_path / "config.json").write_text('{"store_weights": 1}')
    with pytest.raises(ConfigError, match="store_weights"):
        load_settings(tmp_path)


def test_copy_mode_clones_where_the_filesystem_can(tmp_path: Path) -> None:
    import ledger.store.local

    source = tmp_path / "w.bin"
    source.write_bytes(pattern(BIG, seed=10))
    probe = tmp_path / "probe"
    with open(source, "rb") as src, open(probe, "wb") as dst:
        if not ledger.store.local._clone(dst.fileno(), src.fileno()):
            pytest.skip("this filesystem has no copy-on-write clones (FICLONE)")
    store = LocalStore(tmp_path / "store")
    cid = store.put_file(source)
    assert cid == file_cid(source)
    assert store.get_bytes(cid) == source.read_bytes()


def test_the_outbox_worker_process_gets_the_mode(tmp_path: Path) -> None:
    from ledger.config import Settings
    from ledger.record.outbox.process import _settings_fields, socket_name

    settings = Settings(data_dir=tmp_path, store_weights="reference")
    given = dict(_settings_fields(settings))  # what the worker process is sent
    rebuilt = Settings(data_dir=Path(given.pop("data_dir")), **given)
    assert rebuilt.store_weights == "reference"
    copy = Settings(data_dir=tmp_path)
    assert socket_name(settings, "0xabc") != socket_name(copy, "0xabc")  # another worker

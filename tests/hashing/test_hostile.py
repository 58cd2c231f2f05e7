"""Weights files built to mislead or to exhaust: every verdict must be earned.

Two promises of ``ledger.hashing.tensors``:

* a tensor-root match accounts for every byte and every entry of the container
  (:func:`audit_container`): bytes or entries that belong to no tensor of the
  state dict are named, unless they are a checkpoint's training state, which is
  listed;
* hostile input (empty, truncated, nested, bombs, absurd declared sizes) gives
  a one-line :class:`~ledger.errors.InputError` naming the file, never a
  traceback, never torch's "weights_only=False" advice.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ledger.errors import InputError
from ledger.hashing import tensors
from ledger.hashing.tensors import container_problem, tensor_digest
from tests.hashing.test_tensors import lightning_checkpoint, make_state_dict

# -- building crafted torch files ----------------------------------------------------


def saved(tmp_path: Path, obj: object, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def rezip(
    source: Path,
    target: Path,
    edit: Callable[[str, bytes], bytes] = lambda _name, data: data,
    *,
    add: dict[str, bytes] | None = None,
) -> Path:
    """``source``'s members, each through ``edit``, stored (uncompressed) in ``target``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        top = old.namelist()[0].split("/")[0]
        for info in old.infolist():
            new.writestr(info.filename, edit(info.filename, old.read(info)))
        for name, data in (add or {}).items():
            new.writestr(f"{top}/{name}", data)
    return target


def problem_of(path: Path) -> str:
    problem = container_problem(path)
    assert problem is not None, f"{path.name} passed as a clean container"
    return problem


def test_a_resave_under_another_name_and_a_rezip_stay_clean(tmp_path: Path) -> None:
    state = make_state_dict()
    first = saved(tmp_path, state, "a.pt")
    second = saved(tmp_path, state, "a-much-longer-name.pt")
    assert container_problem(first) is None
    assert container_problem(second) is None
    # the same members rewritten by another zip writer (no padding, no descriptors)
    assert container_problem(rezip(first, tmp_path / "rezipped.pt")) is None
    assert tensor_digest(tmp_path / "rezipped.pt").root == tensor_digest(first).root


def test_an_extra_zip_member_is_named(tmp_path: Path) -> None:
    source = saved(tmp_path, make_state_dict())
    path = rezip(source, tmp_path / "x.pt", add={"extra.bin": b"\1" * 100})
    assert tensor_digest(path).root == tensor_digest(tmp_path / "model.pt").root
    assert "extra.bin" in problem_of(path)


def test_an_unreferenced_storage_member_is_named(tmp_path: Path) -> None:
    source = saved(tmp_path, make_state_dict())
    path = rezip(source, tmp_path / "x.pt", add={"data/999": b"\0" * 64})
    assert "data/999" in problem_of(path)


def test_a_storage_longer_than_its_tensors_is_named(tmp_path: Path) -> None:
    def lengthen(name: str, data: bytes) -> bytes:
        return data + b"\xab" * 4096 if name.endswith("/data/0") else data

    path = rezip(saved(tmp_path, make_state_dict()), tmp_path / "x.pt", lengthen)
    assert tensor_digest(path).root == tensor_digest(tmp_path / "model.pt").root
    assert "data/0" in problem_of(path)


def test_a_view_saved_with_its_whole_storage_is_named(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    path = saved(tmp_path, {"row": base[2]})  # torch.save writes all 60 elements
    assert "outside any tensor" in problem_of(path)
    covered = saved(tmp_path, {"top": base[:3], "bottom": base[3:]}, "covered.pt")
    assert container_problem(covered) is None  # two views that cover their storage


def test_bytes_after_the_pickles_stop_are_named(tmp_path: Path) -> None:
    def pad(name: str, data: bytes) -> bytes:
        return data + b"hidden payload" if name.endswith("/data.pkl") else data

    path = rezip(saved(tmp_path, make_state_dict()), tmp_path / "x.pt", pad)
    assert tensor_digest(path).root == tensor_digest(tmp_path / "model.pt").root
    assert "STOP" in problem_of(path)


@pytest.mark.parametrize("key", ["model", "model_state_dict", "ema", "weights"])
def test_other_weights_beside_the_state_dict_are_named(tmp_path: Path, key: str) -> None:
    genuine, other = make_state_dict(0), make_state_dict(1)
    path = saved(tmp_path, {"state_dict": genuine, key: other, "epoch": 3})
    assert tensor_digest(path).root == tensor_digest(saved(tmp_path, genuine, "g.pt")).root
    assert repr(key) in problem_of(path)


def test_a_tensor_hidden_in_the_state_dicts_metadata_is_named(tmp_path: Path) -> None:
    state: OrderedDict[str, torch.Tensor] = OrderedDict(make_state_dict())
    state._metadata = {"": {"version": 1}, "payload": torch.ones(256)}  # type: ignore[attr-defined]
    path = saved(tmp_path, state)
    assert "not part of the state dict" in problem_of(path)


def test_a_lightning_checkpoint_is_clean_and_lists_its_training_state(tmp_path: Path) -> None:
    path = saved(tmp_path, lightning_checkpoint(make_state_dict()), "epoch=3.ckpt")
    audit = tensors.audit_container(path)
    assert audit.problems == ()
    listed = " ".join(audit.training_state)
    for key in ("optimizer_states", "lr_schedulers", "callbacks"):
        assert key in listed
    plain = saved(tmp_path, {"state_dict": make_state_dict(), "epoch": 3, "lr": 0.1}, "p.pt")
    assert tensors.audit_container(plain).problems == ()


def test_zip_layout_tricks_are_named(tmp_path: Path) -> None:
    data = saved(tmp_path, make_state_dict()).read_bytes()
    prefixed = tmp_path / "prefixed.pt"
    prefixed.write_bytes(b"\0" * 512 + data)
    assert "before" in problem_of(prefixed)
    appended = tmp_path / "appended.pt"
    appended.write_bytes(data + b"tail")
    assert "appended" in problem_of(appended)
    commented = rezip(tmp_path / "model.pt", tmp_path / "commented.pt")
    with zipfile.ZipFile(commented, "a") as archive:
        archive.comment = b"a comment can carry anything"
    assert "comment" in problem_of(commented)


def test_a_member_hidden_between_members_is_named(tmp_path: Path) -> None:
    source = saved(tmp_path, make_state_dict())
    target = tmp_path / "hidden.pt"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for i, info in enumerate(old.infolist()):
            new.writestr(info.filename, old.read(info))
            if i == 0:  # a whole local record no directory entry points to
                hidden = io.BytesIO()
                with zipfile.ZipFile(hidden, "w") as inner:
                    inner.writestr("model/other.bin", b"\7" * 300)
                new.fp.write(hidden.getvalue()[: 30 + 15 + 300])  # type: ignore[union-attr]
                new.start_dir = new.fp.tell()  # type: ignore[union-attr]
    assert tensor_digest(target).root == tensor_digest(source).root
    assert "unaccounted bytes" in problem_of(target)


def test_data_in_a_local_extra_field_is_named(tmp_path: Path) -> None:
    source = saved(tmp_path, make_state_dict())
    target = tmp_path / "extra.pt"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            fresh = zipfile.ZipInfo(info.filename, info.date_time)
            if info.filename.endswith("data.pkl"):
                fresh.extra = struct.pack("<HH", 0x9999, 200) + os.urandom(200)
            new.writestr(fresh, old.read(info))
    assert "extra field" in problem_of(target)


# -- safetensors ---------------------------------------------------------------------


def safetensors_bytes(header: dict[str, object], body: bytes, pad: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() + pad
    return struct.pack("<Q", len(raw)) + raw + body


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_safetensors_metadata_and_padding_stay_clean(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(make_state_dict(), str(path), metadata={"format": "pt", "note": "x" * 1000})
    assert container_problem(path) is None


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}},
            bytes(24),
            "gap",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            bytes(12),
            "overlap",
        ),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
         bytes(8) + b"tail", "after"),
    ],
    ids=["gap", "overlap", "trailing"],
)  # fmt: skip
def test_safetensors_bytes_outside_tensors_are_named(
    tmp_path: Path, header: dict[str, object], body: bytes, expected: str
) -> None:
    path = write(tmp_path, "x.safetensors", safetensors_bytes(header, body))
    assert expected in problem_of(path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
         b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', "twice"),
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}', "shape"),
        (b'{"a":{"dtype":"Q99","shape":[1],"data_offsets":[0,4]}}', "dtype"),
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":[1]}}',
         "__metadata__"),
    ],
    ids=["duplicate-name", "size-disagrees-with-shape", "unknown-dtype", "metadata-not-strings"],
)  # fmt: skip
def test_malformed_safetensors_headers_are_refused(
    tmp_path: Path, raw: bytes, expected: str
) -> None:
    path = write(tmp_path, "x.safetensors", struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(InputError, match=expected) as info:
        tensor_digest(path)
    assert str(path) in str(info.value)


# -- hostile input stays bounded -------------------------------------------------------


def deflated_bomb(path: Path, size: int = 1 << 30) -> Path:
    """A torch-shaped zip whose data.pkl inflates to ``size`` bytes."""
    zeros = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("bomb/data.pkl", "w", force_zip64=True) as member,
    ):
        for _ in range(size >> 20):
            member.write(zeros)
    return path


def nested_pickle_zip(path: Path, depth: int = 100_000) -> Path:
    pickled = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("nested/data.pkl", pickled)
        archive.writestr("nested/byteorder", b"little")
    return path


def huge_storage_zip(path: Path) -> Path:
    """A state dict whose one tensor declares 2**50 float elements, backed by 16 bytes."""
    pickled = (
        b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
        b"\x8a\x07" + (1 << 50).to_bytes(7, "little") + b"tQK\x00\x8a\x07"
        + (1 << 50).to_bytes(7, "little") + b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)R"
        b"tRs."
    )  # fmt: skip
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("huge/data.pkl", pickled)
        archive.writestr("huge/byteorder", b"little")
        archive.writestr("huge/data/0", bytes(16))
    return path


DEEP_TUPLE = b")" + b"\x85" * 1_000_000  # (), then TUPLE1 a million times


def deep_key_zip(path: Path, prefix: bytes = b"") -> Path:
    """A torch zip whose pickle keys a dict by a tuple nested a million deep: hashing
    it overflows the C stack (a crash, exit 139, no exception), in torch's
    weights-only unpickler too. ``prefix`` (a global ledger's reader leaves to torch)
    makes the file one that torch would be handed."""
    pickled = b"\x80\x02" + prefix + b"}" + DEEP_TUPLE + b"Ns" + (b"0" if prefix else b"") + b"."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("deep/data.pkl", pickled)
        archive.writestr("deep/byteorder", b"little")
    return path


def deep_key_legacy(tmp_path: Path) -> Path:
    """A legacy (pre-zip) torch file whose object pickle holds such a key: torch reads
    those pickles end to end with its weights-only unpickler."""
    import pickletools

    source = tmp_path / "legacy.pt"
    torch.save(make_state_dict(), source, _use_new_zipfile_serialization=False)
    data = source.read_bytes()
    at = 0
    for _ in range(3):  # the magic number, the protocol, the system info
        *_, (_, _, end) = pickletools.genops(data[at:])
        at += int(end or 0) + 1
    *_, (_, _, end) = pickletools.genops(data[at:])
    deep = b"\x80\x02}" + DEEP_TUPLE + b"Ns."
    return write(tmp_path, "legacy-deep.pt", data[:at] + deep + data[at + int(end or 0) + 1 :])


def raw_header_safetensors(tmp_path: Path, name: str, raw: bytes, body: bytes) -> Path:
    return write(tmp_path, name, struct.pack("<Q", len(raw)) + raw + body)


def many_names_of_one_storage(tmp_path: Path) -> Path:
    """A torch file naming one 4 MiB storage 100 times (torch.save keeps it once):
    its tensors would be hashed 100 times over."""
    shared = torch.zeros(1 << 20)
    return saved(tmp_path, {f"view{i}": shared for i in range(100)}, "many-names.pt")


HOSTILE: dict[str, Callable[[Path], Path]] = {
    "many-names-of-one-storage.pt": many_names_of_one_storage,
    # many names of one range: each would be hashed once per name
    "overlapping-offsets.safetensors": lambda p: write(
        p,
        "overlap.safetensors",
        safetensors_bytes(
            {
                f"t{i}": {"dtype": "U8", "shape": [4096], "data_offsets": [0, 4096]}
                for i in range(50)
            },
            bytes(4096),
        ),
    ),
    "huge-number.safetensors": lambda p: raw_header_safetensors(
        p,
        "bignum.safetensors",
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1' + b"0" * 5000 + b"]}}",
        bytes(1),
    ),
    "surrogate-name.safetensors": lambda p: raw_header_safetensors(
        p,
        "surrogate.safetensors",
        b'{"\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        bytes(1),
    ),
    "shape-past-64-bits.safetensors": lambda p: write(
        p,
        "shape.safetensors",
        safetensors_bytes(
            {"a": {"dtype": "U8", "shape": [1 << 64, 0], "data_offsets": [0, 0]}}, b""
        ),
    ),
    "deep-tuple-key.pt": lambda p: deep_key_zip(p / "deep.pt"),
    "deep-tuple-key-for-torch.pt": lambda p: deep_key_zip(
        p / "deep-torch.pt", b"ccollections\nOrderedDict\n)R"
    ),
    "deep-tuple-key-legacy.pt": deep_key_legacy,
    "empty.pt": lambda p: write(p, "empty.pt", b""),
    "empty.safetensors": lambda p: write(p, "empty.safetensors", b""),
    "empty.ckpt": lambda p: write(p, "empty.ckpt", b""),
    "random.pt": lambda p: write(p, "random.pt", os.urandom(4096)),
    "text.bin": lambda p: write(p, "text.bin", b"not a model at all\n" * 10),
    "foreign.zip.pt": lambda p: rezip_foreign(p / "foreign.pt"),
    "truncated-pickle.pt": lambda p: truncated_pickle(p),
    "nested-pickle.pt": lambda p: nested_pickle_zip(p / "nested.pt"),
    "deflate-bomb.pt": lambda p: deflated_bomb(p / "bomb.pt"),
    "huge-storage.pt": lambda p: huge_storage_zip(p / "huge.pt"),
    "nested-header.safetensors": lambda p: write(
        p, "nested.safetensors", struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000
    ),
    "huge-tensor.safetensors": lambda p: write(
        p,
        "huge.safetensors",
        safetensors_bytes(
            {"w": {"dtype": "U8", "shape": [1 << 60], "data_offsets": [0, 1 << 60]}}, bytes(8)
        ),
    ),
    "huge-header-length.safetensors": lambda p: write(
        p, "hlen.safetensors", struct.pack("<Q", 1 << 60) + b"{}"
    ),
    "many-lists.safetensors": lambda p: write(
        p,
        "lists.safetensors",
        struct.pack("<Q", 3 * (1 << 22)) + b"[" + b"[]," * ((1 << 22) - 1) + b"[]]",
    ),
}


def rezip_foreign(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", b"hello")
        archive.writestr("docs/index.html", b"<html></html>")
    return path


def truncated_pickle(tmp_path: Path) -> Path:
    return rezip(
        saved(tmp_path, make_state_dict(), "full.pt"),
        tmp_path / "truncated.pt",
        lambda name, data: data[: len(data) // 2] if name.endswith("data.pkl") else data,
    )


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_files_give_one_input_error(tmp_path: Path, kind: str) -> None:
    path = HOSTILE[kind](tmp_path)
    with pytest.raises(InputError) as info:
        tensor_digest(path)
    message = str(info.value)
    assert str(path) in message
    assert "weights_only" not in message and "Traceback" not in message
    if kind not in ("deflate-bomb.pt",):
        assert "needs code" not in message  # none of these is a pickle that needs code

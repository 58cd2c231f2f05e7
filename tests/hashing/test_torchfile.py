"""The torch-free reader of ``torch.save`` files (``ledger.hashing._torchfile``).

Its leaves must be byte-identical to those of the ``torch.load`` path (the
``tensors-sha256-v1`` scheme does not change with the reader), for every dtype
and layout ``torch.save`` writes; whatever it does not understand it must hand
to torch (``CannotRead``) rather than guess; and it must never run the pickle.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from ledger.errors import UnsupportedFormatError
from ledger.hashing._torchfile import Broken, CannotRead, interpret, read_tensors
from ledger.hashing.tensors import (
    TensorDigest,
    TensorLeaf,
    _torch_load_leaves,
    digest_leaves,
    state_dict_digest,
    tensor_digest,
)
from tests.hashing.test_tensors import (
    OpensFile,
    RunsShell,
    lightning_checkpoint,
    make_state_dict,
    root_without_importing_torch,
    save_evil,
)


def without_torch(path: Path) -> TensorDigest:
    tensors = read_tensors(path)
    assert tensors is not None
    return digest_leaves(TensorLeaf(*t) for t in tensors)


def with_torch(path: Path) -> TensorDigest:
    return digest_leaves(_torch_load_leaves(path))


def assert_same_leaves(path: Path) -> TensorDigest:
    ours, theirs = without_torch(path), with_torch(path)
    assert ours.leaves == theirs.leaves  # name, dtype, shape and data digest, one by one
    assert ours.root == theirs.root
    assert tensor_digest(path) == ours
    assert tensor_digest(path, data=path.read_bytes()) == ours  # the outbox worker's way
    return ours


def every_dtype() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    values = torch.randn(3, 5) * 50
    return {
        "f32": values.clone(),
        "f64": values.double(),
        "f16": values.half(),
        "bf16": values.bfloat16(),
        "i8": values.clamp(-128, 127).to(torch.int8),
        "i16": values.to(torch.int16),
        "i32": values.to(torch.int32),
        "i64": values.to(torch.int64),
        "u8": values.abs().clamp(0, 255).to(torch.uint8),
        "bool": values > 0,
        "c64": torch.complex(values, -values),
        "u16": values.abs().to(torch.int32).to(torch.uint16),
        "u32": values.abs().to(torch.int64).to(torch.uint32),
        "u64": values.abs().to(torch.int64).to(torch.uint64),
        "f8_e4m3": (values / 10).to(torch.float8_e4m3fn),
        "f8_e5m2": (values / 10).to(torch.float8_e5m2),
    }


def test_every_dtype_gives_the_leaves_of_the_torch_path(tmp_path: Path) -> None:
    state = every_dtype()
    path = tmp_path / "dtypes.pt"
    torch.save(state, path)
    digest = assert_same_leaves(path)
    assert {leaf.name: leaf.dtype for leaf in digest.leaves} == {
        "f32": "F32", "f64": "F64", "f16": "F16", "bf16": "BF16", "i8": "I8", "i16": "I16",
        "i32": "I32", "i64": "I64", "u8": "U8", "bool": "BOOL", "c64": "C64", "u16": "U16",
        "u32": "U32", "u64": "U64", "f8_e4m3": "F8_E4M3", "f8_e5m2": "F8_E5M2",
    }  # fmt: skip
    assert digest.root == state_dict_digest(state).root


def test_odd_shapes_views_and_shared_storages(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {
        "scalar": torch.tensor(2.5),
        "scalar.int": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0),
        "empty.2d": torch.zeros(3, 0, dtype=torch.float16),
        "base": base,
        "row": base[2],  # a view at storage offset 20
        "rows": base[3:5],  # offset 30, two rows
        "tied": base,  # the same tensor under two names
        "odd.stride": base.as_strided((1, 10), (99, 1), 20),  # a size-1 dim's stride is moot
        "single": base[5, 9:10],
        "ones": torch.ones(1, 1, 3),
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:  # the views share one storage in the file
        assert sum("/data/" in name for name in archive.namelist()) == 6
    digest = assert_same_leaves(path)
    assert digest.root == state_dict_digest(state).root
    shapes = {leaf.name: leaf.shape for leaf in digest.leaves}
    assert shapes["scalar"] == () and shapes["empty.2d"] == (3, 0) and shapes["rows"] == (2, 10)


def test_model_state_dicts_parameters_and_checkpoint_wrappers(tmp_path: Path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    state = model.state_dict()  # carries _metadata, set on the OrderedDict by BUILD
    assert hasattr(state, "_metadata")
    torch.save(state, tmp_path / "model.pt")
    expected = assert_same_leaves(tmp_path / "model.pt").root
    assert expected == state_dict_digest(state).root

    params = dict(model.named_parameters())  # nn.Parameter objects, not plain tensors
    torch.save(params, tmp_path / "params.pt")
    assert_same_leaves(tmp_path / "params.pt")

    for key in ("state_dict", "model_state_dict", "model"):
        wrapped = tmp_path / f"{key}.pt"
        torch.save({key: state, "epoch": 3, "note": b"bytes", "best": [0.5, None]}, wrapped)
        assert assert_same_leaves(wrapped).root == expected


def test_a_lightning_checkpoint_is_read_without_torch(tmp_path: Path) -> None:
    state = make_state_dict()
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(lightning_checkpoint(state), path)
    assert assert_same_leaves(path).root == state_dict_digest(state).root


def test_pytorch_model_bin_shards_are_read_without_torch(tmp_path: Path) -> None:
    state = make_state_dict()
    names = sorted(state)
    weight_map = {}
    for k, part in enumerate((names[:4], names[4:])):
        shard = f"pytorch_model-{k + 1:05d}-of-00002.bin"
        torch.save({n: state[n] for n in part}, tmp_path / shard)
        weight_map.update(dict.fromkeys(part, shard))
        assert_same_leaves(tmp_path / shard)
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert tensor_digest(tmp_path).root == state_dict_digest(state).root


def test_a_large_file_hashed_on_threads_gives_the_same_leaves(tmp_path: Path) -> None:
    state = {f"layer.{i}": torch.rand(1024, 1024) for i in range(10)}  # 40 MiB: threaded
    path = tmp_path / "big.pt"
    torch.save(state, path)
    tensors = read_tensors(path, workers=2)
    assert tensors == read_tensors(path, workers=1)
    assert assert_same_leaves(path).root == state_dict_digest(state).root


@pytest.mark.parametrize(
    "content",
    [{"a": 1}, {}, [torch.zeros(2)], {"state_dict": {"lr": 0.1}, "epoch": 3}],
    ids=["no-tensors", "empty", "list", "state_dict-without-tensors"],
)
def test_no_state_dict_is_known_without_torch(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "other.pt"
    torch.save(content, path)
    assert read_tensors(path) is None
    with pytest.raises(UnsupportedFormatError, match="no state dict"):
        tensor_digest(path)


# -- what the reader hands to torch -------------------------------------------------


def test_a_non_contiguous_tensor_is_left_to_torch(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"w": base.t(), "b": torch.ones(2), "column": base[:, 1:2]}
    path = tmp_path / "strided.pt"
    torch.save(state, path)
    with pytest.raises(CannotRead, match="not contiguous"):
        read_tensors(path)
    assert tensor_digest(path).root == state_dict_digest(state).root  # via torch


def test_a_big_endian_file_is_left_to_torch(tmp_path: Path) -> None:
    path = tmp_path / "little.pt"
    torch.save({"w": torch.arange(4, dtype=torch.int32)}, path)
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(big, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/byteorder"):
                assert data == b"little"
                data = b"big"
            if info.filename.endswith("/data/0"):  # as a big-endian machine wrote it
                data = b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))
            target.writestr(info, data)
    with pytest.raises(CannotRead, match="byte order big"):
        read_tensors(big)
    # torch swaps the bytes when it loads: the same values, so the same root
    assert tensor_digest(big).root == tensor_digest(path).root


def test_legacy_and_compressed_files_are_left_to_torch(tmp_path: Path) -> None:
    state = make_state_dict()
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CannotRead, match="not a zip"):
        read_tensors(legacy)
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
    with pytest.raises(CannotRead, match="compressed"):
        read_tensors(deflated)


@pytest.mark.parametrize(
    ("pickled", "reason"),
    [
        (b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueR.", "posix.system"),
        (b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "builtins.eval"),
        (b"\x80\x02ccollections\nOrderedDict\nX\x01\x00\x00\x00a\x85R.", "OrderedDict built"),
        (b"\x80\x02}X\x01\x00\x00\x00a}b.", "BUILD"),
        (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "NEWOBJ"),
        (b"\x80\x02]K\x01.", "malformed stack"),
        (b"\x80\x02(K\x01K\x02.", "malformed stack"),
        (b"\x80\x02K\x01", "truncated"),
        (b"\x80\x02h\x05.", "malformed or truncated pickle"),
        (b"\x80\x02}]K\x01s.", "malformed or truncated pickle"),  # a list as a dict key
        (b"\x80\x02(X\x01\x00\x00\x00aK\x01K\x02t\x81.", "NEWOBJ"),
        (b"\x80\x02X\x07\x00\x00\x00storageQ.", "persistent id"),
    ],
)
def test_anything_else_in_the_pickle_is_refused(pickled: bytes, reason: str) -> None:
    with pytest.raises(CannotRead, match=reason) as info:
        interpret(pickled)
    # a broken pickle is not handed to torch; one outside the reader's language is
    assert isinstance(info.value, Broken) == ("malformed" in reason or "truncated" in reason)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [OpensFile, RunsShell])
@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "inside-state-dict"])
def test_a_reduce_payload_is_refused_and_never_runs(
    tmp_path: Path, payload: type[OpensFile] | type[RunsShell], wrap: bool
) -> None:
    path, marker = save_evil(tmp_path, payload, wrap=wrap)
    with pytest.raises(CannotRead, match="does not know"):
        read_tensors(path)
    assert not marker.exists()
    with pytest.raises(CannotRead, match="does not know"):
        read_tensors(path, data=path.read_bytes())
    with pytest.raises(UnsupportedFormatError, match="refused to load"):
        tensor_digest(path)  # torch's weights-only loader refuses it too
    with pytest.raises(UnsupportedFormatError, match="refused to load"):
        tensor_digest(path, data=path.read_bytes())
    assert not marker.exists()
    torch.load(path, weights_only=False)  # control: the payload is live
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_protocol_4_file_is_left_to_torch(tmp_path: Path) -> None:
    # torch's weights-only loader has no FRAME opcode; neither has this reader
    path = tmp_path / "proto4.pt"
    torch.save(make_state_dict(), path, pickle_protocol=4)
    with pytest.raises(CannotRead, match="FRAME"):
        read_tensors(path)
    with pytest.raises(UnsupportedFormatError, match="refused to load"):
        tensor_digest(path)


def test_tensor_digest_of_a_torch_file_does_not_import_torch(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.ckpt"
    state = make_state_dict()
    torch.save(lightning_checkpoint(state), path)
    assert root_without_importing_torch(path) == state_dict_digest(state).root.hex()


def test_checkpoints_of_one_model_share_the_pickle_but_not_their_digests(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    roots = []
    for step in range(3):
        with torch.no_grad():
            model[0].weight[0, 0] += 1.0  # one element changes between checkpoints
        path = tmp_path / f"step-{step}.pt"
        torch.save(model.state_dict(), path)
        roots.append(tensor_digest(path, data=path.read_bytes()))
        assert roots[-1] == with_torch(path)
    first, second = (zipfile.ZipFile(tmp_path / f"step-{i}.pt") for i in range(2))
    pickled = [z.read(n) for z in (first, second) for n in z.namelist() if n.endswith("data.pkl")]
    assert pickled[0] == pickled[1]  # what the worker interprets once per run
    assert len({r.root for r in roots}) == 3
    assert [leaf.name for leaf in roots[1].leaves if leaf not in roots[0].leaves] == ["0.weight"]

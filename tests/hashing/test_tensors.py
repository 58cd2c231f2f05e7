"""Tensor roots (``ledger.hashing.tensors``): container-independent, safe to compute.

The same weights must give the same root whether they sit in a ``torch.save``
file (under any name), a ``.safetensors`` file, a checkpoint dict, or memory;
and reading a weights file must never run code from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from ledger.errors import FileMissingError, InputError, UnsupportedFormatError
from ledger.hashing.cid import file_cid
from ledger.hashing.tensors import (
    TENSORS_SCHEME,
    diff_tensors,
    state_dict_digest,
    tensor_digest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small model's weights plus tensors of several dtypes, incl. a 0-dim one."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    sd = {name: t.detach().clone() for name, t in model.state_dict().items()}
    assert sd["1.num_batches_tracked"].dtype == torch.int64
    assert sd["1.num_batches_tracked"].dim() == 0
    sd["extra.f16"] = torch.randn(2, 5).to(torch.float16)
    sd["extra.bf16"] = torch.randn(3, 2).to(torch.bfloat16)
    sd["extra.i64"] = torch.arange(-3, 7, dtype=torch.int64).reshape(2, 5)
    sd["extra.mask"] = torch.tensor([[True, False, True], [False, False, True]])
    sd["extra.scalar"] = torch.tensor(2.5)
    return sd


def leaf_hash(name: str, dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """The ``tensors-sha256-v1`` leaf, written out from the scheme's description."""
    n, d = name.encode(), dtype.encode()
    body = (
        b"\x00"
        + struct.pack(">I", len(n))
        + n
        + struct.pack(">I", len(d))
        + d
        + struct.pack(">I", len(shape))
        + b"".join(struct.pack(">Q", x) for x in shape)
        + hashlib.sha256(data).digest()
    )
    return hashlib.sha256(body).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


# -- one identity across containers ---------------------------------------------


def test_same_weights_same_root_in_every_container(tmp_path: Path) -> None:
    sd = make_state_dict()
    expected = state_dict_digest(sd).root

    first = tmp_path / "model.pt"
    second = tmp_path / "a-much-longer-checkpoint-name.pt"
    torch.save(sd, first)
    torch.save(sd, second)
    # torch writes the file name into the archive: the files (and CIDs) differ ...
    assert first.read_bytes() != second.read_bytes()
    assert file_cid(first) != file_cid(second)
    # ... yet the weights, and so the tensor roots, are the same.
    assert tensor_digest(first).root == expected
    assert tensor_digest(second).root == expected

    safe = tmp_path / "model.safetensors"
    save_file(sd, str(safe))
    assert tensor_digest(safe).root == expected

    wrapped = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": sd, "epoch": 3}, wrapped)
    assert tensor_digest(wrapped).root == expected

    legacy = tmp_path / "legacy.pt"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    assert tensor_digest(legacy).root == expected


def test_leaves_name_every_tensor_with_dtype_and_shape(tmp_path: Path) -> None:
    sd = make_state_dict()
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    digest = tensor_digest(path)
    assert digest.scheme == TENSORS_SCHEME
    index = digest.index()
    assert index["scheme"] == "tensors-sha256-v1"
    assert index["root"] == digest.root.hex()
    assert set(index["tensors"]) == set(sd)
    assert index["tensors"]["0.weight"]["dtype"] == "F32"
    assert index["tensors"]["0.weight"]["shape"] == [3, 4]
    assert index["tensors"]["extra.f16"]["dtype"] == "F16"
    assert index["tensors"]["extra.bf16"]["dtype"] == "BF16"
    assert index["tensors"]["extra.i64"]["dtype"] == "I64"
    assert index["tensors"]["extra.mask"]["dtype"] == "BOOL"
    assert index["tensors"]["extra.scalar"]["shape"] == []
    assert index["tensors"]["1.num_batches_tracked"]["shape"] == []
    expected_data = sd["extra.i64"].numpy().tobytes()
    assert index["tensors"]["extra.i64"]["sha256"] == hashlib.sha256(expected_data).hexdigest()
    # leaves are sorted by name (UTF-8 byte order)
    names = [leaf.name for leaf in digest.leaves]
    assert names == sorted(sd, key=str.encode)
    # the index is plain JSON
    assert json.loads(json.dumps(index)) == index


def test_root_follows_the_documented_scheme() -> None:
    a = torch.tensor([1.0, 2.0], dtype=torch.float32)
    b = torch.tensor([[1, 2], [3, 4]], dtype=torch.int64)
    c = torch.tensor(True)
    la = leaf_hash("a", "F32", (2,), a.numpy().tobytes())
    lb = leaf_hash("b", "I64", (2, 2), b.numpy().tobytes())
    lc = leaf_hash("c", "BOOL", (), b"\x01")

    assert state_dict_digest({"a": a}).root == la
    assert state_dict_digest({"b": b, "a": a}).root == node(la, lb)
    # an odd last node moves up unchanged
    assert state_dict_digest({"c": c, "a": a, "b": b}).root == node(node(la, lb), lc)


def test_root_does_not_depend_on_insertion_order(tmp_path: Path) -> None:
    sd = make_state_dict()
    backwards = dict(reversed(list(sd.items())))
    assert list(backwards) != list(sd)
    assert state_dict_digest(backwards).root == state_dict_digest(sd).root
    torch.save(backwards, tmp_path / "backwards.pt")
    assert tensor_digest(tmp_path / "backwards.pt").root == state_dict_digest(sd).root


def test_non_contiguous_tensors_hash_as_their_row_major_values() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    transposed = base.t()
    assert not transposed.is_contiguous()
    assert (
        state_dict_digest({"w": transposed}).root
        == state_dict_digest({"w": transposed.contiguous()}).root
    )


# -- changes are detected and explained -------------------------------------------


def test_one_changed_element_changes_the_root_and_is_named(tmp_path: Path) -> None:
    sd = make_state_dict()
    path = tmp_path / "before.pt"
    torch.save(sd, path)
    recorded = json.loads(json.dumps(tensor_digest(path).index()))  # as stored

    changed = {name: t.clone() for name, t in sd.items()}
    changed["0.weight"][1, 2] += 1.0
    after = tmp_path / "after.safetensors"
    save_file(changed, str(after))
    new = tensor_digest(after)

    assert new.root.hex() != recorded["root"]
    diff = diff_tensors(recorded, new)
    assert diff.changed == ("0.weight",)
    assert diff.added == ()
    assert diff.removed == ()
    assert not diff.empty


def test_identical_weights_give_an_empty_diff(tmp_path: Path) -> None:
    sd = make_state_dict()
    torch.save(sd, tmp_path / "w.pt")
    recorded = json.loads(json.dumps(tensor_digest(tmp_path / "w.pt").index()))
    diff = diff_tensors(recorded, state_dict_digest(sd))
    assert diff.empty
    assert (diff.added, diff.removed, diff.changed) == ((), (), ())


def test_a_renamed_tensor_is_added_and_removed() -> None:
    sd = make_state_dict()
    recorded = state_dict_digest(sd).index()
    renamed = dict(sd)
    renamed["0.kernel"] = renamed.pop("0.weight")
    new = state_dict_digest(renamed)
    assert new.root != state_dict_digest(sd).root
    diff = diff_tensors(recorded, new)
    assert diff.added == ("0.kernel",)
    assert diff.removed == ("0.weight",)
    assert diff.changed == ()


def test_a_dtype_change_with_equal_values_is_a_change() -> None:
    sd = make_state_dict()
    recorded = state_dict_digest(sd).index()
    widened = dict(sd)
    widened["0.bias"] = sd["0.bias"].to(torch.float64)
    assert torch.equal(widened["0.bias"].to(torch.float32), sd["0.bias"])
    new = state_dict_digest(widened)
    assert new.root != state_dict_digest(sd).root
    diff = diff_tensors(recorded, new)
    assert diff.changed == ("0.bias",)
    assert (diff.added, diff.removed) == ((), ())


def test_a_shape_change_with_equal_bytes_is_a_change() -> None:
    w = torch.arange(6, dtype=torch.float32)
    assert state_dict_digest({"w": w}).root != state_dict_digest({"w": w.reshape(2, 3)}).root
    diff = diff_tensors(state_dict_digest({"w": w}).index(), state_dict_digest({"w": w.view(3, 2)}))
    assert diff.changed == ("w",)


# -- safetensors are read without torch ---------------------------------------------


def root_without_importing_torch(path: Path) -> str:
    """``tensor_digest(path)`` in a fresh process that fails if torch gets imported."""
    code = (
        "import sys\n"
        "from ledger.hashing.tensors import tensor_digest\n"
        f"digest = tensor_digest({str(path)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(digest.root.hex())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_safetensors_reading_does_not_import_torch(tmp_path: Path) -> None:
    sd = make_state_dict()
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    assert root_without_importing_torch(path) == state_dict_digest(sd).root.hex()


# -- damaged and foreign files ------------------------------------------------------


def _save_safetensors(tmp_path: Path) -> bytes:
    path = tmp_path / "full.safetensors"
    save_file(make_state_dict(), str(path))
    return path.read_bytes()


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda data: data[:-10], id="body"),
        pytest.param(lambda data: data[:40], id="header"),
        pytest.param(lambda data: data[:5], id="length-prefix"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_a_truncated_safetensors_file_is_unsupported(
    tmp_path: Path, cut: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(cut(_save_safetensors(tmp_path)))
    with pytest.raises(UnsupportedFormatError) as info:
        tensor_digest(path)
    assert isinstance(info.value, InputError)
    assert str(path) in str(info.value)


def test_a_safetensors_header_that_is_not_an_object_is_unsupported(tmp_path: Path) -> None:
    header = b"[1, 2, 3]"
    path = tmp_path / "list.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(UnsupportedFormatError, match="not a JSON object"):
        tensor_digest(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_torch_file_is_unsupported(tmp_path: Path, keep: float) -> None:
    full = tmp_path / "full.pt"
    torch.save(make_state_dict(), full)
    data = full.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UnsupportedFormatError) as info:
        tensor_digest(path)
    assert isinstance(info.value, InputError)


def test_a_missing_file_is_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileMissingError):
        tensor_digest(tmp_path / "nope.pt")
    with pytest.raises(FileMissingError):
        tensor_digest(tmp_path)  # a directory


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"a": 1}, id="no-tensors"),
        pytest.param({}, id="empty-dict"),
        pytest.param([torch.zeros(2)], id="list"),
        pytest.param({"state_dict": {"lr": 0.1}, "epoch": 3}, id="state_dict-without-tensors"),
    ],
)
def test_a_file_holding_no_state_dict_is_unsupported_with_a_hint(
    tmp_path: Path, content: Any
) -> None:
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(UnsupportedFormatError) as info:
        tensor_digest(path)
    assert info.value.hint is not None
    assert "state dict" in info.value.hint


# -- security: a weights file never runs code -----------------------------------------


class OpensFile:
    """Unpickling this creates ``path`` (via ``open(path, "w")``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


class RunsShell:
    """Unpickling this runs ``touch path`` (via ``os.system``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch " + shlex.quote(self.path),))


def _pickle_dump(obj: Any, path: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def _torch_save(obj: Any, path: Path) -> None:
    torch.save(obj, path)


def _torch_save_legacy(obj: Any, path: Path) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def save_evil(
    tmp_path: Path,
    payload: type[OpensFile] | type[RunsShell],
    *,
    wrap: bool,
    saver: Callable[[Any, Path], None] = _torch_save,
) -> tuple[Path, Path]:
    """A weights file whose unpickling would create a marker file: (file, marker)."""
    marker = tmp_path / "pwned"
    evil: Any = payload(marker)
    if wrap:
        evil = {"weight": torch.zeros(2), "bias": evil}
    path = tmp_path / "evil.pt"
    saver(evil, path)
    assert not marker.exists()
    return path, marker


def _load_unsafely(saver: Callable[[Any, Path], None], path: Path) -> None:
    """What ledger must never do: a full unpickle (used only to prove the payload works)."""
    if saver is _pickle_dump:
        with open(path, "rb") as handle:
            pickle.load(handle)
    else:
        torch.load(path, weights_only=False)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [OpensFile, RunsShell])
@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "inside-state-dict"])
@pytest.mark.parametrize(
    "saver", [_pickle_dump, _torch_save, _torch_save_legacy], ids=["pickle", "torch", "legacy"]
)
def test_an_evil_pickle_is_refused_and_never_runs(
    tmp_path: Path,
    payload: type[OpensFile] | type[RunsShell],
    wrap: bool,
    saver: Callable[[Any, Path], None],
) -> None:
    path, marker = save_evil(tmp_path, payload, wrap=wrap, saver=saver)

    with pytest.raises(UnsupportedFormatError) as info:
        tensor_digest(path)
    assert isinstance(info.value, InputError)
    assert not marker.exists()

    # hashing the bytes is always fine: nothing is parsed
    cid = file_cid(path)
    assert cid.version == 1
    assert not marker.exists()

    # control: the payload is live, so the assertions above could have failed
    _load_unsafely(saver, path)
    assert marker.exists()


def test_an_evil_pickle_named_safetensors_is_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    _pickle_dump(OpensFile(marker), path)
    with pytest.raises(UnsupportedFormatError):
        tensor_digest(path)
    assert not marker.exists()


# -- Lightning checkpoints and Hugging Face folders ------------------------------------


def lightning_checkpoint(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What Lightning's ``trainer.save_checkpoint`` writes, built by hand (no lightning).

    Optimizer and scheduler states come from real torch objects after a step.
    """
    params = [torch.nn.Parameter(t.clone().float()) for t in sd.values() if t.is_floating_point()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    sum(p.sum() for p in params).backward()  # type: ignore[union-attr]
    optimizer.step()
    scheduler.step()
    return {
        "epoch": 4,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": sd,
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_progress": {"total": {"ready": 5, "completed": 4}, "current": {"ready": 5}},
                "epoch_loop.batch_progress": {"total": {"ready": 120, "completed": 120}},
            }
        },
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.125),
                "best_model_path": "checkpoints/epoch=3-step=120.ckpt",
                "current_score": torch.tensor(0.125),
                "dirpath": "checkpoints",
                "best_k_models": {"checkpoints/epoch=3-step=120.ckpt": torch.tensor(0.125)},
                "kth_best_model_path": "checkpoints/epoch=3-step=120.ckpt",
                "kth_value": torch.tensor(float("inf")),
                "last_model_path": "",
            },
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                "wait_count": 0,
                "stopped_epoch": 0,
                "best_score": torch.tensor(0.125),
                "patience": 3,
            },
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "lr": 1e-3,
            "hidden": [16, 8],
            "betas": (0.9, 0.999),
            "activation": "relu",
            "dropout": None,
            "use_bias": True,
        },
    }


def test_a_lightning_checkpoint_has_the_root_of_its_bare_state_dict(tmp_path: Path) -> None:
    sd = make_state_dict()
    checkpoint = lightning_checkpoint(sd)
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(checkpoint, path)
    # every field loads without running code
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == set(checkpoint)
    assert loaded["optimizer_states"][0]["state"]  # Adam moments, as tensors
    assert tensor_digest(path).root == state_dict_digest(sd).root
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)
    assert tensor_digest(path).root == tensor_digest(bare).root


def test_a_lightning_checkpoint_with_code_in_its_hyper_parameters_is_refused(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    checkpoint = lightning_checkpoint(make_state_dict())
    checkpoint["hyper_parameters"]["callback"] = OpensFile(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(UnsupportedFormatError, match="refused to load") as info:
        tensor_digest(path)
    assert info.value.hint is not None and "Lightning" in info.value.hint
    assert not marker.exists()


def save_sharded(
    sd: dict[str, torch.Tensor], folder: Path, shards: int = 2, *, index: bool = True
) -> dict[str, str]:
    """Save ``sd`` as Hugging Face does: ``model-0000k-of-0000n.safetensors`` + an index."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(sd)
    weight_map: dict[str, str] = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: sd[n].contiguous() for n in names[k::shards]}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    if index:
        total = sum(t.numel() * t.element_size() for t in sd.values())
        document = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(document, indent=2))
    (folder / "config.json").write_text('{"model_type": "tiny"}')
    return weight_map


def test_a_sharded_hugging_face_folder_has_the_root_of_one_file(tmp_path: Path) -> None:
    sd = make_state_dict()
    expected = state_dict_digest(sd).root

    single = tmp_path / "single"
    single.mkdir()
    save_file(sd, str(single / "model.safetensors"))
    assert tensor_digest(single).root == expected

    sharded = tmp_path / "sharded"
    weight_map = save_sharded(sd, sharded, shards=3)
    assert len(set(weight_map.values())) == 3
    digest = tensor_digest(sharded)
    assert digest.root == expected
    assert {leaf.name for leaf in digest.leaves} == set(sd)

    torch_shards = tmp_path / "torch-shards"
    torch_shards.mkdir()
    names = sorted(sd)
    torch_map: dict[str, str] = {}
    for k, chunk in enumerate((names[:4], names[4:])):
        shard = f"pytorch_model-{k + 1:05d}-of-00002.bin"
        torch.save({n: sd[n] for n in chunk}, torch_shards / shard)
        torch_map.update(dict.fromkeys(chunk, shard))
    (torch_shards / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": torch_map})
    )
    assert tensor_digest(torch_shards).root == expected


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    save_sharded(make_state_dict(), folder, shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileMissingError, match=r"model-00002-of-00002\.safetensors") as info:
        tensor_digest(folder)
    assert "model.safetensors.index.json" in str(info.value)
    assert info.value.hint is not None and "shard" in info.value.hint


def test_an_index_and_shards_that_disagree_are_refused(tmp_path: Path) -> None:
    sd = make_state_dict()
    folder = tmp_path / "model"
    weight_map = save_sharded(sd, folder, shards=2)
    index_path = folder / "model.safetensors.index.json"

    listed_only = dict(weight_map, **{"ghost.weight": "model-00001-of-00002.safetensors"})
    index_path.write_text(json.dumps({"weight_map": listed_only}))
    with pytest.raises(UnsupportedFormatError, match=r"ghost\.weight"):
        tensor_digest(folder)

    unlisted = {k: v for k, v in weight_map.items() if k != "0.bias"}
    index_path.write_text(json.dumps({"weight_map": unlisted}))
    with pytest.raises(UnsupportedFormatError, match=r"'0\.bias', which the index does not list"):
        tensor_digest(folder)

    escaping = dict(weight_map, **{"0.bias": "../elsewhere.safetensors"})
    index_path.write_text(json.dumps({"weight_map": escaping}))
    with pytest.raises(UnsupportedFormatError, match="not a plain file name"):
        tensor_digest(folder)

    index_path.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(UnsupportedFormatError, match="weight_map"):
        tensor_digest(folder)


def test_a_folder_without_weights_says_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileMissingError, match=r"model\.safetensors\.index\.json"):
        tensor_digest(tmp_path)


def test_a_tensor_index_gives_back_its_digest_and_refuses_a_forged_root() -> None:
    from ledger.hashing.tensors import digest_from_index, state_dict_digest_parallel

    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)}
    digest = state_dict_digest(state)
    assert state_dict_digest_parallel(state, 2) == digest
    assert digest_from_index(digest.index()) == digest
    forged = digest.index()
    forged["tensors"]["a"]["sha256"] = "00" * 32  # the root no longer follows
    with pytest.raises(InputError, match="root is not that of its tensors"):
        digest_from_index(forged)
    for broken in ({}, {"scheme": "other"}, {**digest.index(), "tensors": {"a": {}}}):
        with pytest.raises(InputError):
            digest_from_index(broken)

"""Tensor roots: an identity of model weights that ignores the container.

Scheme ``tensors-sha256-v1``. For each tensor of a state dict, sorted by name
(UTF-8 byte order), a leaf::

    leaf = sha256(0x00 || u32 len(name) || name || u32 len(dtype) || dtype
                  || u32 ndim || u64 dim[0] ... || sha256(data))

where ``dtype`` is the safetensors dtype name (``F32``, ``BF16``, ``I64``...),
integers are big-endian and ``data`` is the tensor's row-major little-endian
bytes. Leaves are combined pairwise, ``node = sha256(0x01 || left || right)``,
an odd last node moving up unchanged, until one root is left. The same weights
give the same root whether saved by ``torch.save`` under any file name or as
``.safetensors``; and because every leaf binds its name, two roots that differ
can be explained tensor by tensor (:func:`diff_tensors`).

Readers. ``.safetensors`` files are parsed here from their JSON header (no
torch, no code). Torch files (``.pt``, ``.pth``, ``.bin``, Lightning ``.ckpt``)
written by ``torch.save`` are read by :mod:`ledger.hashing._torchfile` without
torch and without unpickling (the pickle's opcodes are interpreted, never run);
whatever that reader does not fully understand (legacy files, other globals,
non-contiguous or big-endian tensors) is opened with
``torch.load(weights_only=True, mmap=True)``, which refuses pickled code. Either
way the leaves are the same, and the state dict is the file itself when it maps names to tensors,
else the one under ``state_dict`` (Lightning, whose checkpoint also carries
``epoch``, ``global_step``, ``optimizer_states``, ``lr_schedulers``,
``hyper_parameters``...), ``model_state_dict`` or ``model``. A Hugging Face
model folder is read through its weights files (:func:`weights_files`):
``model.safetensors``, or the shards named by ``model.safetensors.index.json``
(likewise ``pytorch_model.bin`` and its index); the root covers every tensor of
every shard and equals the root of the same tensors in one file. Other files of
the folder (config, tokenizer) are not part of the tensor root. A
``torch.distributed.checkpoint`` folder (its ``.metadata``) is read by
:mod:`ledger.hashing.dcp`: the root of its logical state dict, again equal to
that of the gathered tensors in one file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import FileMissingError, InputError, UnsupportedFormatError

TENSORS_SCHEME = "tensors-sha256-v1"

# torch dtype name -> safetensors dtype name
_TORCH_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "complex64": "C64",
}


@dataclass(frozen=True)
class TensorLeaf:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data_digest: bytes

    @property
    def leaf(self) -> bytes:
        try:
            name = self.name.encode()
        except UnicodeEncodeError:  # a lone surrogate, from a crafted file
            raise UnsupportedFormatError(
                f"tensor {self.name!r} has a name that is not text"
            ) from None
        if any(not 0 <= d < 1 << 64 for d in self.shape):
            raise UnsupportedFormatError(
                f"tensor {self.name!r} has a dimension no file can hold: {list(self.shape)}"
            )
        dtype = self.dtype.encode()
        parts = [
            b"\x00",
            struct.pack(">I", len(name)),
            name,
            struct.pack(">I", len(dtype)),
            dtype,
            struct.pack(">I", len(self.shape)),
            *(struct.pack(">Q", d) for d in self.shape),
            self.data_digest,
        ]
        return hashlib.sha256(b"".join(parts)).digest()

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "sha256": self.data_digest.hex()}


@dataclass(frozen=True)
class TensorDigest:
    """The root of a set of tensors and the leaves it was built from."""

    root: bytes
    leaves: tuple[TensorLeaf, ...]
    scheme: str = TENSORS_SCHEME

    def index(self) -> dict[str, Any]:
        """A JSON document naming every tensor's digest (stored beside the record)."""
        return {
            "scheme": self.scheme,
            "root": self.root.hex(),
            "tensors": {leaf.name: leaf.to_json() for leaf in self.leaves},
        }


@dataclass(frozen=True)
class TensorDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def merkle_root(leaves: Iterable[TensorLeaf]) -> bytes:
    level = [leaf.leaf for leaf in sorted(leaves, key=lambda x: x.name.encode())]
    if not level:
        return hashlib.sha256(b"\x01").digest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def digest_leaves(leaves: Iterable[TensorLeaf]) -> TensorDigest:
    ordered = tuple(sorted(leaves, key=lambda x: x.name.encode()))
    names = [leaf.name for leaf in ordered]
    if len(set(names)) != len(names):
        raise InputError("two tensors share one name; a state dict needs unique names")
    return TensorDigest(root=merkle_root(ordered), leaves=ordered)


def digest_from_index(index: Any) -> TensorDigest:
    """The :class:`TensorDigest` a tensor index (:meth:`TensorDigest.index`) describes;
    its root is recomputed from the leaves and must be the one the index states."""
    try:
        if index["scheme"] != TENSORS_SCHEME:
            raise InputError(f"tensor index of scheme {index['scheme']!r}, not {TENSORS_SCHEME}")
        leaves = [
            TensorLeaf(
                str(name),
                str(entry["dtype"]),
                tuple(int(d) for d in entry["shape"]),
                bytes.fromhex(entry["sha256"]),
            )
            for name, entry in index["tensors"].items()
        ]
        stated = bytes.fromhex(index["root"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"a malformed tensor index ({exc})") from exc
    digest = digest_leaves(leaves)
    if digest.root != stated or any(len(leaf.data_digest) != 32 for leaf in leaves):
        raise InputError("a tensor index whose root is not that of its tensors")
    return digest


def state_dict_digest_parallel(state_dict: Mapping[str, Any], workers: int) -> TensorDigest:
    """:func:`state_dict_digest` with a tensor per thread (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1 or len(state_dict) < 2:
        return state_dict_digest(dict(state_dict))
    with ThreadPoolExecutor(workers, thread_name_prefix="ledger-tensors") as pool:
        leaves = list(pool.map(lambda item: _leaf_of_tensor(*item), state_dict.items()))
    return digest_leaves(leaves)


def diff_tensors(recorded: dict[str, Any], actual: TensorDigest) -> TensorDiff:
    """Compare a stored tensor index (see :meth:`TensorDigest.index`) with ``actual``."""
    expected: dict[str, Any] = recorded.get("tensors", {})
    found = {leaf.name: leaf.to_json() for leaf in actual.leaves}
    return TensorDiff(
        added=tuple(sorted(set(found) - set(expected))),
        removed=tuple(sorted(set(expected) - set(found))),
        changed=tuple(sorted(n for n in set(found) & set(expected) if found[n] != expected[n])),
    )


# -- container layout -----------------------------------------------------------


@dataclass(frozen=True)
class ContainerAudit:
    """What a weights file holds besides the tensors of its tensor root.

    ``problems`` name bytes, members or entries that belong to no tensor (each
    one is a reason not to verify by tensor root); ``training_state`` lists a
    checkpoint's other entries (optimizer and scheduler states, callbacks,
    counters), which a tensor root does not cover but which are no model weights.
    """

    problems: tuple[str, ...] = ()
    training_state: tuple[str, ...] = ()


def audit_container(path: Path | str) -> ContainerAudit:
    """Accounts for every byte and entry of the weights file at ``path``.

    Identical tensors in another container verify; but bytes or entries that
    belong to no tensor of the state dict could carry anything (other weights a
    loader reads instead), so they are problems, named. What "accounted for"
    means per container:

    * ``.safetensors``: the 8-byte length, the JSON header (``__metadata__`` of
      strings allowed, padding by spaces), then tensor data back to back, each
      tensor's range exactly ``dtype`` size x its shape, no gap, overlap or tail.
    * ``torch.save`` zip: members ``data.pkl``, ``data/<key>`` for each storage
      the pickle names, and torch's small records (``byteorder``, ``version``,
      ``.format_version``, ``.storage_alignment``, ``.data/serialization_id``,
      each checked to hold what torch writes); no other member; nothing after
      the pickle's STOP; every storage byte inside a tensor of the state dict
      or of the checkpoint's training state; the zip itself without gaps,
      prefix, suffix, comment, or local extra fields other than torch's padding
      and zip64 sizes. Beside the state dict, entries that hold tensors must be
      training state (``optimizer_states``, ``lr_schedulers``, ``callbacks``...
      see ``_torchfile.TRAINING_STATE``), listed; entries holding tensors under
      any other key (``model`` beside ``state_dict``, ``ema``...) or more than
      64 KiB of bytes or text are problems; small values (epoch, step,
      hyper-parameters) are listed.
    * anything else (a legacy torch file, one only torch reads): a problem, as
      its bytes cannot be accounted for.
    """
    import zipfile  # here: `ledger verify` of a recorded file never needs it

    path = Path(path)
    if is_safetensors(path):
        try:
            problem = _safetensors_problem(path)
        except InputError as exc:
            problem = exc.message
        return ContainerAudit((problem,) if problem else ())
    if zipfile.is_zipfile(path):
        from ledger.hashing._torchfile import audit

        found = audit(path)
        layout = _zip_problem(path)
        problems = found.problems if layout is None else (layout, *found.problems)
        return ContainerAudit(problems, found.training_state)
    return ContainerAudit(
        ("legacy (non-zip) torch file: its layout cannot be checked byte for byte",)
    )


def container_problem(path: Path | str) -> str | None:
    """Why ``path`` is not a clean container (every problem of :func:`audit_container`),
    or None when every byte and entry is accounted for."""
    problems = audit_container(path).problems
    return "; ".join(problems) if problems else None


def _safetensors_problem(path: Path) -> str | None:
    header, body_start = _safetensors_header(path)
    spans = sorted(_safetensors_entry(path, name, info)[2] for name, info in header.items())
    end = 0
    for start, stop in spans:
        if start != end:
            kind = "a gap" if start > end else "an overlap"
            return f"tensor data has {kind} at body offset {min(start, end)}"
        end = stop
    extra = path.stat().st_size - (body_start + end)
    return f"{extra} bytes after the last tensor" if extra else None


_ZIP_LOCAL = struct.Struct("<IHHHHHIIIHH")
_ZIP_END = struct.Struct("<IHHHHIIH")


def _extra_problem(extra: bytes) -> str | None:
    """Why a local header's extra field could carry data: only torch's alignment
    padding (``FB``, then ``Z`` bytes) and zip64 sizes are accounted for."""
    at = 0
    while at < len(extra):
        if at + 4 > len(extra):
            return "a malformed extra field"
        kind, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4 : at + 4 + size]
        if len(body) != size:
            return "a malformed extra field"
        if kind == 0x4246:  # "FB": torch's padding to align the member's data
            if body.strip(b"Z"):
                return "its padding extra field holds data"
        elif kind != 0x0001 or size > 28:  # zip64 sizes and offsets
            return f"an extra field of kind 0x{kind:04x} ({size} bytes)"
        at += 4 + size
    return None


def _zip_problem(path: Path) -> str | None:
    import zipfile

    file_size = path.stat().st_size
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        cursor = 0
        for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
            if info.header_offset != cursor:
                return f"{info.header_offset - cursor} unaccounted bytes before {info.filename}"
            handle.seek(cursor)
            fields = _ZIP_LOCAL.unpack(handle.read(_ZIP_LOCAL.size))
            handle.seek(cursor + _ZIP_LOCAL.size + fields[9])
            extra = _extra_problem(handle.read(fields[10]))
            if extra is not None:
                return f"{info.filename}: {extra}"
            if info.comment:
                return f"{info.filename}: the zip directory gives it a comment"
            cursor += _ZIP_LOCAL.size + fields[9] + fields[10] + info.compress_size
            if info.flag_bits & 0x08:  # a data descriptor follows the data
                zip64 = 0xFFFFFFFF in (fields[7], fields[8])
                handle.seek(cursor)
                signed = handle.read(4) == b"PK\x07\x08"
                cursor += (4 if signed else 0) + (20 if zip64 else 12)
        directory: int = archive.start_dir
        if directory != cursor:
            return f"{directory - cursor} unaccounted bytes before the zip directory"
        if archive.comment:
            return "the zip archive carries a comment"
        end_at = file_size - _ZIP_END.size
        handle.seek(end_at)
        end = _ZIP_END.unpack(handle.read(_ZIP_END.size))
        if end[0] != 0x06054B50:
            return "bytes follow the end of the zip archive (appended data)"
        if end[7]:
            return "the zip archive carries a comment"
        directory_size = end[5]
        handle.seek(end_at - 20)
        locator = handle.read(20)
        if locator[:4] == b"PK\x06\x07":  # zip64: record + locator sit before the end record
            (record_at,) = struct.unpack("<Q", locator[8:16])
            handle.seek(record_at)
            record = handle.read(56)
            (record_size,) = struct.unpack("<Q", record[4:12])
            (directory_size,) = struct.unpack("<Q", record[40:48])
            if record[:4] != b"PK\x06\x06" or record_at + 12 + record_size != end_at - 20:
                return "malformed zip64 end records"
            end_at = record_at
    if directory + directory_size != end_at:
        return "unaccounted bytes between the zip directory and its end record"
    return None


# -- readers ------------------------------------------------------------------


def is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


HF_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
"""Hugging Face weights files (index, single file) per format, in the order
``transformers`` prefers the formats; within one, it reads the single file first."""


def tensor_digest(path: Path | str, *, data: bytes | None = None) -> TensorDigest:
    """The tensor root of a weights file or of a Hugging Face model folder.

    ``data``, if given, is the content of the file at ``path``, already read by
    the caller (the outbox worker reads a checkpoint once for its CID and its
    tensors): a ``torch.save`` file is then hashed from it without reading again.
    """
    path = Path(path)
    if data is not None and not is_safetensors(path):
        return digest_leaves(_torch_leaves(path, data))
    if path.is_dir():
        from ledger.hashing.dcp import dcp_digest, is_dcp_folder

        if is_dcp_folder(path):  # a sharded checkpoint: the logical state dict's root
            return dcp_digest(path)
        return digest_leaves(_folder_leaves(path))
    if not path.is_file():
        raise FileMissingError(f"{path} does not exist or is not a file")
    return digest_leaves(_file_leaves(path))


@dataclass(frozen=True)
class TensorPlan:
    """Where each tensor of a weights file lies, found without reading its bytes.

    ``spans`` are (offset, length) in the file, in the order of ``tensors``;
    :meth:`digest` turns the sha256 of each span into the file's
    :class:`TensorDigest`, the same as :func:`tensor_digest` gives. This lets a
    caller hash the tensors from the very blocks it reads for the file's CID.
    """

    tensors: tuple[tuple[str, str, tuple[int, ...]], ...]
    spans: tuple[tuple[int, int], ...]

    def digest(self, span_digests: Iterable[bytes]) -> TensorDigest:
        digests = list(span_digests)
        if len(digests) != len(self.tensors):
            raise InputError(f"{len(digests)} digests for {len(self.tensors)} tensors")
        return digest_leaves(
            TensorLeaf(name, dtype, shape, digest)
            for (name, dtype, shape), digest in zip(self.tensors, digests, strict=True)
        )


def tensor_plan(path: Path | str) -> TensorPlan | None:
    """Where the tensors of the weights file at ``path`` lie, from its header alone.

    A ``.safetensors`` file's JSON header, or a ``torch.save`` zip's directory
    and pickle (read without torch). None when only torch can read the file
    (a legacy file, other globals...): the caller then calls
    :func:`tensor_digest`. Raises as :func:`tensor_digest` does for a file that
    is not weights, or whose tensors point past its end.
    """
    path = Path(path)
    if not path.is_file():
        raise FileMissingError(f"{path} does not exist or is not a file")
    if is_safetensors(path):
        header, body_start = _safetensors_header(path)
        file_size = path.stat().st_size
        tensors, spans = [], []
        for name, info in header.items():
            dtype, shape, (start, end) = _safetensors_entry(path, name, info)
            if body_start + end > file_size:
                raise UnsupportedFormatError(
                    f"{path}: tensor {name!r} points past the end of the file (truncated?)"
                )
            tensors.append((name, dtype, shape))
            spans.append((body_start + start, end - start))
        _check_disjoint(
            path, [(t[0], (a, a + n)) for t, (a, n) in zip(tensors, spans, strict=True)]
        )
        return TensorPlan(tuple(tensors), tuple(spans))
    from ledger.hashing._torchfile import Broken, CannotRead, locate_tensors

    try:
        located = locate_tensors(path)
    except Broken as exc:
        raise UnsupportedFormatError(f"{path}: {exc}") from exc
    except CannotRead:
        return None
    if located is None:
        raise _no_state_dict(path)
    return TensorPlan(
        tuple((name, dtype, shape) for name, dtype, shape, _, _ in located),
        tuple((start, length) for _, _, _, start, length in located),
    )


def weights_files(folder: Path | str) -> tuple[tuple[Path, ...], dict[str, str] | None]:
    """The weights files of a Hugging Face model folder that ``transformers`` loads
    (its first layout: see :func:`weights_layouts`) and, when sharded, the index's
    tensor-to-shard map.

    Raises :class:`~ledger.errors.FileMissingError` naming a shard the index
    lists but the folder lacks, or the files looked for when there is none.
    """
    layouts = weights_layouts(folder)
    if not layouts:
        looked_for = ", ".join(name for pair in HF_LAYOUTS for name in pair)
        raise FileMissingError(
            f"{folder} is a folder without model weights (looked for {looked_for})",
            hint="give a weights file, or a Hugging Face model folder",
        )
    return _layout_files(Path(folder), layouts[0])


def weights_layouts(folder: Path | str) -> list[str]:
    """Every file of ``folder`` a loader may take its weights from, the one
    ``transformers`` reads first leading: per format (safetensors, then torch) the
    single file, then the index (the order of ``from_pretrained``); then a file
    ``config.json`` names under ``transformers_weights``. Verifying a folder checks
    all of them: a folder holding one set of weights for ledger and another for a
    loader that looks in another order must not pass."""
    folder = Path(folder)
    found = [
        name
        for index_name, single_name in HF_LAYOUTS
        for name in (single_name, index_name)
        if (folder / name).is_file()
    ]
    named = _config_weights(folder)
    if named is not None and named not in found:
        found.append(named)
    return found


def _config_weights(folder: Path) -> str | None:
    """The file ``config.json`` names under ``transformers_weights``, if any."""
    config = folder / "config.json"
    try:
        if not config.is_file() or config.stat().st_size > 16 * 1024 * 1024:
            return None
        document = json.loads(config.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    named = document.get("transformers_weights") if isinstance(document, dict) else None
    if not isinstance(named, str):
        return None
    if Path(named).name != named or named in ("", ".", "..") or "\0" in named:
        raise UnsupportedFormatError(
            f"{config}: transformers_weights {named!r} is not a file name in the model folder"
        )
    return named


def _layout_files(folder: Path, name: str) -> tuple[tuple[Path, ...], dict[str, str] | None]:
    """The weights files of one layout: a single file, or an index's shards."""
    if not name.endswith(".json"):
        if not (folder / name).is_file():
            raise FileMissingError(f"{folder}: {name} is missing")
        return (folder / name,), None
    weight_map = _read_weight_map(folder / name)
    shards = sorted(set(weight_map.values()))
    missing = [shard for shard in shards if not (folder / shard).is_file()]
    if missing:
        raise FileMissingError(
            f"{folder}: {name} lists shard(s) that are missing: "
            + ", ".join(repr(shard) for shard in missing),
            hint="download every shard of the model into the folder, then retry",
        )
    return tuple(folder / shard for shard in shards), weight_map


def layout_digest(folder: Path | str, name: str) -> TensorDigest:
    """The tensor root of one layout of a model folder (see :func:`weights_layouts`)."""
    folder = Path(folder)
    return digest_leaves(_folder_leaves(folder, _layout_files(folder, name)))


MAX_INDEX_BYTES = 64 * 1024 * 1024
"""Largest Hugging Face index read (a name and a shard per tensor: far below this)."""


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise UnsupportedFormatError(
                f"{index}: more than the {MAX_INDEX_BYTES >> 20} MiB a model's index needs"
            )
        document = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # ValueError: a number of 4,300+ digits
        raise UnsupportedFormatError(f"{index}: not a JSON document ({str(exc)[:200]})") from exc
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise UnsupportedFormatError(
            f"{index}: no 'weight_map' of tensor names to shard file names",
            hint='a Hugging Face index maps names to shards: {"weight_map": {"lm_head.weight": '
            '"model-00001-of-00002.safetensors", ...}}',
        )
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or shard in (".", ".."):
            raise UnsupportedFormatError(
                f"{index}: shard {shard!r} is not a plain file name in the model folder"
            )
    return weight_map


def _file_leaves(path: Path) -> Iterator[TensorLeaf]:
    if is_safetensors(path):
        return _safetensors_leaves(path)
    return _torch_leaves(path)


def _folder_leaves(
    folder: Path, layout: tuple[tuple[Path, ...], dict[str, str] | None] | None = None
) -> Iterator[TensorLeaf]:
    files, weight_map = layout if layout is not None else weights_files(folder)
    seen: set[str] = set()
    for path in files:
        for leaf in _file_leaves(path):
            if weight_map is not None and weight_map.get(leaf.name) != path.name:
                listed = weight_map.get(leaf.name)
                raise UnsupportedFormatError(
                    f"{path}: holds tensor {leaf.name!r}, which the index "
                    + (f"places in {listed}" if listed else "does not list"),
                    hint="the index and the shards disagree; re-download or re-save the model",
                )
            seen.add(leaf.name)
            yield leaf
    if weight_map is not None and set(weight_map) - seen:
        absent = sorted(set(weight_map) - seen)
        shown = ", ".join(f"{name!r} ({weight_map[name]})" for name in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise UnsupportedFormatError(
            f"{folder}: the index lists tensors its shards do not hold: {shown}{more}",
            hint="a shard is truncated or from another model; re-download it",
        )


def state_dict_digest(state_dict: dict[str, Any]) -> TensorDigest:
    """The tensor root of an in-memory state dict of torch tensors."""
    return digest_leaves(_leaf_of_tensor(name, t) for name, t in state_dict.items())


MAX_SAFETENSORS_HEADER = 8 * 1024 * 1024
"""Largest safetensors JSON header read (~60,000 tensors): parsing it stays well
inside the memory ``ledger verify`` may use, whatever the file declares."""

_ITEM_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "C64": 8,
}  # fmt: skip
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
"""A JSON string, unrolled (runs of plain bytes, then one escape): the
alternation ``(?:[^"\\]|\\.)*`` kept backtracking state per byte, about 120 bytes of
memory per byte of a long string (an 8 MB ``__metadata__`` value: 1 GB)."""
_JSON_INNERMOST = re.compile(rb"[\[{][^\[\]{}]*[\]}]")


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file (``__metadata__`` left out, checked to
    map strings to strings) and where the tensor data starts. Bounded: the header
    is at most :data:`MAX_SAFETENSORS_HEADER` bytes and three levels deep (as every
    safetensors header is) before it is parsed; a name given twice is refused."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise UnsupportedFormatError(f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_SAFETENSORS_HEADER:
            raise UnsupportedFormatError(
                f"{path}: safetensors header of {size} bytes is implausible"
                f" (ledger reads headers up to {MAX_SAFETENSORS_HEADER >> 20} MiB)"
            )
        raw = handle.read(size)
    if len(raw) != size:
        raise UnsupportedFormatError(f"{path}: the file ends inside its safetensors header")
    skeleton = _JSON_STRING.sub(b'""', raw)
    for _ in range(3):  # the header, a tensor's entry, its shape: three levels
        skeleton = _JSON_INNERMOST.sub(b"0", skeleton)
    if b"[" in skeleton or b"{" in skeleton:
        raise UnsupportedFormatError(
            f"{path}: safetensors header is nested deeper than a safetensors header is"
        )

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise UnsupportedFormatError(f"{path}: the safetensors header names {twice!r} twice")
        return dict(pairs)

    try:
        header = json.loads(raw, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:  # ValueError: a number of 4,300+ digits
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedFormatError(f"{path}: safetensors header is not JSON: {reason}") from exc
    if not isinstance(header, dict):
        raise UnsupportedFormatError(f"{path}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UnsupportedFormatError(
            f"{path}: safetensors __metadata__ must map strings to strings"
        )
    return header, 8 + size


def _safetensors_entry(
    path: Path, name: str, info: Any
) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """One header entry, checked: dtype, shape, and a data range of exactly the
    tensor's size."""
    try:
        start, end = (int(x) for x in info["data_offsets"])
        dtype, shape = str(info["dtype"]), tuple(int(d) for d in info["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedFormatError(
            f"{path}: tensor {name!r} has a malformed header entry"
        ) from exc
    itemsize = _ITEM_SIZES.get(dtype)
    if itemsize is None:
        raise UnsupportedFormatError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    if any(not 0 <= d < 1 << 63 for d in shape) or not 0 <= start <= end:
        raise UnsupportedFormatError(f"{path}: tensor {name!r} has a malformed header entry")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no tensor can be named so
        raise UnsupportedFormatError(
            f"{path}: tensor {name!r} has a name that is not text"
        ) from None
    if end - start != math.prod(shape) * itemsize:
        raise UnsupportedFormatError(
            f"{path}: tensor {name!r} spans {end - start} bytes, but its dtype and shape"
            f" {list(shape)} need {math.prod(shape) * itemsize}"
        )
    return dtype, shape, (start, end)


def _check_disjoint(path: Path, spans: list[tuple[str, tuple[int, int]]]) -> None:
    """No two tensors of a safetensors file share bytes (the format lays them end to
    end, and its own loader refuses overlaps): a crafted header naming one range
    for thousands of tensors would have it hashed thousands of times."""
    end_of: tuple[str, int] | None = None
    for name, (start, end) in sorted(spans, key=lambda item: item[1]):
        if end_of is not None and start < end_of[1] and start < end:
            raise UnsupportedFormatError(
                f"{path}: tensors {end_of[0]!r} and {name!r} share bytes (at {start})"
            )
        if end_of is None or end > end_of[1]:
            end_of = (name, end)


def _safetensors_leaves(path: Path) -> Iterator[TensorLeaf]:
    from ledger.hashing._engine import page_buffer, pread_into

    header, body_start = _safetensors_header(path)
    file_size = path.stat().st_size
    entries = [(name, *_safetensors_entry(path, name, info)) for name, info in header.items()]
    for name, _, _, (_start, end) in entries:
        if body_start + end > file_size:
            raise UnsupportedFormatError(
                f"{path}: tensor {name!r} points past the end of the file (truncated?)"
            )
    _check_disjoint(path, [(name, span) for name, _, _, span in entries])
    buffer = page_buffer(READ_PIECE)
    fd = os.open(path, os.O_RDONLY)
    try:
        with memoryview(buffer) as view:
            for name, dtype, shape, (start, end) in entries:
                digest = hashlib.sha256()
                at = body_start + start
                while at < body_start + end:
                    with view[: min(READ_PIECE, body_start + end - at)] as piece:
                        got = pread_into(fd, piece, at)
                        if not got:
                            raise UnsupportedFormatError(f"{path}: the file ends inside {name!r}")
                        with piece[:got] as filled:
                            digest.update(filled)
                    at += got
                yield TensorLeaf(name, dtype, shape, digest.digest())
    finally:
        os.close(fd)
        buffer.close()


READ_PIECE = 8 * 1024 * 1024


NO_STATE_DICT_HINT = "ledger hashes state dicts: {name: tensor}, optionally under 'state_dict'"


def _torch_leaves(path: Path, data: bytes | None = None) -> Iterator[TensorLeaf]:
    """A torch file's leaves: read without torch when :mod:`._torchfile` understands
    the file (what ``torch.save`` writes for state dicts and checkpoints), else
    through ``torch.load(weights_only=True)``."""
    from ledger.hashing._torchfile import Broken, CannotRead, read_tensors

    try:
        tensors = read_tensors(path, data=data)
    except Broken as exc:
        raise UnsupportedFormatError(f"{path}: {exc}") from exc
    except CannotRead:
        _check_torch_can_decide(path, data)
        return _torch_load_leaves(path)
    if tensors is None:
        raise _no_state_dict(path)
    return (TensorLeaf(*tensor) for tensor in tensors)


LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
"""How a legacy (pre-zip) ``torch.save`` file starts: its magic number, pickled."""

REFUSED_HINT = (
    "save plain state dicts (torch.save(model.state_dict(), ...)) or safetensors;"
    " a Lightning checkpoint loads when its hyper_parameters hold plain values"
)


def _check_torch_can_decide(path: Path, data: bytes | None) -> None:
    """Before handing a file the torch-free reader declined to ``torch.load``: a
    file that is neither a zip nor a legacy torch file is answered here, without
    torch (whose weights-only loader would call random bytes a pickle needing
    code, and offer ``weights_only=False``)."""
    import zipfile

    from ledger.hashing._torchfile import (
        MAX_PICKLE_BYTES,
        Broken,
        CannotRead,
        check_nesting,
        interpret,
    )

    if zipfile.is_zipfile(path if data is None else io.BytesIO(data)):
        return
    if data is None:
        with open(path, "rb") as handle:
            pickled = handle.read(MAX_PICKLE_BYTES + 1)
    else:
        pickled = data[: MAX_PICKLE_BYTES + 1]
    if pickled.startswith(LEGACY_MAGIC):
        # the magic number, the protocol, the system info and the object: pickles end
        # to end, which torch's weights-only unpickler reads (see check_nesting)
        at = 0
        try:
            for _ in range(4):
                at += check_nesting(pickled[at:])
        except Broken as exc:
            raise UnsupportedFormatError(f"{path}: not torch weights: {exc}") from exc
        except ValueError:
            pass  # malformed: torch's reader says so
        return
    if not pickled:
        raise UnsupportedFormatError(f"{path}: an empty file, not torch weights")
    if len(pickled) < 2 or pickled[0] != 0x80 or not 2 <= pickled[1] <= 5:
        raise UnsupportedFormatError(
            f"{path}: not torch weights: neither a torch.save zip archive nor a pickle",
            hint=NO_STATE_DICT_HINT,
        )
    try:
        interpret(pickled)
    except Broken as exc:
        raise UnsupportedFormatError(f"{path}: not torch weights: {exc}") from exc
    except CannotRead as exc:
        raise UnsupportedFormatError(
            f"{path}: refused to load: a bare pickle that needs code to unpickle, which ledger"
            f" never runs ({exc})",
            hint=REFUSED_HINT,
        ) from exc
    raise UnsupportedFormatError(
        f"{path}: a bare pickle, not a torch.save file (no torch magic number)",
        hint=NO_STATE_DICT_HINT,
    )


def _no_state_dict(path: Path) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{path}: holds no state dict of tensors", hint=NO_STATE_DICT_HINT
    )


def _torch_load_leaves(path: Path) -> Iterator[TensorLeaf]:
    import pickle
    import zipfile

    import torch

    kwargs: dict[str, Any] = {"weights_only": True, "map_location": "cpu"}
    if zipfile.is_zipfile(path):
        kwargs["mmap"] = True
    try:
        obj = torch.load(path, **kwargs)
    except pickle.UnpicklingError as exc:
        raise UnsupportedFormatError(
            f"{path}: refused to load: it needs code to unpickle, which ledger never runs "
            f"({str(exc).splitlines()[0]})",
            hint=REFUSED_HINT,
        ) from exc
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        IndexError,  # the weights-only unpickler on a few stray bytes
        KeyError,
        TypeError,
        struct.error,
    ) as exc:
        raise UnsupportedFormatError(
            f"{path}: not a readable torch weights file ({str(exc).splitlines()[0]})"
        ) from exc
    state = _find_state_dict(obj)
    if state is None:
        raise _no_state_dict(path)
    for name, tensor in state.items():
        yield _leaf_of_tensor(name, tensor)


def _find_state_dict(obj: Any) -> dict[str, Any] | None:
    import torch

    if (
        isinstance(obj, dict)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                return _find_state_dict(obj[key])
    return None


def _leaf_of_tensor(name: str, tensor: Any) -> TensorLeaf:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
    dtype = _TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    if dtype is None:
        raise UnsupportedFormatError(f"tensor {name!r} has dtype {tensor.dtype}, not supported")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().data if flat.numel() else memoryview(b"")
    return TensorLeaf(name, dtype, tuple(tensor.shape), hashlib.sha256(data).digest())

"""Sharded checkpoints: ``torch.distributed.checkpoint`` (DCP) folders, read without torch.

A DCP folder (``dcp.save(state_dict, checkpoint_id=FOLDER)``, every rank of a
job writing its own shard files, FSDP2's ``fully_shard`` among others) holds::

    .metadata           the layout, pickled by the coordinator rank: per tensor its
                        dtype, logical shape and chunks (offsets, sizes), and per
                        chunk the file, offset and length of its bytes
    __<rank>_<n>.distcp each rank's shard file: one ``torch.save`` zip per chunk
                        (or raw bytes for a non-tensor entry), end to end

Identities of such a checkpoint:

* its **CID** is the folder's, as ``ipfs add -r --hidden --cid-version=1`` gives
  it (:func:`ledger.hashing.cid.path_cid` with ``hidden=True``). ``--hidden``
  because ``.metadata`` is a hidden file: without it Kubo leaves the layout out,
  and a CID that does not cover where the tensors are would not identify them.
* its **tensor root** (``tensors-sha256-v1``) is that of the *logical* state
  dict: each tensor's chunks put back together in row-major order. It equals
  the root of the same state dict gathered and written by ``torch.save`` (or
  safetensors) into one file, so a consolidated model verifies against the
  sharded checkpoint it came from.

``.metadata`` is a pickle, and torch's own ``FileSystemReader`` loads it with
``pickle.load``: any code the file names would run. It is never unpickled here.
:func:`read_metadata` decodes its opcodes (:func:`pickletools.genops`) and
interprets the few that the pickle of DCP's metadata dataclasses uses, building
plain records: the classes it may name are listed (:data:`_CLASSES`), nothing is
imported, no object of the file's choosing is created, and anything else is an
:class:`~ledger.errors.UnsupportedFormatError`. Each chunk's ``torch.save`` zip
is read the same way (:func:`ledger.hashing._torchfile.locate_item`).

Chunks must cover their tensor in whole rows of the first dimension (what
FSDP's ``Shard(0)`` placement writes: a tensor's rows split across ranks,
possibly with empty chunks): then the chunks in order of their first offset are
the tensor's row-major bytes, and hashing them in that order gives the leaf.
Other placements (a tensor split along a later dimension) are refused, naming
the tensor.
"""

from __future__ import annotations

import hashlib
import os
import pickletools
import re
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import FileMissingError, UnsupportedFormatError

if TYPE_CHECKING:
    from ledger.hashing.tensors import TensorDigest

__all__ = [
    "METADATA_NAME",
    "DcpPlan",
    "Piece",
    "TensorLayout",
    "dcp_digest",
    "dcp_plan",
    "is_dcp_folder",
    "read_metadata",
]

METADATA_NAME = ".metadata"
MAX_METADATA_BYTES = 64 * 1024 * 1024
"""Largest ``.metadata`` read (about 500 bytes of pickle per chunk: 100,000s of chunks)."""
MAX_OPCODES = 5_000_000
"""Most pickle opcodes interpreted: bounds what a small hostile file can make us build."""

_DCP = "torch.distributed.checkpoint.metadata"
_CLASSES = {
    (_DCP, "Metadata"),
    (_DCP, "TensorStorageMetadata"),
    (_DCP, "BytesStorageMetadata"),
    (_DCP, "ChunkStorageMetadata"),
    (_DCP, "TensorProperties"),
    (_DCP, "MetadataIndex"),
    (_DCP, "StorageMeta"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}
"""The dataclasses DCP pickles into ``.metadata`` (made here as :class:`_Record`)."""
_SIZE = ("torch", "Size")
_LAYOUT = ("torch.serialization", "_get_layout")
_MEMORY_FORMAT = (_DCP, "_MEM_FORMAT_ENCODING")
_PATHS = {("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath")}


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True)
class _Dtype:
    name: str  # torch's: float32, bfloat16...


class _Record:
    """One of :data:`_CLASSES`, as plain attributes (hashable by identity: DCP uses
    ``MetadataIndex`` records as dict keys)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.attrs: dict[str, Any] = {}
        self.state: tuple[Any, ...] | None = None  # TensorProperties pickles a tuple


def is_dcp_folder(path: Path | str) -> bool:
    """Whether ``path`` is a folder holding a DCP ``.metadata`` file (or a link by
    that name, which :func:`read_metadata` then refuses, naming it)."""
    metadata = os.path.join(path, METADATA_NAME)
    return os.path.isdir(path) and (os.path.islink(metadata) or os.path.isfile(metadata))


def read_metadata(path: Path) -> Any:
    """The object pickled in the DCP metadata file ``path``, with the classes DCP uses
    made as :class:`_Record` values, without unpickling (see the module docstring)."""
    try:
        # not followed: a link's target is outside the folder's CID (which holds the
        # link, not the layout); not blocking: a FIFO by that name is refused, not read
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileMissingError(f"{path} does not exist") from None
    except OSError as exc:
        if os.path.islink(path):
            raise UnsupportedFormatError(
                f"{path} is a symbolic link; a checkpoint's layout must be in the folder",
                hint="copy the metadata file itself into the checkpoint folder",
            ) from None
        raise UnsupportedFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UnsupportedFormatError(f"{path} is not a regular file")
            pickled = handle.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise UnsupportedFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(pickled) > MAX_METADATA_BYTES:
        raise UnsupportedFormatError(
            f"{path} is more than the {MAX_METADATA_BYTES >> 20} MiB a checkpoint's metadata needs"
        )
    try:
        return _interpret(pickled)
    except (RecursionError, MemoryError):
        raise UnsupportedFormatError(
            f"{path}: a pickle nested or sized beyond any checkpoint's metadata"
        ) from None
    except _Refused as exc:
        raise UnsupportedFormatError(
            f"{path}: {exc}",
            hint="ledger reads the metadata torch.distributed.checkpoint writes, and "
            "runs none of the code a pickle may name",
        ) from None
    except (ValueError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise UnsupportedFormatError(f"{path}: a malformed or truncated pickle ({exc})") from None


class _Refused(Exception):
    """The pickle asks for something outside DCP's metadata."""


def _global(module: str, name: str) -> Any:
    if (module, name) in _CLASSES or (module, name) in (_SIZE, _LAYOUT, _MEMORY_FORMAT):
        return _Global(module, name)
    if (module, name) in _PATHS:
        return _Global(module, name)
    if module == "torch" and re.fullmatch(r"[a-z0-9_]+", name) and name not in ("load", "save"):
        return _Dtype(name)  # torch.float32 and friends, named not called (checked later)
    raise _Refused(
        f"the pickle names {_shown(f'{module}.{name}')}, which DCP's metadata does not use"
    )


def _reduce(function: Any, args: Any) -> Any:
    if not isinstance(function, _Global) or not isinstance(args, tuple):
        raise _Refused(f"a call of a {type(function).__name__}")
    key = (function.module, function.name)
    if key == _SIZE and len(args) == 1 and _ints(args[0]):
        return tuple(args[0])
    if key == _LAYOUT and len(args) == 1 and isinstance(args[0], str):
        return args[0]
    if key == _MEMORY_FORMAT and len(args) == 1 and isinstance(args[0], int):
        return args[0]
    if key in _PATHS and all(isinstance(a, str) for a in args):
        return "/".join(args)
    raise _Refused(f"a call of {function.module}.{function.name} with unexpected arguments")


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    )


def _interpret(pickled: bytes) -> Any:
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not marks:
            raise ValueError("unbalanced MARK")
        items, stack = stack, marks.pop()
        return items

    for count, (opcode, decoded, _) in enumerate(pickletools.genops(pickled)):
        arg: Any = decoded
        if count >= MAX_OPCODES:
            raise _Refused(f"the pickle runs past {MAX_OPCODES} opcodes")
        name = opcode.name
        if name == "PROTO":
            if not 2 <= int(arg) <= 5:
                raise _Refused(f"pickle protocol {arg}")
        elif name == "FRAME":
            pass
        elif name == "STOP":
            if len(stack) != 1 or marks:
                raise ValueError("the pickle stops with a malformed stack")
            return stack[0]
        elif name == "MARK":
            marks.append(stack)
            stack = []
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"):
            stack.append(arg)
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
            stack.append(str(arg))
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            if len(stack) < size:
                raise ValueError(f"{name} on a short stack")
            items = stack[-size:]
            del stack[-size:]
            stack.append(_tuple(items))
        elif name == "TUPLE":
            items = pop_mark()
            stack.append(_tuple(items))
        elif name == "APPEND":
            value = stack.pop()
            _typed(stack[-1], list).append(value)
        elif name == "APPENDS":
            items = pop_mark()
            _typed(stack[-1], list).extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            _typed(stack[-1], dict)[_key(key)] = value
        elif name == "SETITEMS":
            items = pop_mark()
            target = _typed(stack[-1], dict)
            for key, value in zip(items[::2], items[1::2], strict=True):
                target[_key(key)] = value
        elif name == "GLOBAL":
            module, _, attribute = str(arg).partition(" ")
            stack.append(_global(module, attribute))
        elif name == "STACK_GLOBAL":
            attribute, module = stack.pop(), stack.pop()
            if not (isinstance(module, str) and isinstance(attribute, str)):
                raise _Refused("STACK_GLOBAL of something other than two names")
            stack.append(_global(module, attribute))
        elif name == "NEWOBJ":
            args, cls = stack.pop(), stack.pop()
            if not (isinstance(cls, _Global) and (cls.module, cls.name) in _CLASSES):
                raise _Refused(f"an object of a {type(cls).__name__}")
            if args != ():
                raise _Refused(f"{cls.name} made with arguments")
            stack.append(_Record(cls.name))
        elif name == "REDUCE":
            args, function = stack.pop(), stack.pop()
            stack.append(_reduce(function, args))
        elif name == "BUILD":
            state = stack.pop()
            record = stack[-1]
            if not isinstance(record, _Record):
                raise _Refused("BUILD of something other than DCP's metadata")
            if isinstance(state, dict):
                record.attrs.update(state)
            elif isinstance(state, tuple) and record.kind == "TensorProperties":
                record.state = state
            elif (
                isinstance(state, tuple)
                and len(state) == 2
                and all(part is None or isinstance(part, dict) for part in state)
            ):  # (instance dict, slots) as dataclasses with __slots__ pickle
                for part in state:
                    record.attrs.update(part or {})
            else:
                raise _Refused(f"{record.kind} built from a {type(state).__name__}")
        else:
            raise _Refused(f"pickle opcode {name}")
    raise ValueError("the pickle has no STOP")


def _typed(target: Any, kind: type) -> Any:
    if type(target) is not kind:
        raise _Refused(f"an item added to a {type(target).__name__}, not a {kind.__name__}")
    return target


def _tuple(items: list[Any]) -> tuple[Any, ...]:
    """A tuple of the pickle's: DCP's nest two deep at most (a call's arguments
    holding a shape). Deeper ones are refused here: hashing or printing a tuple
    nested a million deep overflows the C stack, which no ``except`` catches."""
    if any(isinstance(item, tuple) and any(isinstance(x, tuple) for x in item) for item in items):
        raise _Refused("tuples nested deeper than DCP's metadata nests them")
    return tuple(items)


def _key(key: Any) -> Any:
    """A dict key of the pickle's: DCP's are names, numbers, records
    (``MetadataIndex``) and shapes (flat tuples of ints)."""
    if isinstance(key, (str, int, _Record)) or _ints(key):
        return key
    raise _Refused(f"a {type(key).__name__} used as a dict key")


# -- the layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Bytes of one chunk of a tensor: ``length`` bytes of ``file`` from ``offset``."""

    file: str
    offset: int
    length: int


@dataclass(frozen=True)
class TensorLayout:
    """A tensor of the logical state dict and its bytes, in row-major order."""

    name: str
    dtype: str  # safetensors name: F32, BF16...
    shape: tuple[int, ...]
    pieces: tuple[Piece, ...]


@dataclass(frozen=True)
class DcpPlan:
    """Where every tensor of a DCP folder lies, read from ``.metadata`` and the
    shard files' item headers (no tensor byte read)."""

    folder: Path
    tensors: tuple[TensorLayout, ...]
    files: tuple[str, ...]  # the shard files the metadata names, in hashing order
    other_entries: tuple[str, ...]  # non-tensor entries (bytes), outside the tensor root


def dcp_plan(folder: Path | str) -> DcpPlan:
    """The layout of the DCP folder ``folder``; raises
    :class:`~ledger.errors.UnsupportedFormatError` naming what cannot be read
    (a tensor, a chunk, a shard file) and :class:`~ledger.errors.FileMissingError`
    for a shard file the metadata names that the folder lacks."""
    from ledger.hashing._torchfile import CannotRead, locate_item
    from ledger.hashing.tensors import _TORCH_DTYPES

    folder = Path(folder)
    metadata = read_metadata(folder / METADATA_NAME)
    if not (isinstance(metadata, _Record) and metadata.kind == "Metadata"):
        raise UnsupportedFormatError(f"{folder / METADATA_NAME}: not DCP's Metadata")
    entries = metadata.attrs.get("state_dict_metadata")
    storage = metadata.attrs.get("storage_data")
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        raise UnsupportedFormatError(
            f"{folder / METADATA_NAME}: no state_dict_metadata or storage_data"
        )
    where: dict[tuple[str, tuple[int, ...]], _Record] = {}
    for index, info in storage.items():
        if not (_is(index, "MetadataIndex") and _is(info, "_StorageInfo")):
            raise UnsupportedFormatError(f"{folder / METADATA_NAME}: a malformed storage entry")
        fqn, offset = index.attrs.get("fqn"), index.attrs.get("offset")
        if not isinstance(fqn, str):
            raise UnsupportedFormatError(f"{folder / METADATA_NAME}: a storage entry without fqn")
        if offset is not None and not _ints(offset):
            raise UnsupportedFormatError(f"{folder / METADATA_NAME}: a malformed storage offset")
        where[(fqn, offset or ())] = info
    sizes: dict[str, int] = {}

    def file_size(name: str) -> int:
        if name not in sizes:
            if not _shard_name(name):
                raise UnsupportedFormatError(
                    f"{folder / METADATA_NAME} names {name!r}, not a shard file of the folder"
                )
            try:
                info = os.lstat(folder / name)
                if not stat.S_ISREG(info.st_mode):  # a link's target is outside the CID
                    raise UnsupportedFormatError(
                        f"{folder / name}: a shard file that is not a regular file (a link?)",
                        hint="copy the shard files themselves into the checkpoint folder",
                    )
                sizes[name] = info.st_size
            except FileNotFoundError:
                raise FileMissingError(
                    f"{folder}: shard file {name!r} is missing (the metadata names it)",
                    hint="copy every rank's shard files into the checkpoint folder",
                ) from None
            except OSError as exc:
                raise UnsupportedFormatError(
                    f"{folder}: cannot read shard file {name!r}: {exc.strerror or exc}"
                ) from None
        return sizes[name]

    ranges: dict[tuple[str, int], int] = {}  # (shard, start): length, each used once

    def located(fqn: str, offsets: tuple[int, ...]) -> tuple[str, int, int, _Record]:
        info = where.get((fqn, offsets))
        if info is None:
            raise UnsupportedFormatError(
                f"{folder / METADATA_NAME}: tensor {_shown(fqn)} has a chunk at {list(offsets)} "
                "but no storage entry"
            )
        name, start, length = (info.attrs.get(k) for k in ("relative_path", "offset", "length"))
        if not (isinstance(name, str) and isinstance(start, int) and isinstance(length, int)):
            raise UnsupportedFormatError(f"{folder / METADATA_NAME}: a malformed storage entry")
        if start < 0 or length < 0:
            raise UnsupportedFormatError(f"{folder / METADATA_NAME}: a negative storage offset")
        if info.attrs.get("transform_descriptors"):
            raise UnsupportedFormatError(
                f"{folder}: tensor {_shown(fqn)} is stored transformed; "
                "ledger reads plain DCP items",
            )
        if start + length > file_size(name):
            raise UnsupportedFormatError(
                f"{folder / name}: ends inside tensor {_shown(fqn)} (truncated?)"
            )
        if (name, start) in ranges:  # DCP writes each item once: a repeat multiplies the work
            raise UnsupportedFormatError(
                f"{folder / METADATA_NAME}: two chunks name the same bytes of {name!r} "
                f"(at {start}; tensor {_shown(fqn)})"
            )
        ranges[(name, start)] = length
        return name, start, length, info

    tensors: list[TensorLayout] = []
    others: list[str] = []
    for fqn, entry in entries.items():
        if not isinstance(fqn, str):
            raise UnsupportedFormatError(f"{folder / METADATA_NAME}: a non-text entry name")
        if _is(entry, "BytesStorageMetadata"):
            others.append(fqn)
            file_size(located(fqn, ())[0])
            continue
        if not _is(entry, "TensorStorageMetadata"):
            raise UnsupportedFormatError(
                f"{folder / METADATA_NAME}: entry {_shown(fqn)} is unknown"
            )
        dtype = _dtype_of(entry, fqn, folder, _TORCH_DTYPES)
        shape = entry.attrs.get("size")
        chunks = entry.attrs.get("chunks")
        if not (_ints(shape) and isinstance(chunks, list)):
            raise UnsupportedFormatError(
                f"{folder / METADATA_NAME}: tensor {_shown(fqn)} is malformed"
            )
        pieces: list[tuple[int, int, Piece]] = []
        for chunk in chunks:
            offsets, chunk_sizes = chunk.attrs.get("offsets"), chunk.attrs.get("sizes")
            if not (_is(chunk, "ChunkStorageMetadata") and _ints(offsets) and _ints(chunk_sizes)):
                raise UnsupportedFormatError(
                    f"{folder}: tensor {_shown(fqn)} has a malformed chunk"
                )
            _check_rows(fqn, shape, offsets, chunk_sizes, folder)
            name, start, length, _ = located(fqn, offsets)
            try:
                item_dtype, item_shape, at, nbytes = locate_item(folder / name, start, length)
            except CannotRead as exc:
                raise UnsupportedFormatError(
                    f"{folder / name}: the chunk of tensor {_shown(fqn)} at {list(offsets)} "
                    f"cannot be read without torch ({exc})"
                ) from None
            if item_dtype != dtype or item_shape != chunk_sizes:
                raise UnsupportedFormatError(
                    f"{folder / name}: the chunk of tensor {_shown(fqn)} at {list(offsets)} holds "
                    f"{item_dtype}{list(item_shape)}, but the metadata says "
                    f"{dtype}{list(chunk_sizes)}"
                )
            rows = chunk_sizes[0] if chunk_sizes else 1
            pieces.append((offsets[0] if offsets else 0, rows, Piece(name, at, nbytes)))
        pieces.sort(key=lambda p: (p[0], p[1]))
        _check_cover(fqn, shape, pieces, folder)
        tensors.append(TensorLayout(fqn, dtype, shape, tuple(p for _, _, p in pieces)))
    _check_disjoint(ranges, folder)
    return DcpPlan(folder, tuple(tensors), tuple(sorted(sizes, key=_natural)), tuple(others))


def _shown(name: str) -> str:
    """A tensor name for a message: quoted, and cut short if a crafted one is long."""
    return repr(name) if len(name) <= 200 else f"{name[:200]!r}... ({len(name)} characters)"


def _shard_name(name: Any) -> bool:
    """A name of a file of the folder itself, one a file system can hold and a
    message can show: no folder part, no control character, UTF-8, 255 bytes at most."""
    if not isinstance(name, str) or name in ("", ".", "..", METADATA_NAME):
        return False
    if "/" in name or "\\" in name or not name.isprintable():
        return False
    try:
        return len(name.encode("utf-8")) <= 255
    except UnicodeEncodeError:  # a lone surrogate
        return False


def _check_disjoint(ranges: dict[tuple[str, int], int], folder: Path) -> None:
    """No two items share bytes of a shard file (DCP writes them end to end): a
    crafted layout naming a big item many times would be hashed as many times."""
    ends: dict[str, int] = {}
    for (name, start), length in sorted(ranges.items()):
        if start < ends.get(name, 0):
            raise UnsupportedFormatError(
                f"{folder / METADATA_NAME}: two chunks overlap in {name!r} (at {start})"
            )
        ends[name] = start + length


def _is(value: Any, kind: str) -> bool:
    return isinstance(value, _Record) and value.kind == kind


def _natural(name: str) -> list[Any]:
    """``__2_0.distcp`` before ``__10_0.distcp``: ranks in number order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _dtype_of(entry: _Record, fqn: str, folder: Path, known: dict[str, str]) -> str:
    properties = entry.attrs.get("properties")
    dtype: Any = None
    if isinstance(properties, _Record) and properties.kind == "TensorProperties":
        dtype = properties.state[0] if properties.state else properties.attrs.get("dtype")
    if not isinstance(dtype, _Dtype) or dtype.name not in known:
        shown = repr(dtype.name[:40]) if isinstance(dtype, _Dtype) else type(dtype).__name__
        raise UnsupportedFormatError(
            f"{folder / METADATA_NAME}: tensor {_shown(fqn)} has no dtype ledger knows ({shown})"
        )
    return known[dtype.name]


def _check_rows(
    fqn: str,
    shape: tuple[int, ...],
    offsets: tuple[int, ...],
    sizes: tuple[int, ...],
    folder: Path,
) -> None:
    if len(offsets) != len(shape) or len(sizes) != len(shape):
        raise UnsupportedFormatError(f"{folder}: tensor {_shown(fqn)} has a chunk of another rank")
    if shape and (any(offsets[1:]) or sizes[1:] != shape[1:]):
        raise UnsupportedFormatError(
            f"{folder}: tensor {_shown(fqn)} is split along a dimension other than the first "
            f"(a chunk at {list(offsets)} of {list(sizes)}); ledger reads checkpoints whose "
            "tensors are split by rows (FSDP's Shard(0))",
            hint="gather the state dict and save it in one file to record it",
        )


def _check_cover(
    fqn: str, shape: tuple[int, ...], pieces: Sequence[tuple[int, int, Piece]], folder: Path
) -> None:
    """The chunks (first offset, rows, bytes), by first offset, tile the tensor's rows
    exactly once."""
    expected = 0
    for offset, rows, _ in pieces:
        if offset != expected:
            raise UnsupportedFormatError(
                f"{folder}: the chunks of tensor {_shown(fqn)} overlap or leave a gap "
                f"at row {expected}"
            )
        expected += rows
    if expected != (shape[0] if shape else 1):
        raise UnsupportedFormatError(
            f"{folder}: the chunks of tensor {_shown(fqn)} cover {expected} of its "
            f"{shape[0] if shape else 1} rows"
        )


def pieces_in_order(plan: DcpPlan) -> Iterator[tuple[str, list[tuple[int, Piece]]]]:
    """Per shard file (in :attr:`DcpPlan.files` order), its tensor pieces as
    (tensor number, piece); hashed in this order, each tensor's pieces arrive
    in its row order exactly when :func:`one_pass_ok` says so."""
    by_file: dict[str, list[tuple[int, Piece]]] = {name: [] for name in plan.files}
    for number, tensor in enumerate(plan.tensors):
        for piece in tensor.pieces:
            by_file[piece.file].append((number, piece))
    for name in plan.files:
        yield name, sorted(by_file[name], key=lambda item: item[1].offset)


def one_pass_ok(plan: DcpPlan) -> list[bool]:
    """Per tensor: whether reading the shard files in order, each from start to end,
    meets its pieces in row order (true of FSDP checkpoints: rank r holds the
    rows after rank r - 1's). Others need their pieces read again, in order."""
    rank = {name: position for position, name in enumerate(plan.files)}
    ok = []
    for tensor in plan.tensors:
        keys = [(rank[p.file], p.offset) for p in tensor.pieces if p.length]
        ok.append(keys == sorted(keys))
    return ok


def dcp_digest(folder: Path | str, *, workers: int | None = None) -> TensorDigest:
    """The tensor root of the logical state dict in the DCP folder ``folder``
    (each tensor's pieces read in row order, a tensor per worker thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from ledger.hashing._engine import default_workers
    from ledger.hashing.tensors import TensorLeaf, digest_leaves

    plan = dcp_plan(folder)
    fds: dict[str, int] = {}
    try:
        for name in plan.files:
            fds[name] = os.open(plan.folder / name, os.O_RDONLY)

        def one(tensor: TensorLayout) -> TensorLeaf:
            digest = hashlib.sha256()
            for piece in tensor.pieces:
                _feed(digest, fds[piece.file], piece.offset, piece.length)
            return TensorLeaf(tensor.name, tensor.dtype, tensor.shape, digest.digest())

        workers = default_workers() if workers is None else max(1, workers)
        if workers == 1 or len(plan.tensors) < 2:
            leaves = [one(t) for t in plan.tensors]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="ledger-tensors") as pool:
                leaves = list(pool.map(one, plan.tensors))
    finally:
        for fd in fds.values():
            os.close(fd)
    return digest_leaves(leaves)


def _feed(digest: Any, fd: int, start: int, length: int) -> None:
    from ledger.hashing._engine import page_buffer, pread_into

    if not length:
        return
    buffer = page_buffer(min(length, 8 << 20))
    try:
        with memoryview(buffer) as view:
            done = 0
            while done < length:
                with view[: min(len(buffer), length - done)] as piece:
                    got = pread_into(fd, piece, start + done)
                    if not got:
                        raise UnsupportedFormatError("a shard file ends inside a tensor")
                    with piece[:got] as filled:
                        digest.update(filled)
                done += got
    finally:
        buffer.close()

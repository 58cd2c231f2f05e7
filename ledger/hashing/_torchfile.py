"""Tensor leaves of ``torch.save`` files, read without torch and without unpickling.

A ``torch.save`` file (the zip format, torch 1.6 and later) is a zip archive,
every member stored uncompressed under one top folder::

    <name>/data.pkl      the object, pickled (protocol 2): dicts, lists, numbers,
                         and one ``_rebuild_tensor_v2(storage, offset, size,
                         stride, requires_grad, hooks)`` call per tensor
    <name>/byteorder     "little" or "big": the byte order of the tensor data
    <name>/data/<key>    the raw bytes of storage <key>, named in data.pkl by a
                         persistent id ``("storage", torch.FloatStorage, key,
                         location, numel)``

:func:`read_tensors` walks ``data.pkl`` opcode by opcode (:func:`pickletools.genops`
only decodes them) and interprets the few that ``torch.save`` writes for state
dicts and checkpoints, building plain values and tensor *references*: no pickle
machinery runs, nothing is imported by name, no object of the file's choosing
is created. Tensor bytes are then hashed straight from the storage members, at
their offsets in the file. Anything outside that small language (another global,
a non-contiguous or big-endian tensor, a compressed member, a legacy file...)
raises :class:`CannotRead`, and the caller falls back to
``torch.load(weights_only=True)``, which either reads it or refuses it. The
globals accepted here are a subset of what that loader allows, so a file gets
the same outcome either way, only faster and without importing torch.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import pickletools
import struct
import sys
import types
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.hashing._engine import default_workers, page_buffer, pread_into

__all__ = ["CannotRead", "TensorRef", "find_state_dict", "interpret", "read_tensors"]

Tensor = tuple[str, str, tuple[int, ...], bytes]
"""One tensor of a state dict: name, safetensors dtype, shape, sha256 of its bytes."""


class CannotRead(Exception):
    """The file is not (only) what this reader understands; torch must decide."""


# storage classes of torch.save (the legacy typed ones) -> (safetensors dtype, item size)
_STORAGES = {
    "DoubleStorage": ("F64", 8),
    "FloatStorage": ("F32", 4),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
    "ComplexFloatStorage": ("C64", 8),
}
# dtypes that torch.save writes as an untyped storage plus ``_rebuild_tensor_v3(..., dtype)``
_V3_DTYPES = {
    "float8_e4m3fn": ("F8_E4M3", 1),
    "float8_e5m2": ("F8_E5M2", 1),
    "uint16": ("U16", 2),
    "uint32": ("U32", 4),
    "uint64": ("U64", 8),
}
_UNTYPED = ("U8", 1)


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


_ORDERED_DICT = _Global("collections", "OrderedDict")
_REBUILD_V2 = _Global("torch._utils", "_rebuild_tensor_v2")
_REBUILD_V3 = _Global("torch._utils", "_rebuild_tensor_v3")
_REBUILD_PARAMETER = _Global("torch._utils", "_rebuild_parameter")
_ENCODE = _Global("_codecs", "encode")
_FUNCTIONS = {_ORDERED_DICT, _REBUILD_V2, _REBUILD_V3, _REBUILD_PARAMETER, _ENCODE}


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    itemsize: int
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class TensorRef:
    """A tensor of the file: where its bytes are, not the bytes."""

    storage: _Storage
    dtype: str
    itemsize: int
    offset: int  # in elements of ``dtype``
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _OrderedDict(dict[Any, Any]):
    """A dict made by ``OrderedDict()``: the only object BUILD may set attributes on."""


class _Mark:
    """Stands for a MARK inside a tuple being built (never a value)."""


def _global(module: str, name: str) -> _Global:
    found = _Global(module, name)
    if found in _FUNCTIONS:
        return found
    if module in ("torch", "torch.storage") and (name in _STORAGES or name == "UntypedStorage"):
        return found
    if module == "torch" and name in _V3_DTYPES:
        return found
    raise CannotRead(f"the pickle names {module}.{name}, which this reader does not know")


def _storage(pid: Any) -> _Storage:
    if not (
        isinstance(pid, tuple)
        and len(pid) == 5
        and pid[0] == "storage"
        and isinstance(pid[1], _Global)
        and isinstance(pid[2], str)
        and isinstance(pid[4], int)
        and pid[4] >= 0
    ):
        raise CannotRead(f"unexpected persistent id {pid!r}")
    kind = pid[1].name
    dtype, itemsize = _UNTYPED if kind == "UntypedStorage" else _STORAGES.get(kind, ("", 0))
    if not itemsize or pid[1].module not in ("torch", "torch.storage"):
        raise CannotRead(f"unexpected storage type {pid[1]}")
    return _Storage(pid[2], dtype, itemsize, pid[4])


def _is_ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    )


def _rebuild(function: _Global, args: Any) -> Any:
    """What one REDUCE builds, for the functions this reader knows."""
    if not isinstance(args, tuple):
        raise CannotRead("REDUCE without an argument tuple")
    if function == _ORDERED_DICT:
        if args:
            raise CannotRead("OrderedDict built from arguments")
        return _OrderedDict()
    if function == _ENCODE:
        if len(args) == 2 and isinstance(args[0], str) and args[1] == "latin1":
            return args[0].encode("latin1")
        raise CannotRead("_codecs.encode with unexpected arguments")
    if function == _REBUILD_PARAMETER:
        if len(args) == 3 and isinstance(args[0], TensorRef) and args[2] == {}:
            return args[0]
        raise CannotRead("a parameter with state or hooks")
    if function == _REBUILD_V2:
        storage, rest, dtype_global = args[0] if args else None, args[1:], None
        head, metadata = rest[:5], rest[5:]
    elif function == _REBUILD_V3:
        storage, rest = args[0] if args else None, args[1:]
        head, dtype_global, metadata = rest[:5], rest[5] if len(rest) > 5 else None, rest[6:]
    else:
        raise CannotRead(f"{function.module}.{function.name} called")
    if len(head) != 5 or len(metadata) > 1 or (metadata and metadata[0]):
        raise CannotRead("a tensor with unexpected arguments or metadata (conj/neg bits)")
    offset, shape, stride, _requires_grad, hooks = head
    if not (
        isinstance(storage, _Storage)
        and isinstance(offset, int)
        and offset >= 0
        and _is_ints(shape)
        and _is_ints(stride)
        and len(shape) == len(stride)
        and hooks == {}
    ):
        raise CannotRead("a tensor with unexpected arguments")
    if function == _REBUILD_V3:
        if not (
            isinstance(dtype_global, _Global)
            and dtype_global.module == "torch"
            and dtype_global.name in _V3_DTYPES
            and storage.dtype == _UNTYPED[0]
        ):
            raise CannotRead("_rebuild_tensor_v3 without a known dtype")
        dtype, itemsize = _V3_DTYPES[dtype_global.name]
    else:
        dtype, itemsize = storage.dtype, storage.itemsize
    return TensorRef(storage, dtype, itemsize, offset, shape, stride)


def interpret(pickled: bytes) -> Any:
    """The object ``pickled`` describes, with tensors as :class:`TensorRef`.

    Only decodes opcodes; raises :class:`CannotRead` for any opcode, global or
    call outside what ``torch.save`` writes for state dicts and checkpoints
    (pickle protocol 2). The opcodes and globals taken are a subset of those
    torch's weights-only unpickler takes, so whatever is read here torch would
    read too.
    """
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}
    storages: dict[str, _Storage] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not marks:
            raise CannotRead("unbalanced MARK")
        items, stack = stack, marks.pop()
        return items

    try:
        for opcode, decoded, _ in pickletools.genops(pickled):
            arg: Any = decoded
            name = opcode.name
            if name == "PROTO":
                if not 2 <= int(arg) <= 5:
                    raise CannotRead(f"pickle protocol {arg}")
            elif name == "STOP":
                if len(stack) != 1 or marks:
                    raise CannotRead("the pickle stops with a malformed stack")
                return stack[0]
            elif name == "MARK":
                marks.append(stack)
                stack = []
            elif name in ("BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
            elif name in ("BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE"):
                stack.append(arg)
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
                items = stack[-size:]
                if len(items) != size:
                    raise CannotRead(f"{name} on a short stack")
                del stack[-size:]
                stack.append(tuple(items))
            elif name == "TUPLE":
                items = pop_mark()  # before naming ``stack``: it rebinds it
                stack.append(tuple(items))
            elif name == "APPEND":
                value = stack.pop()
                _list(stack[-1]).append(value)
            elif name == "APPENDS":
                items = pop_mark()
                _list(stack[-1]).extend(items)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _dict(stack[-1])[key] = value
            elif name == "SETITEMS":
                items = pop_mark()
                _dict(stack[-1]).update(zip(items[::2], items[1::2], strict=True))
            elif name == "GLOBAL":
                module, _, attribute = str(arg).partition(" ")
                stack.append(_global(module, attribute))
            elif name == "BINPERSID":
                storage = _storage(stack.pop())
                seen = storages.setdefault(storage.key, storage)
                if seen != storage:
                    raise CannotRead(f"storage {storage.key} is named with two types or sizes")
                stack.append(storage)
            elif name == "REDUCE":
                args, function = stack.pop(), stack.pop()
                if not isinstance(function, _Global) or function not in _FUNCTIONS:
                    raise CannotRead(f"REDUCE of {function!r}")
                stack.append(_rebuild(function, args))
            elif name == "BUILD":
                state = stack.pop()
                # OrderedDict state: attributes such as a state dict's ``_metadata``
                if not (isinstance(stack[-1], _OrderedDict) and isinstance(state, dict)):
                    raise CannotRead("BUILD of an object other than an OrderedDict")
            else:
                raise CannotRead(f"pickle opcode {name}")
    except CannotRead:
        raise
    except (ValueError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise CannotRead(f"malformed pickle ({exc})") from exc
    raise CannotRead("the pickle has no STOP")


def _list(target: Any) -> list[Any]:
    if type(target) is not list:
        raise CannotRead("APPEND to something other than a list")
    return target


def _dict(target: Any) -> dict[Any, Any]:
    if not isinstance(target, dict):
        raise CannotRead("SETITEM on something other than a dict")
    return target


def find_state_dict(obj: Any) -> dict[str, TensorRef] | None:
    """The state dict in ``obj``: itself, else under ``state_dict``, ``model_state_dict``
    or ``model`` (Lightning and common training-loop checkpoints)."""
    seen: set[int] = set()
    while isinstance(obj, dict) and id(obj) not in seen:
        seen.add(id(obj))
        if obj and all(isinstance(k, str) and isinstance(v, TensorRef) for k, v in obj.items()):
            return obj
        key = next((k for k in ("state_dict", "model_state_dict", "model") if k in obj), None)
        if key is None:
            return None
        obj = obj[key]
    return None


# -- the zip archive ---------------------------------------------------------------

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIGNATURE = 0x04034B50


@dataclass(frozen=True)
class _Member:
    start: int  # offset of the member's bytes in the file
    size: int


class TorchZip:
    """The members of a ``torch.save`` zip that matter, located but not read."""

    def __init__(self, path: Path, data: bytes | None = None) -> None:
        self.path = path
        self.data = data  # the file's bytes, when the caller holds them already
        try:
            with zipfile.ZipFile(path if data is None else io.BytesIO(data)) as archive:
                infos = archive.infolist()
                names = [info.filename for info in infos]
                if not infos or len(set(names)) != len(names):
                    raise CannotRead("an empty archive, or one with a name twice")
                top, slash, _ = names[0].partition("/")
                if not slash or any(not n.startswith(top + "/") for n in names):
                    raise CannotRead("the archive has no single top folder")
                self._prefix = top + "/"
                self._infos = {n[len(self._prefix) :]: i for n, i in zip(names, infos, strict=True)}
                if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
                    raise CannotRead("a compressed member (torch.save stores them all)")
                pickle_info = self._infos.get("data.pkl")
                if pickle_info is None:
                    raise CannotRead("no data.pkl")
                self.pickled = archive.read(pickle_info)
                order = self._infos.get("byteorder")
                # without the record torch assumes this machine's byte order
                self.byteorder = archive.read(order).decode("ascii") if order else sys.byteorder
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError) as exc:
            raise CannotRead(f"not a readable zip archive ({exc})") from exc
        self._members: dict[str, _Member] = {}

    def storage(self, key: str) -> _Member:
        """Where storage ``key``'s bytes sit in the file (stored members only)."""
        if key in self._members:
            return self._members[key]
        info = self._infos.get(f"data/{key}")
        if info is None:
            raise CannotRead(f"storage {key} is missing")
        if self.data is not None:
            header = self.data[info.header_offset : info.header_offset + _LOCAL_HEADER.size]
        else:
            with open(self.path, "rb") as handle:
                handle.seek(info.header_offset)
                header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise CannotRead(f"storage {key}: truncated local header")
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != _LOCAL_SIGNATURE:
            raise CannotRead(f"storage {key}: bad local header")
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        member = self._members[key] = _Member(start, info.file_size)
        return member


READ_PIECE = 8 * 1024 * 1024


def _digest(fd: int, start: int, length: int) -> bytes:
    """sha256 of ``length`` bytes of ``fd`` from ``start``, read in pieces (no whole copy)."""
    digest = hashlib.sha256()
    buffer = page_buffer(min(length, READ_PIECE))
    with memoryview(buffer) as view:
        done = 0
        while done < length:
            with view[: min(len(buffer), length - done)] as piece:
                got = pread_into(fd, piece, start + done)
                if not got:
                    raise CannotRead("the file ends inside a tensor")
                with piece[:got] as filled:
                    digest.update(filled)
            done += got
    return digest.digest()


def _digest_view(view: memoryview, start: int, length: int) -> bytes:
    with view[start : start + length] as piece:
        if len(piece) != length:
            raise CannotRead("the file ends inside a tensor")
        return hashlib.sha256(piece).digest()


def _span(archive: TorchZip, name: str, tensor: TensorRef) -> tuple[int, int]:
    """The file offset and length of ``tensor``'s row-major bytes."""
    numel = math.prod(tensor.shape)
    if numel:
        expected = 1
        for size, stride in zip(reversed(tensor.shape), reversed(tensor.stride), strict=True):
            if size != 1 and stride != expected:
                raise CannotRead(f"tensor {name!r} is not contiguous")
            expected *= size
    start = tensor.offset * tensor.itemsize
    length = numel * tensor.itemsize
    member = archive.storage(tensor.storage.key)
    if length and start + length > min(member.size, tensor.storage.nbytes):
        raise CannotRead(f"tensor {name!r} reaches past its storage")
    return member.start + start, length


@functools.lru_cache(maxsize=8)
def _state_of(pickled: bytes) -> Mapping[str, TensorRef] | None:
    """:func:`find_state_dict` of :func:`interpret`, kept for the last few pickles.

    A run's state-dict checkpoints share one ``data.pkl`` byte for byte (names,
    shapes and storage keys do not change between epochs; the tensor bytes live
    in other members), so the outbox worker interprets it once per run, not once
    per checkpoint. Keyed by the exact bytes; shared, hence read-only.
    """
    found = find_state_dict(interpret(pickled))
    return None if found is None else types.MappingProxyType(found)


def read_tensors(
    path: Path, *, workers: int | None = None, data: bytes | None = None
) -> list[Tensor] | None:
    """The tensors of the state dict in the ``torch.save`` zip at ``path``, without torch.

    None when the file is fully understood and holds no state dict. Raises
    :class:`CannotRead` whenever torch has to decide. Large files are hashed
    a tensor per worker thread (default: one per core). ``data``, if given, is
    the file's content, read by the caller already: nothing is read again.
    """
    if not zipfile.is_zipfile(path if data is None else io.BytesIO(data)):
        raise CannotRead("not a zip archive (a legacy torch file?)")
    archive = TorchZip(path, data)
    if archive.byteorder != "little" or sys.byteorder != "little":
        raise CannotRead(f"byte order {archive.byteorder} on a {sys.byteorder}-endian machine")
    state = _state_of(archive.pickled)
    if state is None:
        return None
    spans = [_span(archive, name, tensor) for name, tensor in state.items()]
    if data is not None:
        with memoryview(data) as view:
            return [
                (name, tensor.dtype, tensor.shape, _digest_view(view, start, length))
                for (name, tensor), (start, length) in zip(state.items(), spans, strict=True)
            ]
    workers = default_workers() if workers is None else workers
    parallel = workers > 1 and len(spans) > 1 and sum(n for _, n in spans) > 4 * READ_PIECE
    fd = os.open(path, os.O_RDONLY)
    try:
        if parallel:
            with ThreadPoolExecutor(workers, thread_name_prefix="ledger-tensors") as pool:
                digests = list(pool.map(lambda span: _digest(fd, *span), spans))
        else:
            digests = [_digest(fd, *span) for span in spans]
    finally:
        os.close(fd)
    return [
        (name, tensor.dtype, tensor.shape, digest)
        for (name, tensor), digest in zip(state.items(), digests, strict=True)
    ]

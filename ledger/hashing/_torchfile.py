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
import re
import struct
import sys
import types
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from ledger.hashing._engine import default_workers, page_buffer, pread_into

__all__ = [
    "Broken",
    "CannotRead",
    "TensorRef",
    "audit",
    "find_state_dict",
    "interpret",
    "locate_item",
    "locate_tensors",
    "read_tensors",
]

Tensor = tuple[str, str, tuple[int, ...], bytes]
"""One tensor of a state dict: name, safetensors dtype, shape, sha256 of its bytes."""


class CannotRead(Exception):
    """The file is not (only) what this reader understands; torch must decide."""


class Broken(CannotRead):
    """The file is malformed or hostile in a way torch would not read either (a
    truncated or runaway pickle, a storage shorter than it claims, a compressed
    or ambiguous zip): the caller reports it and does not hand it to torch."""


MAX_PICKLE_BYTES = 32 * 1024 * 1024
"""Largest ``data.pkl`` read (a state dict costs ~150 bytes of pickle per tensor)."""
MAX_OPCODES = 2_000_000
"""Most pickle opcodes interpreted: bounds the objects built from a small hostile file."""
MAX_MEMBERS = 250_000
"""Most zip members opened: bounds the directory Python's zipfile holds in memory."""


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
        raise CannotRead(f"unexpected persistent id (a {type(pid).__name__})")
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
    (pickle protocol 2), and :class:`Broken` for a pickle that is truncated,
    malformed or longer than :data:`MAX_OPCODES`. The opcodes and globals taken
    are a subset of those torch's weights-only unpickler takes, so whatever is
    read here torch would read too.
    """
    return _interpret(pickled).value


@dataclass(frozen=True)
class _Pickle:
    value: Any
    storages: Mapping[str, _Storage]  # every storage the pickle names, wherever
    end: int  # offset just past STOP: bytes from here on are not part of the pickle


MAX_NESTING = 200
"""Deepest nesting of objects a pickle read here may build (state dicts and
training checkpoints nest a few levels)."""

_UPDATES = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


def check_nesting(pickled: bytes) -> int:
    """Raise :class:`Broken` if ``pickled`` builds objects nested deeper than
    :data:`MAX_NESTING`, before anything unpickles it.

    Why this exists: hashing a tuple nested a million deep (as a dict key) overflows
    the C stack, a crash no ``except`` catches, and torch's weights-only unpickler,
    to which a file this reader cannot read is handed, does exactly that
    (PyTorch 2.13). Only depths are simulated, from each opcode's stack effect
    as :mod:`pickletools` describes it; malformed pickles are left to the reader.
    Returns the offset just past the pickle's STOP.
    """
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[Any, int] = {}
    for opcode, arg, position in pickletools.genops(pickled):
        name = opcode.name
        if name == "STOP":
            return int(position or 0) + 1
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else 0
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else 0
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, 0))
            continue
        before = opcode.stack_before
        if pickletools.markobject in before:  # [below...] MARK [slice]
            at = marks.pop() if marks else len(stack)
            items = stack[at:]
            below_count = before.index(pickletools.markobject)
            below = stack[max(0, at - below_count) : at]
            del stack[max(0, at - below_count) :]
        else:
            count = len(before)
            below, items = [], stack[len(stack) - count :] if count else []
            del stack[len(stack) - len(items) :]
            if name in _UPDATES and items:  # the container, then what goes in it
                below, items = items[:1], items[1:]
        if name in _UPDATES:
            made = [max([*below, 1 + max(items, default=0)])]
        elif name == "DUP":
            made = items * 2
        else:
            deepest = max([*below, *items], default=-1) + 1
            made = [deepest] * len(opcode.stack_after)
        if made and max(made) > MAX_NESTING:
            raise Broken(f"the pickle nests objects more than {MAX_NESTING} deep")
        stack.extend(made)
    return len(pickled)


def _interpret(pickled: bytes) -> _Pickle:
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}
    storages: dict[str, _Storage] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not marks:
            raise Broken("unbalanced MARK")
        items, stack = stack, marks.pop()
        return items

    try:
        check_nesting(pickled)
        for count, (opcode, decoded, position) in enumerate(pickletools.genops(pickled)):
            if count >= MAX_OPCODES:
                raise Broken(f"the pickle runs past {MAX_OPCODES} opcodes")
            arg: Any = decoded
            name = opcode.name
            if name == "PROTO":
                if not 2 <= int(arg) <= 5:
                    raise CannotRead(f"pickle protocol {arg}")
            elif name == "STOP":
                if len(stack) != 1 or marks:
                    raise Broken("the pickle stops with a malformed stack")
                return _Pickle(stack[0], storages, int(position or 0) + 1)
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
                    raise Broken(f"{name} on a short stack")
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
                _dict(stack[-1])[_key(key)] = value
            elif name == "SETITEMS":
                items = pop_mark()
                target = _dict(stack[-1])
                for key, value in zip(items[::2], items[1::2], strict=True):
                    target[_key(key)] = value
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
                    shown = (
                        f"{function.module}.{function.name}"[:200]
                        if isinstance(function, _Global)
                        else f"a {type(function).__name__}"
                    )
                    raise CannotRead(f"REDUCE of {shown}")
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
        raise Broken(f"malformed or truncated pickle ({_first_line(exc)})") from exc
    except (RecursionError, MemoryError):
        raise Broken("a pickle nested or sized beyond any checkpoint's") from None
    raise Broken("the pickle has no STOP (truncated)")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return (text.splitlines() or [type(exc).__name__])[0][:200]


_KEY_DEPTH = 8
"""How deep a tuple used as a dict key may nest (state dicts key by names,
optimizers by numbers; a user's dict may key by a small tuple)."""


def _key(key: Any, depth: int = 0) -> Any:
    """``key``, unless it is a tuple nested more than :data:`_KEY_DEPTH` deep: hashing
    a tuple nested a million deep overflows the C stack (a crash no ``except``
    catches), so such keys are refused before the dict hashes them (what is not
    hashable at all fails there, as a malformed pickle)."""
    if isinstance(key, tuple):
        if depth >= _KEY_DEPTH:
            raise Broken("a dict keyed by a tuple nested past what checkpoints use")
        for item in key:
            _key(item, depth + 1)
    return key


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

    def __init__(
        self, path: Path, data: bytes | None = None, *, window: tuple[int, int] | None = None
    ) -> None:
        self.path = path
        self.data = data  # the file's bytes, when the caller holds them already
        # (offset, length): the archive is these bytes of the file (a DCP shard's item)
        self.window = window
        with self._open() as source:
            _check_directory_size(source)
        try:
            with zipfile.ZipFile(self._open()) as archive:
                infos = archive.infolist()
                names = [info.filename for info in infos]
                if not infos:
                    raise Broken("an empty zip archive, not a torch.save file")
                if len(set(names)) != len(names):
                    twice = next(n for n in names if names.count(n) > 1)
                    raise Broken(f"the zip names member {twice!r} twice (readers disagree on it)")
                compressed = next((i for i in infos if i.compress_type != zipfile.ZIP_STORED), None)
                if compressed is not None:
                    raise Broken(
                        f"member {compressed.filename!r} is compressed; torch.save stores every"
                        " member as is (compressed members are not inflated)"
                    )
                top = names[0].partition("/")[0]
                self._prefix = top + "/"
                if not any(n == self._prefix + "data.pkl" for n in names):
                    raise Broken("a zip archive without data.pkl: not a torch.save file")
                if any(not n.startswith(self._prefix) for n in names):
                    raise CannotRead("the archive has no single top folder")
                self._infos = {n[len(self._prefix) :]: i for n, i in zip(names, infos, strict=True)}
                pickle_info = self._infos["data.pkl"]
                if pickle_info.file_size > MAX_PICKLE_BYTES:
                    raise Broken(
                        f"data.pkl is {pickle_info.file_size} bytes, more than the"
                        f" {MAX_PICKLE_BYTES >> 20} MiB a state dict's pickle needs"
                    )
                self.pickled = archive.read(pickle_info)
                order = self._infos.get("byteorder")
                if order is not None and order.file_size > 16:
                    raise Broken("the byteorder member is not 'little' or 'big'")
                # without the record torch assumes this machine's byte order
                self.byteorder = archive.read(order).decode("ascii") if order else sys.byteorder
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError) as exc:
            raise Broken(f"not a readable zip archive ({_first_line(exc)})") from exc
        self._members: dict[str, _Member] = {}

    def _open(self) -> IO[bytes]:
        """The archive's bytes as a file; offsets in it are relative to the window."""
        if self.data is not None:
            return io.BytesIO(self.data)
        if self.window is not None:
            return cast(IO[bytes], _Window(self.path, *self.window))
        return open(self.path, "rb")  # closed by the caller's with

    @property
    def names(self) -> list[str]:
        """Every member's name inside the top folder."""
        return list(self._infos)

    def read_small(self, name: str, limit: int = 256) -> bytes | None:
        """A small member's bytes (None when larger than ``limit``)."""
        info = self._infos[name]
        if info.file_size > limit:
            return None
        with zipfile.ZipFile(self._open()) as archive:
            return archive.read(info)

    def storage(self, key: str) -> _Member:
        """Where storage ``key``'s bytes sit in the file (stored members only)."""
        if key in self._members:
            return self._members[key]
        info = self._infos.get(f"data/{key}")
        if info is None:
            raise Broken(f"storage {key} is named by the pickle but has no member")
        with self._open() as handle:
            handle.seek(info.header_offset)
            header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise Broken(f"storage {key}: truncated local header")
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != _LOCAL_SIGNATURE:
            raise Broken(f"storage {key}: bad local header")
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        member = self._members[key] = _Member(start, info.file_size)
        return member


_END = struct.Struct("<IHHHHIIH")


def _check_directory_size(handle: IO[bytes]) -> None:
    """Refuses a zip whose end record declares more than :data:`MAX_MEMBERS` members,
    before Python's zipfile builds an object for each."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - _END.size - 0xFFFF))
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _END.size > len(tail):
        return  # zipfile will say what is wrong
    entries = _END.unpack_from(tail, at)[4]
    if entries == 0xFFFF:  # zip64: the count is in the zip64 record
        locator = tail[at - 20 : at]
        if locator[:4] == b"PK\x06\x07":
            (record_at,) = struct.unpack("<Q", locator[8:16])
            handle.seek(record_at)
            record = handle.read(56)
            if len(record) == 56:
                (entries,) = struct.unpack("<Q", record[32:40])
    if entries > MAX_MEMBERS:
        raise Broken(f"the zip declares {entries} members, more than {MAX_MEMBERS}")


class _Window(io.RawIOBase):
    """``length`` bytes of the file at ``path`` from ``offset``, as a file of their own
    (read-only, seekable): one item of a DCP shard file is a whole ``torch.save``
    zip, which :class:`zipfile.ZipFile` then reads without the rest of the file."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._base, self._length, self._at = offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._at, os.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the window")
        self._at = base + offset
        return self._at

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as view:
            want = max(0, min(len(view), self._length - self._at))
            if not want:
                return 0
            with view[:want] as piece:
                got = pread_into(self._fd, piece, self._base + self._at)
        self._at += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


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
                    raise Broken("the file ends inside a tensor")
                with piece[:got] as filled:
                    digest.update(filled)
            done += got
    return digest.digest()


def _digest_view(view: memoryview, start: int, length: int) -> bytes:
    with view[start : start + length] as piece:
        if len(piece) != length:
            raise Broken("the file ends inside a tensor")
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
    if member.size < tensor.storage.nbytes:
        raise Broken(
            f"storage {tensor.storage.key} declares {tensor.storage.nbytes} bytes but its"
            f" member holds {member.size} (truncated or forged)"
        )
    if length and start + length > tensor.storage.nbytes:
        raise Broken(f"tensor {name!r} reaches past its storage")
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


def _locate(
    path: Path, data: bytes | None
) -> tuple[Mapping[str, TensorRef], list[tuple[int, int]]] | None:
    """The state dict's tensors and where their bytes lie (offset, length); None
    when the file holds no state dict. Raises :class:`CannotRead` as
    :func:`read_tensors` does."""
    if not zipfile.is_zipfile(path if data is None else io.BytesIO(data)):
        raise CannotRead("not a zip archive (a legacy torch file?)")
    archive = TorchZip(path, data)
    if archive.byteorder != "little" or sys.byteorder != "little":
        raise CannotRead(f"byte order {archive.byteorder} on a {sys.byteorder}-endian machine")
    state = _state_of(archive.pickled)
    if state is None:
        return None
    spans = [_span(archive, name, tensor) for name, tensor in state.items()]
    size = len(data) if data is not None else os.path.getsize(path)
    total = sum(length for _, length in spans)
    if total > MAX_REREAD * size + (64 << 20):
        # tied weights share storage (an embedding and its head: twice); thousands of
        # names of one big storage would be hashed thousands of times
        raise Broken(
            f"its tensors name {total} bytes, {total // max(size, 1)} times the file's "
            f"{size}: the same bytes under many names",
        )
    return state, spans


MAX_REREAD = 16
"""Most times over a torch file's size its tensors' bytes may add up to (views and
tied weights share storage; beyond this, a crafted file multiplies the hashing)."""


def locate_tensors(path: Path) -> list[tuple[str, str, tuple[int, ...], int, int]] | None:
    """Each tensor of the state dict in the ``torch.save`` zip at ``path`` as
    (name, safetensors dtype, shape, offset, length) of its bytes in the file,
    read from the zip directory and the pickle alone (no tensor byte is read).

    Hashing each range with sha256 gives :func:`read_tensors`'s digests. None
    when the file holds no state dict; raises :class:`CannotRead` whenever
    torch has to decide, and :class:`Broken` for a range past the file's end.
    """
    located = _locate(path, None)
    if located is None:
        return None
    state, spans = located
    size = os.stat(path).st_size
    if any(start + length > size for start, length in spans):
        raise Broken("the file ends inside a tensor")
    return [
        (name, tensor.dtype, tensor.shape, start, length)
        for (name, tensor), (start, length) in zip(state.items(), spans, strict=True)
    ]


def locate_item(path: Path, offset: int, length: int) -> tuple[str, tuple[int, ...], int, int]:
    """The one tensor of the ``torch.save`` zip held by ``length`` bytes of ``path``
    from ``offset`` (an item of a ``torch.distributed.checkpoint`` shard file), as
    (safetensors dtype, shape, offset in the file, length) of its row-major bytes.

    Read like :func:`locate_tensors`: the zip directory and the pickle only.
    Raises :class:`CannotRead` for anything but one plain tensor, and
    :class:`Broken` for an archive that does not fit its window.
    """
    archive = TorchZip(path, window=(offset, length))
    if archive.byteorder != "little" or sys.byteorder != "little":
        raise CannotRead(f"byte order {archive.byteorder} on a {sys.byteorder}-endian machine")
    tensor = interpret(archive.pickled)
    if not isinstance(tensor, TensorRef):
        raise CannotRead(f"the item holds a {type(tensor).__name__}, not one tensor")
    start, nbytes = _span(archive, "item", tensor)
    if start + nbytes > length:
        raise Broken("the item ends inside its tensor")
    return tensor.dtype, tensor.shape, offset + start, nbytes


def read_tensors(
    path: Path, *, workers: int | None = None, data: bytes | None = None
) -> list[Tensor] | None:
    """The tensors of the state dict in the ``torch.save`` zip at ``path``, without torch.

    None when the file is fully understood and holds no state dict. Raises
    :class:`CannotRead` whenever torch has to decide. Large files are hashed
    a tensor per worker thread (default: one per core). ``data``, if given, is
    the file's content, read by the caller already: nothing is read again.
    """
    located = _locate(path, data)
    if located is None:
        return None
    state, spans = located
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


# -- accounting for every member, byte and entry ---------------------------------------

TRAINING_STATE = frozenset(
    {
        # Lightning
        "optimizer_states",
        "lr_schedulers",
        "callbacks",
        "loops",
        "native_amp_scaling_state",
        "amp_scaling_state",
        # common training loops
        "optimizer",
        "optimizer_state_dict",
        "optimizers",
        "scheduler",
        "scheduler_state_dict",
        "lr_scheduler",
        "scaler",
        "grad_scaler",
        "rng_state",
        "rng_states",
        "torch_rng_state",
        "cuda_rng_state",
    }
)
"""Top-level checkpoint keys whose tensors are training state, not model weights."""

RAW_DATA_LIMIT = 64 * 1024
"""Bytes or text beside the state dict beyond this size are a payload, not metadata."""

_SMALL_MEMBERS = {
    "byteorder": rb"little|big",
    "version": rb"\d{1,8}\n?",
    ".data/version": rb"\d{1,8}\n?",
    ".format_version": rb"\d{1,8}\n?",
    ".storage_alignment": rb"\d{1,8}\n?",
    ".data/serialization_id": rb"[0-9A-Za-z]{1,64}",
}


@dataclass(frozen=True)
class Audit:
    """What a ``torch.save`` zip holds beyond its state dict's tensors.

    ``problems`` name members, bytes or entries that belong to no tensor of the
    state dict and to no training state; ``training_state`` lists the other
    entries of a checkpoint (key, and how many tensors it holds).
    """

    problems: tuple[str, ...]
    training_state: tuple[str, ...]


def _contents(value: Any) -> tuple[list[TensorRef], int]:
    """The tensors in ``value`` (any depth, no recursion) and its largest bytes/str."""
    tensors: list[TensorRef] = []
    largest = 0
    seen: set[int] = set()
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, TensorRef):
            tensors.append(item)
        elif isinstance(item, bytes | str):
            largest = max(largest, len(item))
        elif isinstance(item, dict | list | tuple) and id(item) not in seen:
            seen.add(id(item))
            if isinstance(item, dict):  # keys and values: no temporary tuples, whose ids recur
                todo.extend(item.keys())
                todo.extend(item.values())
            else:
                todo.extend(item)
    return tensors, largest


def _byte_range(tensor: TensorRef) -> tuple[int, int] | None:
    """The bytes of its storage that ``tensor`` covers; None when not one dense range."""
    numel = math.prod(tensor.shape)
    if not numel:
        return (0, 0)
    dims = sorted(
        (stride, size)
        for size, stride in zip(tensor.shape, tensor.stride, strict=True)
        if size != 1
    )
    expected = 1
    for stride, size in dims:  # dense in some order: a permutation of row-major strides
        if stride != expected:
            return None
        expected *= size
    return tensor.offset * tensor.itemsize, (tensor.offset + numel) * tensor.itemsize


def audit(path: Path) -> Audit:
    """Every member, pickle byte, storage byte and entry of the ``torch.save`` zip at
    ``path`` accounted for: the state dict's tensors, a checkpoint's training state
    (:data:`TRAINING_STATE`) and small metadata; anything else is a problem."""
    try:
        archive = TorchZip(path)
        parsed = _interpret(archive.pickled)
    except CannotRead as exc:
        return Audit((f"its contents cannot be accounted for byte by byte ({exc})",), ())
    problems: list[str] = []
    listed: list[str] = []
    if parsed.end != len(archive.pickled):
        problems.append(f"{len(archive.pickled) - parsed.end} bytes follow the pickle's STOP")
    covering: list[TensorRef] = []
    obj = parsed.value
    seen: set[int] = set()
    while isinstance(obj, dict) and id(obj) not in seen:
        seen.add(id(obj))
        if obj and all(isinstance(k, str) and isinstance(v, TensorRef) for k, v in obj.items()):
            covering.extend(obj.values())
            break
        key = next((k for k in ("state_dict", "model_state_dict", "model") if k in obj), None)
        for other, value in obj.items():
            if other == key:
                continue
            tensors, largest = _contents(value)
            label = repr(other) if isinstance(other, str) else f"a {type(other).__name__} key"
            if tensors and other in TRAINING_STATE:
                covering.extend(tensors)
                listed.append(f"{other} ({len(tensors)} tensors)")
            elif tensors:
                problems.append(
                    f"entry {label} holds {len(tensors)} tensor(s) outside the state dict"
                )
            elif largest > RAW_DATA_LIMIT:
                problems.append(f"entry {label} holds {largest} bytes of raw data")
            else:
                listed.append(str(other) if isinstance(other, str) else label)
        if key is None:
            return Audit(("it holds no state dict",), ())
        obj = obj[key]
    else:
        return Audit(("it holds no state dict",), ())
    ranges: dict[str, list[tuple[int, int]]] = {}
    for tensor in covering:
        span = _byte_range(tensor)
        if span is None:
            problems.append(f"a tensor of storage {tensor.storage.key} is not dense in its storage")
        else:
            ranges.setdefault(tensor.storage.key, []).append(span)
    for key, storage in parsed.storages.items():
        try:
            member = archive.storage(key)
        except CannotRead as exc:
            problems.append(str(exc))
            continue
        if member.size != storage.nbytes:
            problems.append(
                f"member data/{key} holds {member.size} bytes, its storage {storage.nbytes}"
            )
        spans = sorted(ranges.get(key, []))
        if not spans:
            problems.append(
                f"storage data/{key} ({member.size} bytes) is not part of the state dict"
            )
            continue
        covered, end = 0, 0
        for start, stop in spans:
            covered += max(0, stop - max(start, end))
            end = max(end, stop)
        if covered < member.size:
            problems.append(
                f"storage data/{key} holds {member.size - covered} bytes outside any tensor"
            )
    for name in archive.names:
        pattern = _SMALL_MEMBERS.get(name)
        if name == "data.pkl" or (name.startswith("data/") and name[5:] in parsed.storages):
            continue
        if pattern is None:
            problems.append(f"member {name!r} belongs to no tensor")
            continue
        content = archive.read_small(name)
        if content is None or not re.fullmatch(pattern, content):
            problems.append(f"member {name!r} holds unexpected content")
    return Audit(tuple(problems), tuple(listed))

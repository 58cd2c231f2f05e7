"""A model folder sent as one multipart body, written part by part into a fresh folder.

``POST /api/v1/verify/folder`` takes the folder's files as repeated ``files``
parts, each named by its path inside the folder (``config.json``,
``shards/part-1.safetensors``): what the page sends for a chosen or dropped
folder. The body is parsed as it arrives with python-multipart's streaming
parser (Starlette's form parser would spool every file before the route sees a
name, up to 1 MiB each in memory): each part's name is checked before a byte of
it is written, its bytes go straight to its file, and the totals are counted
as they grow. A name is rejected (4xx naming the part) when it could leave the
folder or mean two things: absolute, ``..`` or ``.``, empty or NUL or control
characters, backslashes, a Windows drive, a component over 255 bytes, more
than 32 folders deep, a path given twice (also up to case or Unicode form, as
macOS and Windows file systems compare names), or a file where another part needs a
folder; so is the part past 10,000 files or 10,000 folders. Files are created
with ``O_EXCL | O_NOFOLLOW`` and folders with ``mkdir``: nothing here creates
or follows a symlink.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ledger.errors import InputError

MAX_FILES = 10_000
MAX_PATH = 1024  # characters of one part's path
MAX_DEPTH = 32  # folders inside folders (a model folder has two or three levels)
MAX_FOLDERS = MAX_FILES  # folders created in all: a disk's inodes are not the client's
MAX_FIELD = 256  # bytes of a plain form field (`run`)
COMPONENT_BYTES = 255  # what Linux and macOS file systems take for one name
# room for the multipart framing around each part: boundary, headers with the path
PART_FRAMING = 256 + 3 * MAX_PATH
MAX_FOLDER_FRAMING = (MAX_FILES + 8) * PART_FRAMING

_DRIVE = re.compile(r"\A[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadTooLargeError(InputError):
    """The upload is larger than the API accepts."""

    http_status = 413


class BadPartError(InputError):
    """A part of a folder upload is not one this API writes (its name, its kind)."""

    http_status = 422


@dataclass
class FolderUpload:
    """What was received: the files written under ``root`` and the plain fields."""

    root: Path
    files: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    size: int = 0


def check_path(name: str, part: int) -> tuple[str, ...]:
    """The components of a part's path inside the folder, or BadPartError naming it."""
    where = f"files part {part} ({name[:80]!r})"
    fix = "send each file's path inside the folder, e.g. 'config.json' or 'shards/1.safetensors'"
    if not name:
        raise BadPartError(
            f"files part {part}: no file name (its path inside the folder)", hint=fix
        )
    if len(name) > MAX_PATH:
        raise BadPartError(f"{where}: the path is over {MAX_PATH} characters", hint=fix)
    if _CONTROL.search(name):
        raise BadPartError(f"{where}: the path holds NUL or control characters", hint=fix)
    if "\\" in name:
        raise BadPartError(f"{where}: backslashes are not path separators here", hint=fix)
    if name.startswith("/") or _DRIVE.match(name):
        raise BadPartError(f"{where}: an absolute path", hint=fix)
    parts = tuple(name.split("/"))
    if len(parts) > MAX_DEPTH + 1:
        raise BadPartError(f"{where}: more than {MAX_DEPTH} folders deep", hint=fix)
    for component in parts:
        if component in ("", ".", ".."):
            raise BadPartError(f"{where}: an empty, '.' or '..' path component", hint=fix)
        if len(component.encode("utf-8", "surrogatepass")) > COMPONENT_BYTES:
            raise BadPartError(f"{where}: a name over {COMPONENT_BYTES} bytes", hint=fix)
    return parts


class _Receiver:
    """The parser's callbacks: each part's headers, then its bytes to its file."""

    def __init__(self, upload: FolderUpload, max_bytes: int) -> None:
        self.upload = upload
        self.max_bytes = max_bytes
        self.parts = 0
        self.header_field = b""
        self.header_value = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.handle: int | None = None  # the open file of the current part
        self.field: bytearray | None = None  # the value of the current plain field
        self.field_name = ""
        self.file_keys: set[tuple[str, ...]] = set()  # each file's _folded path
        self.folders: dict[tuple[str, ...], tuple[str, ...]] = {}  # _folded: as made

    # -- python-multipart callbacks --------------------------------------------------

    def on_part_begin(self) -> None:
        self.parts += 1
        self.headers = []
        self.header_field = self.header_value = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((self.header_field.lower(), self.header_value))
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        disposition = next((v for k, v in self.headers if k == b"content-disposition"), None)
        kind, options = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in options:
            raise BadPartError(f"part {self.parts}: not a form-data part with a name")
        name = _text(options[b"name"], f"part {self.parts}'s field name")
        if name == "files":
            if b"filename" not in options:
                raise BadPartError(f"files part {self.parts}: no file name", hint="send files")
            path = _text(options[b"filename"], f"files part {self.parts}'s file name")
            self._open(path)
        elif name == "run":
            if "run" in self.upload.fields:
                raise BadPartError("run: given twice")
            self.field, self.field_name = bytearray(), name
        else:
            raise BadPartError(
                f"part {self.parts}: unknown field {name[:40]!r}",
                hint="send the folder's files as 'files' parts and optionally 'run'",
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.handle is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise too_large(self.max_bytes)
            view = memoryview(data)[start:end]
            while view:
                view = view[os.write(self.handle, view) :]
        elif self.field is not None:
            self.field += data[start:end]
            if len(self.field) > MAX_FIELD:
                raise BadPartError(f"{self.field_name}: longer than {MAX_FIELD} bytes")

    def on_part_end(self) -> None:
        self.close()
        if self.field is not None:
            self.upload.fields[self.field_name] = _text(bytes(self.field), self.field_name)
            self.field = None

    # -- the folder ------------------------------------------------------------------

    def _open(self, path: str) -> None:
        part = self.parts
        components = check_path(path, part)
        if len(self.upload.files) >= MAX_FILES:
            raise UploadTooLargeError(
                f"files part {part}: more than {MAX_FILES} files in one folder",
                hint="verify a folder this large locally with `ledger verify FOLDER`",
            )
        # compared as a case-insensitive, normalising file system (macOS, Windows)
        # would: two names it takes for one would overwrite or fail there
        key = _folded(components)
        named = f"files part {part} ({path[:80]!r})"
        if key in self.file_keys:
            raise BadPartError(
                f"{named}: the path is given twice (or differs only in case or Unicode form)"
            )
        if key in self.folders:
            raise BadPartError(f"{named}: a file where another part has a folder")
        for depth in range(1, len(components)):
            if key[:depth] in self.file_keys:
                raise BadPartError(
                    f"{named}: {'/'.join(components[:depth])!r} is a file in another part"
                )
        root = self.upload.root
        for depth in range(1, len(components)):
            made = self.folders.get(key[:depth])
            if made is None:
                if len(self.folders) >= MAX_FOLDERS:
                    raise UploadTooLargeError(
                        f"files part {part}: more than {MAX_FOLDERS} folders in one upload"
                    )
                (root.joinpath(*components[:depth])).mkdir()
                self.folders[key[:depth]] = components[:depth]
            elif made != components[:depth]:
                raise BadPartError(
                    f"{named}: folder {'/'.join(components[:depth])!r} differs from another "
                    f"part's {'/'.join(made)!r} only in case or Unicode form"
                )
        target = root.joinpath(*components)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self.handle = os.open(target, flags | getattr(os, "O_BINARY", 0), 0o600)
        self.file_keys.add(key)
        self.upload.files.append("/".join(components))

    def close(self) -> None:
        if self.handle is not None:
            os.close(self.handle)
            self.handle = None


def _folded(components: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(unicodedata.normalize("NFC", c).casefold() for c in components)


def too_large(limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"files: more than the {limit} bytes this API accepts in one upload",
        hint="verify it locally with `ledger verify FOLDER`",
    )


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPartError(f"{what} is not UTF-8") from None


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InputError(
            "body: not multipart/form-data",
            hint="send the folder's files as 'files' parts of a multipart/form-data body",
        )
    return boundary


async def receive_folder(
    chunks: AsyncIterator[bytes], content_type: str | None, root: Path, max_bytes: int
) -> FolderUpload:
    """Writes the body's ``files`` parts under ``root`` (an empty folder); see the module."""
    boundary = boundary_of(content_type)
    upload = FolderUpload(root)
    receiver = _Receiver(upload, max_bytes)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
        if receiver.handle is not None or receiver.field is not None:
            raise InputError("body: the multipart body ends inside a part")
    except MultipartParseError as exc:
        raise InputError(
            f"body: not a well-formed multipart body (after part {receiver.parts}): {exc}"
        ) from None
    except OSError as exc:  # the server's disk, not the client's input
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise UploadTooLargeError(
                f"files part {receiver.parts}: this server has no room left for the upload",
                hint="verify it locally with `ledger verify FOLDER`",
            ) from None
        if exc.errno == errno.ENAMETOOLONG:
            raise BadPartError(f"files part {receiver.parts}: the path is too long") from None
        raise
    finally:
        receiver.close()
    if not upload.files:
        raise InputError("files: no file in the upload", hint="send the folder's files")
    return upload

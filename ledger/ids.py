"""Run ids, digests and relations: one form in memory, one form in text.

In memory a run id or a 32-byte digest (a CID's sha2-256 digest, a tensor
root, a checkpoint root) is ``bytes``; :class:`Digest32` and :class:`RunId`
are ``bytes`` that know their length and print as text. In text (JSON, the
index, the API, messages) it is ``0x`` and lower-case hex: :func:`to_hex`.
Text from outside (an option, a query parameter, a journal entry) becomes
bytes through :meth:`Digest32.parse` or :func:`from_hex`, whose one error,
:class:`~ledger.errors.BadIdError`, names the field and what a valid value
looks like.

:class:`Relation` is how a run derives from a parent (the contract's enum);
:func:`label` is the one way its number becomes a word.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import ClassVar, Self

from ledger.errors import BadIdError, InputError, NotFoundError

__all__ = [
    "MIN_PREFIX",
    "Digest32",
    "Relation",
    "RunId",
    "from_hex",
    "label",
    "resolve_run_id",
    "run_id_prefix",
    "to_hex",
]

MIN_PREFIX = 4
"""Hex digits a run-id prefix must have at least (``0x1a2b``)."""

_HEX = frozenset("0123456789abcdefABCDEF")


def to_hex(value: bytes) -> str:
    """``0x`` and the lower-case hex of ``value``: how ids and digests are written.

    ``bytes.hex`` itself, whatever a subclass (web3's ``HexBytes``) makes of ``hex()``.
    """
    return "0x" + bytes.hex(value)


def from_hex(text: str, *, field: str, size: int | None = 32, kind: str = "value") -> bytes:
    """The bytes of ``0x``-prefixed (or bare) hex ``text``, of ``size`` bytes
    unless ``size`` is None; surrounding blanks are ignored.

    Raises :class:`~ledger.errors.BadIdError` naming ``field`` otherwise.
    """
    raw = text.strip()
    if raw[:2] in ("0x", "0X"):
        raw = raw[2:]
    if (size is None or len(raw) == 2 * size) and len(raw) % 2 == 0 and _HEX.issuperset(raw):
        return bytes.fromhex(raw)
    if size is None:
        raise BadIdError(f"{field}: {text!r} is not hex", field=field, hint="e.g. 0x12ab...")
    raise BadIdError(
        f"{field}: {text!r} is not {size} bytes of hex",
        field=field,
        hint=f"a {kind} is 0x and {2 * size} hex digits, e.g. 0x12ab...",
    )


class Digest32(bytes):
    """32 bytes: a sha2-256 digest, a tensor root, a checkpoint root.

    Equal to (and hashed as) the same plain ``bytes``; ``str()`` gives the
    ``0x`` hex, as does :attr:`hex0x`.
    """

    __slots__ = ()
    kind: ClassVar[str] = "digest"

    def __new__(cls, value: bytes | bytearray | memoryview) -> Self:
        if len(value) != 32:
            raise BadIdError(f"a {cls.kind} has 32 bytes, not {len(value)}", field=cls.kind)
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, value: str | bytes, *, field: str) -> Self:
        """``value`` (``0x`` and 64 hex digits, any case; or 32 bytes) as this type.

        The one parser of full ids given from outside; a run id given as a
        shorter prefix is resolved by :func:`resolve_run_id` against the known ids.
        """
        if isinstance(value, bytes):
            if len(value) != 32:
                raise BadIdError(
                    f"{field}: {len(value)} bytes given; a {cls.kind} has 32",
                    field=field,
                )
            return cls(value)
        return cls(from_hex(value, field=field, kind=cls.kind))

    @property
    def hex0x(self) -> str:
        return to_hex(self)

    def __str__(self) -> str:
        return to_hex(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({to_hex(self)!r})"


class RunId(Digest32):
    """A run id: ``keccak256(abi.encode(committer, manifestDigest))``."""

    __slots__ = ()
    kind: ClassVar[str] = "run id"


def run_id_prefix(text: str, *, field: str) -> str | None:
    """The lower-case hex digits of ``text`` when it is a run-id prefix (``0x`` and
    at least :data:`MIN_PREFIX` hex digits, fewer than 64); None for a full run id.

    Raises :class:`~ledger.errors.BadIdError` naming ``field`` for anything else.
    """
    raw = text.strip()
    digits = raw[2:] if raw[:2] in ("0x", "0X") else raw
    if len(digits) == 64 and _HEX.issuperset(digits):
        return None
    if MIN_PREFIX <= len(digits) < 64 and _HEX.issuperset(digits):
        return digits.lower()
    raise BadIdError(
        f"{field}: {text!r} is neither a run id nor a prefix of one",
        field=field,
        hint=f"a run id is 0x and 64 hex digits; a unique prefix of {MIN_PREFIX} or more "
        "hex digits will do, e.g. 0x1a2b3c",
    )


def resolve_run_id(text: str, known: Iterable[bytes], *, field: str) -> RunId:
    """The run id ``text`` names: itself when it is a full id, else the one id of
    ``known`` it is a prefix of.

    Raises :class:`~ledger.errors.BadIdError` for text that is no id nor prefix,
    :class:`~ledger.errors.NotFoundError` when no known id has the prefix, and
    :class:`~ledger.errors.InputError` naming the candidates when several do.
    """
    prefix = run_id_prefix(text, field=field)
    if prefix is None:
        return RunId.parse(text, field=field)
    matches = sorted({bytes(k) for k in known if bytes.hex(k).startswith(prefix)})
    if not matches:
        raise NotFoundError(
            f"{field}: no run id starts with 0x{prefix}",
            hint="`ledger runs` lists the recorded runs",
        )
    if len(matches) > 1:
        shown = ", ".join(to_hex(m) for m in matches[:10])
        more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        raise InputError(
            f"{field}: 0x{prefix} is the prefix of {len(matches)} run ids: {shown}{more}",
            hint="give more hex digits",
        )
    return RunId(matches[0])


class Relation(enum.IntEnum):
    """How a run derives from a parent; values match the contract's enum."""

    NONE = 0
    FINE_TUNE = 1
    DISTILLATION = 2
    PRUNING = 3
    QUANTIZATION = 4
    RESUME = 5
    SWEEP_TRIAL = 6
    OTHER = 7

    @property
    def label(self) -> str:
        """``fine-tune``, ``sweep-trial``...: the relation as ledger writes it."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str | Relation) -> Relation:
        """A relation by its label (``fine-tune``, ``FINE_TUNE``...), or as given
        when it is one already; never ``none``.

        Raises :class:`~ledger.errors.InputError` (a ``ValueError``) naming the
        labels that exist.
        """
        if isinstance(text, Relation):
            return text
        key = text.strip().upper().replace("-", "_")
        if key in cls.__members__ and key != "NONE":
            return cls[key]
        names = ", ".join(m.label for m in cls if m is not cls.NONE)
        raise InputError(f"unknown relation {text!r}; use one of: {names}")


def label(code: int) -> str:
    """The label of the contract's relation number; ``relation-<n>`` for a number
    this version of ledger does not know (a newer contract's)."""
    try:
        return Relation(code).label
    except ValueError:
        return f"relation-{code}"

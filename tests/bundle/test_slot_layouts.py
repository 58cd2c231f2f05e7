"""A bundle's run slot is read in the layout its proven start agrees with, never in
the one a bundle would like: a registry-3 word read as registry 2 (or the reverse)
must not turn a revoked run into a clean one."""

from __future__ import annotations

from ledger.bundle.check import _Slot
from ledger.chain.records import RunStatus

COMMITTER = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")


def v3_word(status: int, revoked: bool, start: int, last: int) -> bytes:
    return (
        last.to_bytes(5, "big")
        + start.to_bytes(5, "big")
        + bytes([int(revoked), status])
        + COMMITTER
    )


def v2_word(status: int, revoked: bool, started_at: int) -> bytes:
    return bytes(2) + bytes([int(revoked), status]) + started_at.to_bytes(8, "big") + COMMITTER


def test_a_registry_3_slot_is_read_by_its_start_block() -> None:
    slot = _Slot(v3_word(2, True, start=1_234, last=1_300), 1_234, 1_700_000_000)
    assert (slot.layout, slot.status, slot.revoked) == (3, RunStatus.FINALIZED, True)
    assert slot.committer.lower() == "0x" + COMMITTER.hex()


def test_a_registry_2_slot_is_read_by_its_start_time() -> None:
    slot = _Slot(v2_word(3, True, 1_700_000_000), 1_234, 1_700_000_000)
    assert (slot.layout, slot.status, slot.revoked) == (2, RunStatus.FAILED, True)


def test_a_slot_that_agrees_with_neither_start_is_no_run() -> None:
    # the start block or time of another run (a bundle pairing a slot with the wrong event)
    for slot in (
        _Slot(v3_word(2, True, start=1_234, last=1_300), 1_235, 1_700_000_000),
        _Slot(v2_word(2, True, 1_700_000_000), 1_234, 1_700_000_001),
        _Slot(v3_word(2, True, start=1_234, last=1_300), 1_235, None),
    ):
        assert (slot.layout, slot.status, slot.revoked) == (0, RunStatus.NONE, False)

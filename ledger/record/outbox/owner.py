"""Which process a run belongs to, and whether that process is gone.

A run's start entry records its training process (:func:`this_process`): the
host name, the boot id (Linux), the pid and the process's start time. A run
with no finalize and no fail entry whose process is gone was killed (SIGKILL,
out of memory, a lost machine): ``ledger status`` shows it as abandoned and
``ledger sync --abandoned`` records it as failed. A pid alone is not enough:
pids are reused, so the start time (and the boot id across reboots) must match.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None elsewhere
    or when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its end
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def this_process() -> dict[str, Any]:
    """The identity of the calling process, as a start entry records it."""
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "started": _start_time(pid),
    }


def gone(owner: dict[str, Any]) -> bool | None:
    """True when the recorded process has certainly ended, False while it (or a
    process that cannot be told from it) runs, None when this machine cannot
    tell (the run was started on another host)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
        return None
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return True  # the machine rebooted since
    if pid == os.getpid():
        return False
    if Path("/proc").is_dir() and owner.get("started") is not None:
        return bool(_start_time(pid) != owner["started"])  # gone, or the pid reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, another user's
    return False


__all__ = ["gone", "this_process"]

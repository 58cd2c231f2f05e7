"""One distributed job, one run: rank 0 records, the other ranks follow.

Under ``torch.distributed`` (DDP) every rank runs the same training loop and so
enters the same :class:`~ledger.training.hook.LedgerRun`. Only rank 0 writes files and
sends transactions; a method marked :func:`rank_zero` runs its body on rank 0
and hands its result to the other ranks with one ``broadcast_object_list``, so
every rank sees the same run id and the same commits and no rank other than 0
talks to the chain or the store. Since it is a collective, every rank must call
the marked methods, in the same order, as they already must call DDP's own
collectives. When rank 0 fails, the other ranks raise too instead of waiting
for a broadcast that never comes.

Outside a process group (or with one process) the methods simply run.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from ledger.errors import RecordError

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True)
class Role:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_role() -> Role:
    """The role from the default process group, or a single process when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Role(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
    return Role()


def rank_zero(
    keep: Callable[[Any, Any], None] | None = None,
) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Run the method on rank 0 only and give every rank its result.

    ``keep(self, result)`` lets the other ranks store what rank 0 stored while it
    ran the body (e.g. the final commit), so that later calls behave alike.
    The role is detected on first use and cached on the instance as ``_role``.
    """

    def wrap(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def run(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
            role: Role | None = getattr(self, "_role", None)
            if role is None:
                role = detect_role()
                self._role = role  # type: ignore[attr-defined]
            if not role.distributed:
                return method(self, *args, **kwargs)
            if role.leader:
                return _lead(method, self, args, kwargs)
            result: R = _follow(method.__name__)
            if keep is not None:
                keep(self, result)
            return result

        return run  # type: ignore[return-value]  # functools' _Wrapped names `self`

    return wrap


def _lead(method: Callable[..., R], self: Any, args: Any, kwargs: Any) -> R:
    import torch.distributed as dist

    box: list[Any] = [("error", f"{method.__name__} was interrupted on rank 0")]
    try:
        result = method(self, *args, **kwargs)
        box = [("ok", result)]
    finally:
        error = sys.exc_info()[1]
        if error is not None:
            box = [("error", f"{type(error).__name__}: {error}")]
        dist.broadcast_object_list(box, src=0)
    return result


def _follow(name: str) -> Any:
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind != "ok":
        raise RecordError(
            f"rank 0 could not record the run ({name}): {value}",
            hint="rank 0 records for the whole job; its log says more",
        )
    return value

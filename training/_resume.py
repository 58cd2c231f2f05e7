"""What a replayable run commits with each checkpoint, and replay mode's orders.

A *resume file* (``torch.save``, loaded back with ``weights_only=True``: a
replayer loads files a committer wrote, so nothing in it may run code) holds
everything a resume needs: the model's, the optimizer's and the scheduler's
state, the random number generators' states (Python, NumPy, torch, CUDA when
present) and the position in training (the epoch just ended). The worker stores
it next to the weights and binds its CID in the checkpoint's metrics document
(``resume.cid``), with the digests of the data order each epoch reported
(``resume.data_order``).

``ledger replay`` (:mod:`ledger.replay`) runs the training command with
``LEDGER_REPLAY`` naming a JSON *replay order* (:class:`ledger.replay.ReplayOrder`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ledger.errors import InputError

RESUME_FORMAT = "ledger.resume/v1"


def order_digest(indices: Iterable[int] | torch.Tensor) -> str:
    """sha256 of the indices as little-endian int64: one epoch's data order."""
    if isinstance(indices, torch.Tensor):
        flat = indices.detach().cpu().reshape(-1).to(torch.int64)
    else:
        flat = torch.tensor([int(i) for i in indices], dtype=torch.int64)
    return hashlib.sha256(flat.numpy().astype("<i8").tobytes()).hexdigest()


def rng_states() -> dict[str, Any]:
    """The generators' states, as plain values (``weights_only`` loads them)."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:  # NumPy is optional
        pass
    else:
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        keys = np.asarray(keys, dtype=np.int64)
        states["numpy"] = [name, torch.from_numpy(keys), pos, has_gauss, cached]
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_resume(
    path: Path,
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": RESUME_FORMAT,
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_states(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written resume file under the real name


def load_resume(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
) -> int:
    """Restore a resume file into the model, optimizer, scheduler and RNGs;
    returns the epoch it was written after."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(f"resume file {path} does not exist") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise InputError(
            f"resume file {path} is not a ledger resume file ({type(exc).__name__})",
            hint="resume from a file a replayable LedgerRun wrote (step-NNNNNN.resume.pt)",
        ) from exc
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise InputError(f"resume file {path} is not a {RESUME_FORMAT} file")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
    return int(state["epoch"])

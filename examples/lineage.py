"""Models derived from the price-forecast model, each recorded with its parent.

Five derivations of a trained :mod:`examples.price_forecast` model,
each a run of its own whose manifest and ``RunStarted`` event name the parent
run and the relation:

* :func:`prune` — global magnitude (L1) pruning of every linear weight with
  ``torch.nn.utils.prune``, then ``prune.remove`` so the state dict is plain
  (the zeros are in ``weight``; no ``weight_orig``/``weight_mask``);
* :func:`quantize` — dynamic int8 quantization with
  ``torch.ao.quantization.quantize_dynamic``. A quantized state dict holds
  packed parameters (a ``torch.dtype`` and a tuple under ``_packed_params``)
  that are not tensors and so have no tensor root. The run therefore commits an
  explicit plain form (:func:`quantized_state_dict`): per linear layer
  ``weight_int8`` (the int8 values), ``weight_scale`` and ``weight_zero_point``
  (per tensor, or per output channel with ``weight_axis``) and the float
  ``bias``. :func:`load_quantized` rebuilds the identical quantized model;
* :func:`distill` — a smaller student trained on the teacher's predictions
  (half the loss) and the targets (the other half);
* :func:`fine_tune` — the parent's weights trained further on a later slice of
  the series (the minutes after the parent's), normalised as the parent was;
* :func:`resume` — training continued from one of the parent's checkpoint
  files as a new run (relation ``resume``).

Run: ``python -m examples.lineage --out lineage-out`` (needs a chain:
``ledger chain up && ledger deploy``), then ``ledger lineage RUN``.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from examples.price_forecast import Config, PriceMLP, price_series, train, windows
from ledger.config import Settings
from ledger.training.hook import LedgerRun


@dataclass(frozen=True)
class Parent:
    """A recorded model to derive from: its run id, weights file and config."""

    run_id: str
    weights: Path
    cfg: Config


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def train_base(cfg: Config, out: Path, settings: Settings | None = None) -> Parent:
    """Train and record the price-forecast model everything else derives from."""
    run = train(cfg, out, settings)
    return Parent(run.run_id, out, cfg)


def load(parent: Parent) -> PriceMLP:
    """The parent's model with its recorded weights (``weights_only``: no code runs)."""
    model = PriceMLP(parent.cfg.window, parent.cfg.hidden)
    model.load_state_dict(torch.load(parent.weights, weights_only=True))
    return model


def _normaliser(cfg: Config) -> tuple[float, float]:
    """The mean and spread the parent was trained with (its training split)."""
    series = price_series(cfg.minutes, cfg.seed)
    split = int((len(series) - cfg.window) * (1 - cfg.val_fraction))
    head = series[: split + cfg.window]
    return float(head.mean()), float(head.std())


def _split(series: np.ndarray, cfg: Config) -> Split:
    mean, std = _normaliser(cfg)
    x, y = windows(series, cfg.window)
    xt, yt = torch.from_numpy((x - mean) / std), torch.from_numpy((y - mean) / std)
    cut = int(len(xt) * (1 - cfg.val_fraction))
    return Split(xt[:cut], yt[:cut], xt[cut:], yt[cut:])


def _parent_data(cfg: Config) -> tuple[np.ndarray, Split]:
    series = price_series(cfg.minutes, cfg.seed)
    return series, _split(series, cfg)


def _val_loss(model: nn.Module, data: Split) -> float:
    model.eval()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(data.val_x), data.val_y))


def _relation(parent: Parent, relation: str) -> list[tuple[str | bytes, str]]:
    return [(parent.run_id, relation)]


# -- pruning ----------------------------------------------------------------------


def prune(
    parent: Parent, out: Path, settings: Settings | None = None, *, amount: float = 0.5
) -> LedgerRun:
    """Global L1 magnitude pruning of the linear weights, made permanent."""
    model = load(parent)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    torch_prune.global_unstructured(
        layers, pruning_method=torch_prune.L1Unstructured, amount=amount
    )
    for module, name in layers:
        torch_prune.remove(module, name)  # type: ignore[no-untyped-call]  # plain, zeroed
    weights = [m.weight for m, _ in layers]
    zeros = sum(int((w == 0).sum()) for w in weights)
    sparsity = zeros / sum(w.numel() for w in weights)
    series, data = _parent_data(parent.cfg)
    with LedgerRun(
        model,
        name="price-forecast-pruned",
        config={"method": "global-l1-unstructured", "amount": amount, "base": asdict(parent.cfg)},
        out=out,
        data={"series": series},
        seed=parent.cfg.seed,
        parents=_relation(parent, "pruning"),
        settings=settings,
    ) as run:
        run.finish({"val_loss": _val_loss(model, data), "sparsity": sparsity})
    return run


# -- quantization -----------------------------------------------------------------


def _dynamic_linear() -> type[nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # torch.ao.quantization warns it will move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear}, dtype=torch.qint8
        )
    return quantized


def quantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A dynamically quantized model as plain tensors (see the module docstring)."""
    dynamic_linear = _dynamic_linear()
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, dynamic_linear):
            module = cast(Any, module)  # packed-params accessors are untyped
            weight = module.weight()
            state[prefix + "weight_int8"] = weight.int_repr().contiguous()
            if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                state[prefix + "weight_scale"] = torch.tensor([weight.q_scale()]).double()
                state[prefix + "weight_zero_point"] = torch.tensor([weight.q_zero_point()])
            else:
                state[prefix + "weight_scale"] = weight.q_per_channel_scales().double()
                state[prefix + "weight_zero_point"] = weight.q_per_channel_zero_points().long()
                state[prefix + "weight_axis"] = torch.tensor([weight.q_per_channel_axis()])
            bias = module.bias()
            if bias is not None:
                state[prefix + "bias"] = bias.detach().clone()
        else:
            for key, value in module.named_parameters(recurse=False):
                state[prefix + key] = value.detach().clone()
    return state


def load_quantized(state: dict[str, torch.Tensor], cfg: Config) -> nn.Module:
    """Rebuild the quantized model from :func:`quantized_state_dict`'s plain tensors."""
    model = _quantize_dynamic(PriceMLP(cfg.window, cfg.hidden).eval())
    dynamic_linear = _dynamic_linear()
    for name, module in model.named_modules():
        if not isinstance(module, dynamic_linear):
            continue
        prefix = f"{name}." if name else ""
        module = cast(Any, module)
        values = state[prefix + "weight_int8"]
        scale, zero = state[prefix + "weight_scale"], state[prefix + "weight_zero_point"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if prefix + "weight_axis" in state:
                axis = int(state[prefix + "weight_axis"][0])
                shape = [-1 if d == axis else 1 for d in range(values.dim())]
                real = (values.double() - zero.view(shape)) * scale.view(shape)
                weight = torch.quantize_per_channel(real.float(), scale, zero, axis, torch.qint8)
            else:
                s, z = float(scale[0]), int(zero[0])
                weight = torch.quantize_per_tensor(
                    ((values.double() - z) * s).float(), s, z, torch.qint8
                )
        module.set_weight_bias(weight, state.get(prefix + "bias"))
    return model


def quantize(parent: Parent, out: Path, settings: Settings | None = None) -> LedgerRun:
    """Dynamic int8 quantization of the linear layers; commits the plain int8 form."""
    model = load(parent).eval()
    quantized = _quantize_dynamic(model)
    state = quantized_state_dict(quantized)
    series, data = _parent_data(parent.cfg)
    int8_bytes = sum(t.numel() for k, t in state.items() if k.endswith("weight_int8"))
    with LedgerRun(
        quantized,
        name="price-forecast-int8",
        config={
            "method": "dynamic-int8",
            "layers": "Linear",
            "format": "int8 values, scale, zero point and float bias per layer",
            "base": asdict(parent.cfg),
        },
        out=out,
        data={"series": series},
        seed=parent.cfg.seed,
        parents=_relation(parent, "quantization"),
        settings=settings,
    ) as run:
        run.finish({"val_loss": _val_loss(quantized, data), "int8_bytes": int8_bytes}, state)
    return run


# -- distillation -----------------------------------------------------------------


def distill(
    parent: Parent,
    out: Path,
    settings: Settings | None = None,
    *,
    hidden: tuple[int, int] = (32, 16),
    epochs: int = 4,
    alpha: float = 0.5,
) -> LedgerRun:
    """Train a smaller student on the teacher's predictions and the targets."""
    teacher = load(parent).eval()
    cfg = parent.cfg
    series, data = _parent_data(cfg)
    with torch.no_grad():
        soft = teacher(data.train_x)
    torch.manual_seed(cfg.seed + 1)
    student = PriceMLP(cfg.window, hidden)
    optimiser = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    config = {"student_hidden": list(hidden), "epochs": epochs, "alpha": alpha, "lr": cfg.lr}
    with LedgerRun(
        student,
        name="price-forecast-student",
        config={**config, "teacher": asdict(cfg)},
        out=out,
        data={"series": series},
        seed=cfg.seed + 1,
        parents=_relation(parent, "distillation"),
        settings=settings,
        optimizer=optimiser,  # replayable: see examples/price_forecast.py
    ) as run:
        for epoch in run.epochs(epochs):
            student.train()
            order = torch.tensor(run.permutation(epoch, len(data.train_x)))
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                optimiser.zero_grad()
                pred = student(data.train_x[idx])
                loss = alpha * nn.functional.mse_loss(pred, soft[idx]) + (
                    1 - alpha
                ) * nn.functional.mse_loss(pred, data.train_y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
            run.epoch_end(epoch, {"epoch": epoch, "val_loss": _val_loss(student, data)})
        parameters = sum(p.numel() for p in student.parameters())
        run.finish({"val_loss": _val_loss(student, data), "parameters": parameters})
    return run


# -- fine-tuning ------------------------------------------------------------------


def fine_tune(
    parent: Parent,
    out: Path,
    settings: Settings | None = None,
    *,
    minutes: int | None = None,
    epochs: int = 3,
    lr: float = 3e-4,
) -> LedgerRun:
    """Train the parent further on the ``minutes`` after the parent's series."""
    cfg = parent.cfg
    later_minutes = minutes or cfg.minutes
    # the same seeded walk, longer: its first cfg.minutes are the parent's series
    series = price_series(cfg.minutes + later_minutes, cfg.seed)[cfg.minutes - cfg.window :]
    data = _split(series, cfg)
    model = load(parent)
    before = _val_loss(model, data)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    with LedgerRun(
        model,
        name="price-forecast-finetuned",
        config={
            "epochs": epochs,
            "lr": lr,
            "slice": {"from_minute": cfg.minutes, "minutes": later_minutes},
            "base": asdict(cfg),
        },
        out=out,
        data={"series": series},
        seed=cfg.seed + 2,
        parents=_relation(parent, "fine-tune"),
        settings=settings,
        optimizer=optimiser,  # replayable: see examples/price_forecast.py
    ) as run:
        for epoch in run.epochs(epochs):
            model.train()
            order = torch.tensor(run.permutation(epoch, len(data.train_x)))
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                optimiser.zero_grad()
                nn.functional.mse_loss(model(data.train_x[idx]), data.train_y[idx]).backward()  # type: ignore[no-untyped-call]
                optimiser.step()
            run.epoch_end(epoch, {"epoch": epoch, "val_loss": _val_loss(model, data)})
        run.finish({"val_loss": _val_loss(model, data), "val_loss_before": before})
    return run


# -- resuming ---------------------------------------------------------------------


def resume(
    parent: Parent,
    checkpoint: Path,
    out: Path,
    settings: Settings | None = None,
    *,
    epochs: int = 2,
) -> LedgerRun:
    """Continue training from one of the parent's checkpoint files, as a new run.

    The checkpoint holds weights only (no optimiser state), so Adam restarts;
    epochs are numbered on from the checkpoint's step.
    """
    cfg = parent.cfg
    step = int(checkpoint.stem.removeprefix("step-"))
    model = PriceMLP(cfg.window, cfg.hidden)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    series, data = _parent_data(cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed + 3)
    with LedgerRun(
        model,
        name="price-forecast-resumed",
        config={"from_step": step, "epochs": epochs, "base": asdict(cfg)},
        out=out,
        data={"series": series, "checkpoint": checkpoint},
        seed=cfg.seed + 3,
        parents=_relation(parent, "resume"),
        settings=settings,
    ) as run:
        for epoch in range(step + 1, step + 1 + epochs):
            model.train()
            order = torch.randperm(len(data.train_x), generator=generator)
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                optimiser.zero_grad()
                nn.functional.mse_loss(model(data.train_x[idx]), data.train_y[idx]).backward()  # type: ignore[no-untyped-call]
                optimiser.step()
            run.epoch_end(epoch, {"epoch": epoch, "val_loss": _val_loss(model, data)})
        run.finish({"val_loss": _val_loss(model, data)})
    return run


def derive_all(
    cfg: Config, out: Path, settings: Settings | None = None, **small: Any
) -> dict[str, LedgerRun | Parent]:
    """The base model and its five derivations, all recorded (``small``: sizes for tests)."""
    out.mkdir(parents=True, exist_ok=True)
    base = train_base(cfg, out / "base.pt", settings)
    epochs = int(small.get("epochs", 3))
    return {
        "base": base,
        "pruned": prune(base, out / "pruned.pt", settings),
        "int8": quantize(base, out / "int8.safetensors", settings),
        "student": distill(base, out / "student.pt", settings, epochs=epochs),
        "finetuned": fine_tune(base, out / "finetuned.pt", settings, epochs=epochs),
        "resumed": resume(
            base,
            _last_checkpoint(out / "base-checkpoints"),
            out / "resumed.pt",
            settings,
            epochs=epochs,
        ),
    }


def _last_checkpoint(folder: Path) -> Path:
    """The last weights checkpoint (not a replayable run's resume files beside them)."""
    return sorted(p for p in folder.glob("step-*.pt") if not p.name.endswith(".resume.pt"))[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("lineage-out"))
    parser.add_argument("--epochs", type=int, default=Config.max_epochs)
    args = parser.parse_args(argv)
    runs = derive_all(replace(Config(), max_epochs=args.epochs), args.out)
    for label, run in runs.items():
        print(f"{label:10s} {run.run_id}")
    print(f"\nnext: ledger lineage {runs['base'].run_id}")


if __name__ == "__main__":
    main()

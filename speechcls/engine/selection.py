"""Which weights a run keeps (issue 27): the selection rules every run tracks and tests (best validation
accuracy, best validation loss, the final weights, an EMA of the weights, the SWA average of the last
epochs), the best-epoch snapshots, and the BatchNorm statistics the averages need recomputed.
engine/fit.py's Trainer holds the averages; this module holds what they are made of."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechcls import dist
from speechcls.config import TrainConfig
from speechcls.engine.setup import Setup
from speechcls.engine.steps import autocast, prep

__all__ = ["RULES", "Snapshots", "bn_statistics", "ema_decay", "recompute_bn", "swa_window"]


RULES = ("acc", "loss", "last", "ema", "swa")  # every selection rule, tracked and tested in every run


def swa_window(cfg: TrainConfig) -> int:
    """Epochs at the end whose weights the swa rule averages: --swa-epochs, else a quarter of the run."""
    return cfg.swa_epochs or max(1, cfg.epochs // 4)


def ema_decay(cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The EMA's decay per step: --ema, else 0.999 (time constant 1,000 steps), shortened to the swa window
    (1 - 1 / its steps) on a run too short for that: 30 FSDD epochs are only ~500 steps, and an average
    longer than the run would keep the first epochs' weights."""
    return cfg.ema or min(0.999, 1 - 1 / max(swa_window(cfg) * steps_per_epoch, 2))


def _copy(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class Snapshots:
    """The weights of the best validation epoch by accuracy and by loss, whichever rule keeps best.pt, so
    every rule is tested at the end; in memory and in last.pt (a resumed run tests the same ones). Each is
    {"epoch", "loss", "acc", "model"} or None before the first epoch."""

    acc: dict | None = None
    loss: dict | None = None

    def update(self, row: dict, module: torch.nn.Module) -> None:
        epoch, loss, acc = row["epoch"], row["loss"], row["acc"]
        if self.acc is None or acc > self.acc["acc"] or (acc == self.acc["acc"] and loss < self.acc["loss"]):
            self.acc = {"epoch": epoch, "loss": loss, "acc": acc, "model": _copy(module)}
        if self.loss is None or loss < self.loss["loss"]:
            self.loss = {"epoch": epoch, "loss": loss, "acc": acc, "model": _copy(module)}


@torch.no_grad()
def recompute_bn(s: Setup, model: torch.nn.Module) -> None:
    """`model`'s BatchNorm running statistics, recomputed as the exact mean and (unbiased) variance of
    each layer's input over the whole training split, through the plain pipeline validation uses (no
    augmentation): bn_statistics over the training loader, its pipeline swapped for validation's.
    (torch's update_bn takes a loader of inputs and averages per-batch statistics; ours yields (x, y).)"""
    loader = s.loaders["train"]
    saved = loader.pipeline
    loader.pipeline = s.loaders["validation"].pipeline  # the plain one: no augmentation
    loader.set_epoch(0)

    def forward(m, x):
        with autocast(s.cfg, s.device):
            m(prep(x, s.cfg))

    def batches():
        for x, _ in loader:
            yield lambda m, x=x: forward(m, x)

    try:
        bn_statistics(model, batches(), lambda t: dist.all_reduce_sum(s.rank, t))
    finally:
        loader.pipeline = saved


@torch.no_grad()
def bn_statistics(model: torch.nn.Module, calls, all_reduce=lambda t: t) -> None:
    """Set every BatchNorm layer's running statistics of `model` to the exact per-channel mean and unbiased
    variance of its inputs over every forward of `calls` (each a function of the model that runs it on
    one batch). Only the BatchNorm layers are in training mode (normalizing by their batch, as in torch's
    update_bn); dropout is off, so no RNG is drawn and the inputs are those an eval forward makes.
    BC-ResNet's SubSpectralNorm over bands of uneven width calls F.batch_norm per band on slices of its
    BatchNorm2d's buffers (no module call to hook): its input is recorded per band, channel c's band k at
    c * sub_bands + k, the layout of those buffers. `all_reduce` sums the per-rank sums under torchrun, so
    every rank ends with the same statistics. A layer no batch reached keeps its statistics."""
    from speechcls.models.bcresnet import SubSpectralNorm

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    sums: dict[torch.nn.Module, torch.Tensor] = {}

    def moments(x: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (3, C): count, sum, sum of squares
        x = x.detach().double()
        dims = [0, *range(2, x.dim())]
        return torch.stack([torch.full_like(x.sum(dims), x.numel() / x.shape[1]), x.sum(dims), (x * x).sum(dims)])

    def add(bn, got):
        sums[bn] = sums[bn] + got if bn in sums else got

    def record(module, args):
        add(module, moments(args[0]))

    def record_bands(module, args):  # SubSpectralNorm: only where it does not call its BatchNorm2d
        x, sub = args[0], module.sub_bands
        if x.shape[2] % sub:
            bands = torch.stack([moments(band) for band in x.tensor_split(sub, dim=2)], dim=-1)  # (3, C, sub)
            add(module.bn, bands.reshape(3, -1))

    hooks = [m.register_forward_pre_hook(record) for m in bns]
    hooks += [m.register_forward_pre_hook(record_bands) for m in model.modules() if isinstance(m, SubSpectralNorm)]
    was = model.training
    model.eval()
    for m in model.modules():  # SubSpectralNorm's uneven path asks its own mode, not its BatchNorm2d's
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, SubSpectralNorm)):
            m.train()
    try:
        for call in calls:
            call(model)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    for m in bns:
        if m not in sums:
            continue
        n, total, squares = all_reduce(sums[m]).unbind()  # (C,) each
        mean = total / n
        var = (squares - n * mean * mean) / (n - 1).clamp(min=1)
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.clamp(min=0).to(m.running_var.dtype))

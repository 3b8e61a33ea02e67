"""The learning-rate range test (`speechcls lr-find`): the LR grows exponentially from start_lr to
end_lr, one step a batch; the loss is smoothed (exponential average, bias-corrected); the sweep stops
when the smoothed loss passes `diverge` times its minimum. Suggests a max LR a tenth of the LR at the
minimum. Writes lr_find.csv; the figure is report/plots.py's (`speechcls plot lr`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from speechcls import dist
from speechcls.config import TrainConfig
from speechcls.engine.fit import build
from speechcls.engine.run_dir import RunDir
from speechcls.engine.steps import train_step


class SmoothedLoss:
    """The LR finder's running loss: an exponential average, bias-corrected. Call with each loss in
    order; returns the smoothed value so far (lr_find and `speechcls plot lr` share it)."""

    def __init__(self, beta: float = 0.98):
        self.beta, self.avg, self.n = beta, 0.0, 0

    def __call__(self, value: float) -> float:
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        return self.avg / (1 - self.beta**self.n)


def suggest_max_lr(lrs, smooth) -> tuple[float, float]:
    """(suggested max LR, LR at the lowest smoothed loss): the suggestion is a tenth of the latter."""
    i = int(np.argmin(smooth))
    return lrs[i] / 10, lrs[i]


def lr_find(
    cfg: TrainConfig, out: Path, variant: str | None = None, start_lr: float = 1e-7, end_lr: float = 1.0,
    steps: int = 100, beta: float = 0.98, diverge: float = 4.0,
) -> dict:  # fmt: skip
    """The sweep on the training split; writes out/lr_find.csv and returns the LRs, losses, smoothed
    losses and the suggestion."""
    if dist.from_env().distributed:
        raise ValueError("lr-find is a short sweep for one process: run it without torchrun")
    s = build(cfg, variant, splits=("train",))
    model, device, loader = s.model, s.device, s.loaders["train"]
    optimizer = torch.optim.Adam(model.parameters(), lr=start_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=s.cfg.precision == "fp16")
    model.train()
    lrs, losses, smooth = [], [], []
    smoother = SmoothedLoss(beta)
    best, step, epoch = math.inf, 0, 0
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            lr = start_lr * (end_lr / start_lr) ** (step / (steps - 1))
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss, _ = train_step(model, optimizer, None, scaler, s.cfg, device, x, y)
            value = loss.item()
            smoothed = smoother(value)
            lrs.append(lr)
            losses.append(value)
            smooth.append(smoothed)
            best = min(best, smoothed)
            step += 1
            if step >= steps or not math.isfinite(smoothed) or smoothed > diverge * best:
                step = steps
                break
        epoch += 1
    RunDir(out).write_lr_find(lrs, losses)
    suggestion, at_min = suggest_max_lr(lrs, smooth)
    return {"lr": lrs, "loss": losses, "smoothed": smooth, "suggested_max_lr": suggestion, "min_loss_lr": at_min}

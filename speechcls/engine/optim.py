"""The optimizer, the LR schedule (stepped per batch) and early stopping of a training run: what
engine/fit.py's loop asks of a TrainConfig."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from speechcls.config import TrainConfig

__all__ = ["EarlyStopping", "make_optimizer", "make_schedule"]


@dataclass
class EarlyStopping:
    """The best epoch by validation loss (the chapter's), accuracy (`best_by="acc"`) or the latest
    (`best_by="last"`: the final weights are kept), and the stop
    after `patience` epochs without a better one, not counting before `min_epochs` (never when not
    `enabled`: the kws recipes run their whole schedule)."""

    patience: int
    min_epochs: int = 0
    best_by: str = "loss"
    enabled: bool = True
    best_loss: float = math.inf
    best_acc: float = -math.inf
    bad: int = 0
    best_epoch: int = 0

    def update(self, loss: float, epoch: int, acc: float | None = None) -> bool:
        """Record an epoch's validation loss (and accuracy); True when it is the best so far (ties in
        accuracy go to the lower loss)."""
        if self.best_by in ("last", "ema", "swa"):  # kept at the end: every epoch replaces the one before
            better = True
        elif self.best_by == "acc":
            better = acc > self.best_acc or (acc == self.best_acc and loss < self.best_loss)
        else:
            better = loss < self.best_loss
        if better:
            self.best_loss, self.bad, self.best_epoch = loss, 0, epoch
            self.best_acc = acc if acc is not None else -math.inf
            return True
        self.bad += 1
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.enabled and self.bad >= self.patience and epoch >= self.min_epochs

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> "EarlyStopping":
        return cls(cfg.patience, cfg.min_epochs, cfg.best_by, cfg.early_stopping)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam (the chapter's: no weight decay), AdamW, or SGD with momentum 0.9 (BC-ResNet's). The LR is
    set by the schedule at every step."""
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.max_lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.max_lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.max_lr, weight_decay=cfg.weight_decay)


def make_schedule(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """Stepped per batch. onecycle: the chapter's (torch's OneCycleLR to max_lr over all epochs).
    cosine: linear warm-up from 0 over warmup_epochs, then half a cosine from max_lr to 0 at the last step
    (BC-ResNet's main.py)."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.max_lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch
        )
    total = cfg.epochs * steps_per_epoch
    warm = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:  # the LR of step `step` (from 0) over max_lr
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] = cfg.max_lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

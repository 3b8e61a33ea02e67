"""One optimizer step and one evaluation pass: shared by fit, lr-find, evaluate and the training
benchmark, so what is measured is what trains."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from speechcls import dist
from speechcls.config import TrainConfig


def autocast(cfg: TrainConfig, device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def prep(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def train_step(
    model, optimizer, scheduler, scaler, cfg: TrainConfig, device: torch.device, x, y, weight: float = 1.0, mix=None
):
    """One optimizer step on a batch: autocast forward, (scaled) backward, step, LR schedule step.
    `weight` multiplies the loss before backward (a rank's share of the global batch x world, so DDP's
    gradient average is the global mean). `mix` = (y_b, lam) for a mixup batch: the loss is
    lam * CE(y) + (1 - lam) * CE(y_b). Label smoothing as cfg.label_smoothing. Returns the detached
    mean loss and the logits."""
    smoothing = getattr(cfg, "label_smoothing", 0.0)
    with autocast(cfg, device):
        logits = model(prep(x, cfg))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        if mix is not None:
            y_b, lam = mix
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits.float(), y_b, label_smoothing=smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss * weight if weight != 1.0 else loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits


@torch.no_grad()
def evaluate_model(model, loader, cfg: TrainConfig, device: torch.device) -> dict:
    """Loss, accuracy and the confusion matrix (rows = true class) over a whole split (the ranks'
    shards all-reduced under torchrun)."""
    model.eval()
    k = len(loader.classes)
    confusion = torch.zeros(k, k, dtype=torch.int64, device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
    n = 0
    for x, y in loader:
        with autocast(cfg, device):
            logits = model(prep(x, cfg))
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum")
        n += len(y)
        confusion += torch.bincount(y * k + logits.argmax(1), minlength=k * k).view(k, k)
    if loader.rank.distributed:
        dist.all_reduce_sum(loader.rank, confusion)
        dist.all_reduce_sum(loader.rank, total_loss)
        n = int(confusion.sum())
    confusion = confusion.cpu().numpy()
    return {"loss": total_loss.item() / n, "acc": float(np.trace(confusion) / n), "confusion": confusion, "n": n}


def per_class(confusion: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """Accuracy of each true class (None: the split holds no clip of it)."""
    totals = confusion.sum(1)
    return {c: float(confusion[i, i] / totals[i]) if totals[i] else None for i, c in enumerate(classes)}


def most_confused(confusion: np.ndarray, classes: list[str], top: int = 10) -> list[tuple[str, str, int]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = [(classes[i], classes[j], int(off[i, j])) for i, j in zip(*np.nonzero(off))]
    return sorted(pairs, key=lambda p: -p[2])[:top]

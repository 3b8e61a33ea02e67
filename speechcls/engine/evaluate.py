"""`speechcls evaluate`: a checkpoint on a split of its store (or another store with the same classes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from speechcls.config import TrainConfig
from speechcls.engine.checkpoint import load_model
from speechcls.engine.setup import eval_loader
from speechcls.engine.steps import evaluate_model, most_confused, per_class
from speechcls.runtime import resolve_device


def evaluate(run: Path, split: str = "test", store: str | None = None, device: str = "auto") -> dict:
    """Loss, accuracy, per-class accuracy, confusion and the most-confused pairs of a checkpoint."""
    dev = torch.device(resolve_device(device))
    model, ckpt = load_model(run, dev)
    loader = eval_loader(ckpt, split, dev, store)
    cfg = replace(TrainConfig(**ckpt["config"]), device=str(dev))
    r = evaluate_model(model, loader, cfg, dev)
    return {
        "split": split, "loss": r["loss"], "acc": r["acc"], "n": r["n"], "classes": loader.classes,
        "per_class_acc": per_class(r["confusion"], loader.classes), "confusion": r["confusion"],
        "most_confused": most_confused(r["confusion"], loader.classes),
    }  # fmt: skip

"""Recipes, optimizers, schedules and the best-checkpoint rule (issue 13): resolved values, user overrides,
the cosine schedule against its formula, early stopping by accuracy."""

from __future__ import annotations

import math

import pytest
import torch

from speechcls.config import TrainConfig
from speechcls.engine.optim import EarlyStopping, make_optimizer, make_schedule
from speechcls.engine.recipes import kws_recipe, resolve


def test_chapter_recipe_is_the_defaults():
    assert resolve("chapter", {}) == TrainConfig()
    cfg = TrainConfig()
    assert (cfg.model, cfg.optimizer, cfg.schedule, cfg.max_lr, cfg.batch_size, cfg.epochs, cfg.patience) == (
        "seed", "adam", "onecycle", 1e-2, 128, 50, 3,
    )  # fmt: skip
    assert cfg.early_stopping and cfg.best_by == "loss" and not cfg.log and not cfg.normalize
    assert (cfg.shift_ms, cfg.noise_prob, cfg.freq_masks, cfg.time_masks, cfg.mixup) == (0, 0, 0, 0, 0)


def test_kws_recipe_of_bcresnet_is_the_published_one():
    cfg = resolve("kws", {"model": "bcresnet-8"})
    # Qualcomm-AI-research/bcresnet main.py / utils.py
    assert (cfg.optimizer, cfg.max_lr, cfg.weight_decay, cfg.warmup_epochs, cfg.epochs, cfg.batch_size) == (
        "sgd", 0.1, 1e-3, 5.0, 200, 100,
    )  # fmt: skip
    assert (cfg.features, cfg.n_mels, cfg.log, cfg.schedule) == ("mel", 40, True, "cosine")
    assert (cfg.shift_ms, cfg.noise_prob, cfg.noise_volume) == (100.0, 0.8, 0.1)
    assert (cfg.freq_masks, cfg.freq_width, cfg.time_masks, cfg.time_width) == (2, 7, 2, 20)
    assert not cfg.early_stopping and cfg.best_by == "last"  # issue 27: the measured best rule on BC-ResNet
    assert resolve("kws", {"model": "matchboxnet-3x1x64"}).best_by == "swa"  # ... and on MatchboxNet
    assert resolve("kws", {"model": "bcresnet-1"}).freq_masks == 0  # BC-ResNet-1 has no frequency masks
    assert resolve("kws", {"model": "bcresnet-3"}).freq_width == 5


def test_user_values_win_and_a_short_run_keeps_the_warmup_share():
    cfg = resolve("kws", {"model": "bcresnet-8", "epochs": 10, "max_lr": 0.05, "noise_prob": 0.0, "n_mels": 64})
    assert (cfg.epochs, cfg.max_lr, cfg.noise_prob, cfg.n_mels) == (10, 0.05, 0.0, 64)
    assert cfg.warmup_epochs == pytest.approx(5 * 10 / 200)  # 5 of 200 epochs -> 0.25 of 10
    assert resolve("kws", {"model": "bcresnet-8", "epochs": 10, "warmup_epochs": 1.0}).warmup_epochs == 1.0
    assert resolve("kws", {"model": "matchboxnet-3x1x64"}).n_mels == 64
    assert resolve("kws", {}).n_mels >= 78  # the seed CNN's convolutions need 78 bins


def test_bad_settings_are_refused_naming_them():
    with pytest.raises(ValueError, match="--recipe 'fast'"):
        resolve("fast", {})
    with pytest.raises(ValueError, match="--optimizer 'lamb'"):
        resolve("chapter", {"optimizer": "lamb"})
    with pytest.raises(ValueError, match="--task 'kws35'"):
        resolve("kws", {"task": "kws35"})
    with pytest.raises(ValueError, match="--warmup-epochs 20"):
        resolve("kws", {"epochs": 10, "warmup_epochs": 20.0})
    with pytest.raises(ValueError, match="unknown training settings"):
        resolve("chapter", {"learning_rate": 1.0})
    with pytest.raises(ValueError, match="--best-by last keeps the final weights.*add --no-early-stopping"):
        resolve("chapter", {"best_by": "last"})  # the chapter's early stopping needs a best to count from
    assert resolve("kws", {"best_by": "last"}).best_by == "last"  # kws: no early stopping
    with pytest.raises(ValueError, match="--cmn subtracts each example's mean in log units.*add --log"):
        resolve("chapter", {"cmn": True})
    assert resolve("kws", {"cmn": True}).cmn  # kws: log-mel
    assert set(kws_recipe("seed")) <= set(TrainConfig.__dataclass_fields__)


def test_cosine_schedule_follows_bcresnet_formula():
    """LR of every step against BC-ResNet's main.py formula, written out here."""
    cfg = TrainConfig(schedule="cosine", optimizer="sgd", max_lr=0.1, warmup_epochs=2, epochs=6)
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(cfg, model)
    steps_per_epoch = 5
    sched = make_schedule(cfg, opt, steps_per_epoch)
    total, warm = 30, 10
    got = []
    for _ in range(total):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [
        0.1 * (i + 1) / warm if i < warm else 0.5 * 0.1 * (1 + math.cos(math.pi * (i - warm) / (total - warm)))
        for i in range(total)
    ]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_optimizers():
    model = torch.nn.Linear(2, 2)
    assert type(make_optimizer(TrainConfig(), model)) is torch.optim.Adam
    adamw = make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.01), model)
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.01


def test_best_by_accuracy_and_no_early_stop():
    stop = EarlyStopping(patience=1, best_by="acc", enabled=False)
    assert stop.update(1.0, 1, acc=0.5)
    assert not stop.update(0.5, 2, acc=0.4)  # lower loss, lower accuracy: not the best by accuracy
    assert stop.update(0.9, 3, acc=0.5)  # equal accuracy, lower loss than epoch 1: the better one
    assert not stop.update(0.1, 4, acc=0.45)
    assert stop.best_epoch == 3 and not stop.should_stop(4)
    chapter = EarlyStopping(patience=1)
    assert chapter.update(1.0, 1, acc=0.1) and chapter.update(0.5, 2, acc=0.05)  # by loss, accuracy aside
    assert not chapter.update(0.7, 3) and chapter.should_stop(3)
    last = EarlyStopping(patience=1, best_by="last", enabled=False)
    assert all(last.update(loss, e, acc=acc) for e, (loss, acc) in enumerate([(1.0, 0.5), (2.0, 0.1), (3.0, 0.0)], 1))
    assert last.best_epoch == 3 and not last.should_stop(3)

"""Training recipes: `--recipe chapter` (the book's, TrainConfig's defaults) and `--recipe kws` (the
chosen model's published recipe), resolved into one TrainConfig before anything runs. Every value the
user gives on the command line wins over the recipe's; config.json records the resolved values.

Sources of the kws recipes:
- BC-ResNet (Kim et al. 2021; Qualcomm-AI-research/bcresnet main.py and utils.py): SGD momentum 0.9,
  weight decay 1e-3, batch 100, LR 0.1 after 5 epochs of linear warm-up, cosine to 0 over 200 epochs;
  log-mel 40 (log(mel + 1e-6)); training clips shifted by up to ±100 ms and mixed with a background crop
  at volume U(0, 0.1) with probability 0.8; SpecAugment 2 time masks of up to 20 frames and, from
  BC-ResNet-1.5 up, 2 frequency masks of up to {2: 3, 3: 5, 6: 7, 8: 7} bins (none for BC-ResNet-1).
- MatchboxNet-3x1x64 (Majumdar & Ginsburg 2020; NeMo matchboxnet_3x1x64_v1.yaml): batch 128, 200 epochs,
  64 features, SpecAugment 2 frequency masks of 15 bins and 2 time masks of 25 frames, weight decay 1e-3,
  warm-up 5 % of the steps. NeMo's NovoGrad (LR 0.05) is not in torch: AdamW at 5e-3 with cosine decay
  stands in, and log-mel 64 for NeMo's 64 MFCCs; background-noise mixing (as above) for its white noise.
- The seed CNN has no published KWS recipe: AdamW 1e-3, weight decay 1e-2, 2 warm-up epochs, cosine,
  30 epochs, log-mel 128 (its convolutions need at least 78 bins) and the augmentations above.
Early stopping is off in every kws recipe (a cosine schedule's loss plateaus long before it ends) and
the kept weights are the average of the last quarter of the epochs' weights, BatchNorm statistics
recomputed (`best_by="swa"`): measured best of the five rules, and never below the final weights, on the
four protocols of benchmarks/results/accuracy-selection-cpu2.md (MatchboxNet, 3 seeds), where the best
validation accuracy tested 0.06 below the final weights on FSDD's unseen speaker (issue 27). BC-ResNet
keeps its final weights (`best_by="last"`): on FSDD's unseen speaker (accuracy-selection-bcresnet-cpu2.md,
BC-ResNet-1, 3 seeds) they tested 0.727 against the average's 0.705 and the best validation accuracy's
0.681. The seed CNN's kws recipe follows MatchboxNet's (its rules not measured).
Standardization per frequency bin (training-split statistics) is on: BC-ResNet feeds raw log-mel to a
BatchNorm'd first layer, so the shift changes little there, and the seed CNN, which has no normalization
before its first conv, needs it.
"""

from __future__ import annotations

from dataclasses import fields, replace

from speechcls.config import TrainConfig

# what every kws recipe shares (the augmentations of Warden 2018 / BC-ResNet)
_KWS_COMMON = {
    "recipe": "kws", "features": "mel", "log": True, "normalize": True, "schedule": "cosine",
    "early_stopping": False, "best_by": "swa", "shift_ms": 100.0, "noise_prob": 0.8, "noise_volume": 0.1,
    "time_masks": 2,
}  # fmt: skip

_BCRESNET_FREQ_WIDTH = {"bcresnet-1": 0, "bcresnet-2": 3, "bcresnet-3": 5, "bcresnet-6": 7, "bcresnet-8": 7}


def kws_recipe(model: str) -> dict:
    """The published kws recipe of `model` as TrainConfig fields."""
    if model.startswith("bcresnet-"):
        width = _BCRESNET_FREQ_WIDTH.get(model, 7)
        return _KWS_COMMON | {
            "n_mels": 40, "optimizer": "sgd", "max_lr": 0.1, "weight_decay": 1e-3, "warmup_epochs": 5.0,
            "epochs": 200, "batch_size": 100, "time_width": 20, "freq_masks": 2 if width else 0, "freq_width": width,
            "best_by": "last",  # measured: the final weights beat the average on BC-ResNet (module docstring)
        }  # fmt: skip
    if model.startswith("matchboxnet"):
        return _KWS_COMMON | {
            "n_mels": 64, "optimizer": "adamw", "max_lr": 5e-3, "weight_decay": 1e-3, "warmup_epochs": 10.0,
            "epochs": 200, "batch_size": 128, "freq_masks": 2, "freq_width": 15, "time_width": 25,
        }  # fmt: skip
    return _KWS_COMMON | {
        "n_mels": 128, "optimizer": "adamw", "max_lr": 1e-3, "weight_decay": 1e-2, "warmup_epochs": 2.0,
        "epochs": 30, "batch_size": 128, "freq_masks": 2, "freq_width": 7, "time_width": 20,
    }  # fmt: skip


def resolve(recipe: str, given: dict) -> TrainConfig:
    """The TrainConfig of `recipe` for the model in `given`, with every field in `given` (the options the
        user set) winning over the recipe's value. Asked for fewer (or more) epochs than published, a kws recipe
    keeps its warm-up's share of the run (5 of 200 epochs -> 0.25 of 10)."""
    names = {f.name for f in fields(TrainConfig)}
    if unknown := set(given) - names:
        raise ValueError(f"unknown training settings {sorted(unknown)}")
    if recipe == "chapter":
        return TrainConfig(**given).validate()
    if recipe != "kws":
        raise ValueError(f"--recipe {recipe!r}: choose chapter or kws")
    model = given.get("model", TrainConfig.model)
    published = kws_recipe(model)
    cfg = replace(TrainConfig(**published), **(given | {"model": model}))
    if "epochs" in given and "warmup_epochs" not in given:  # a shorter run keeps the schedule's shape
        cfg = replace(cfg, warmup_epochs=published["warmup_epochs"] * cfg.epochs / published["epochs"])
    return cfg.validate()

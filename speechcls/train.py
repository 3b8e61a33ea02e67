"""Fit, evaluate, find learning rates, predict: the chapter's recipe over the feature cache. No
argument parsing here; the CLI builds a TrainConfig and calls one function.

Run folder: log.csv (epoch,set,loss,acc), best.pt, last.pt, metrics.json, confusion.csv, config.json.

Under torchrun, fit() is DistributedDataParallel: each rank steps on its share of every global batch
(loader.shard_bounds), the loss is weighted so the averaged gradient is the global batch's mean,
metrics are all-reduced, and rank 0 alone reads and writes the run folder (the others get its
checkpoints by broadcast, so only rank 0's machine needs the folder).
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from speechcls import config, dist
from speechcls.config import FeatureParams, TrainConfig
from speechcls.loader import FeatureLoader, find_store
from speechcls.models import SeedCNN, check_input
from speechcls.store import Where, name, where

LOG_FIELDS = ("epoch", "set", "loss", "acc")


@dataclass
class Hooks:
    """Front-end callbacks (the CLI's rich bar); the library prints nothing itself."""

    epoch_start: Callable[[int, int], None] = lambda epoch, batches: None
    batch: Callable[[int, float, float], None] = lambda n, loss, acc: None  # examples, running loss, running acc
    epoch_end: Callable[[dict], None] = lambda row: None


@dataclass
class Setup:
    cfg: TrainConfig
    store: Where
    device: torch.device
    loaders: dict[str, FeatureLoader]
    classes: list[str]
    params: FeatureParams  # what the model sees (computed on the device for a waveform store)
    model: torch.nn.Module
    rank: dist.Rank


def resolve_device(device: str) -> torch.device:
    from speechcls.features import resolve_device as resolve

    return torch.device(resolve(device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(cfg: TrainConfig, store: Where, split: str, device: torch.device, mode: str | None = None, rank: dist.Rank = dist.Rank()) -> FeatureLoader:
    return FeatureLoader(
        store, split, cfg.split, cfg.split_seed, cfg.batch_size, shuffle=split == "train", seed=cfg.seed,
        device=str(device), mode=mode or cfg.loader, features=cfg.features, workers=cfg.workers,
        rank=rank.rank, world=rank.world,
    )  # fmt: skip


def build(cfg: TrainConfig, variant: str | None = None, splits=("train", "validation", "test"), rank: dist.Rank = dist.Rank()) -> Setup:
    """Store, loaders (this rank's shards) and a freshly initialised model (seeded) for `cfg`."""
    cfg.validate()
    device = torch.device(dist.local_device(str(resolve_device(cfg.device)), rank))  # one GPU per process
    if cfg.precision != "fp32" and device.type != "cuda":
        raise ValueError(f"--precision {cfg.precision} needs CUDA (autocast); use fp32 on the CPU")
    store = where(cfg.store) if cfg.store else find_store(variant)
    loaders = {s: make_loader(cfg, store, s, device, rank=rank) for s in splits}
    first = next(iter(loaders.values()))
    c, f, t = first.item_shape
    check_input(f, t)
    seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = SeedCNN(c, len(first.classes), cfg.dropout2d, cfg.dropout).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rank.distributed:
        torch.manual_seed(cfg.seed + rank.rank)  # each rank its own dropout masks
        if cfg.sync_bn:
            model = dist.convert_sync_batchnorm(model, device)
    return Setup(cfg, store, device, loaders, first.classes, first.params, model, rank)


def data_parallel(s: Setup) -> torch.nn.Module:
    """The module to step: DDP over the ranks (gradients averaged in buckets during backward)."""
    if not s.rank.distributed:
        return s.model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)


def _autocast(cfg: TrainConfig, device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _prep(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


@torch.no_grad()
def evaluate_model(model, loader: FeatureLoader, cfg: TrainConfig, device: torch.device) -> dict:
    """Loss, accuracy and the confusion matrix (rows = true class) over a whole split (the ranks'
    shards all-reduced under torchrun)."""
    model.eval()
    k = len(loader.classes)
    confusion = torch.zeros(k, k, dtype=torch.int64, device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
    n = 0
    for x, y in loader:
        with _autocast(cfg, device):
            logits = model(_prep(x, cfg))
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum")
        n += len(y)
        confusion += torch.bincount(y * k + logits.argmax(1), minlength=k * k).view(k, k)
    if loader.world > 1:
        r = dist.Rank(loader.rank, loader.world)
        dist.all_reduce_sum(r, confusion)
        dist.all_reduce_sum(r, total_loss)
        n = int(confusion.sum())
    confusion = confusion.cpu().numpy()
    return {"loss": total_loss.item() / n, "acc": float(np.trace(confusion) / n), "confusion": confusion, "n": n}


def per_class(confusion: np.ndarray, classes: list[str]) -> dict[str, float]:
    totals = confusion.sum(1)
    return {c: float(confusion[i, i] / totals[i]) if totals[i] else None for i, c in enumerate(classes)}  # None: no clip


def most_confused(confusion: np.ndarray, classes: list[str], top: int = 10) -> list[tuple[str, str, int]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = [(classes[i], classes[j], int(off[i, j])) for i, j in zip(*np.nonzero(off))]
    return sorted(pairs, key=lambda p: -p[2])[:top]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_log(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)  # the chapter's (R's) format: "set" quoted
        w.writerow(LOG_FIELDS)
        for r in rows:
            w.writerow([r["epoch"], r["set"], r["loss"], r["acc"]])


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {"epoch": int(r["epoch"]), "set": r["set"], "loss": float(r["loss"]), "acc": float(r["acc"])}
            for r in csv.DictReader(f)
        ]


def write_confusion(path: Path, confusion: np.ndarray, classes: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\predicted", *classes])
        for c, row in zip(classes, confusion.tolist()):
            w.writerow([c, *row])


def train_step(model, optimizer, scheduler, scaler, cfg: TrainConfig, device: torch.device, x, y, weight: float = 1.0):
    """One optimizer step on a batch: autocast forward, (scaled) backward, step, LR schedule step.
    `weight` multiplies the loss before backward (a rank's share of the global batch x world, so DDP's
    gradient average is the global mean). Returns the detached mean loss and the logits. Shared by fit()
    and the training benchmark."""
    with _autocast(cfg, device):
        logits = model(_prep(x, cfg))
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss * weight if weight != 1.0 else loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits


def _checkpoint_meta(s: Setup) -> dict:
    return {
        "config": asdict(s.cfg) | {"store": str(s.store)},
        "classes": s.classes,
        "params": asdict(s.params),
        "in_channels": s.params.shape[0],
        "n_classes": len(s.classes),
        "format": 1,
    }


def _load_resume(out: Path, rank: dist.Rank) -> dict:
    """last.pt, read by rank 0 and broadcast (errors included, so no rank waits in vain)."""
    state = None
    if rank.main:
        last = out / "last.pt"
        if not last.is_file():
            state = ValueError(f"{out}: no last.pt to resume from; start the run without --resume")
        else:
            state = torch.load(last, map_location="cpu", weights_only=False)
            state["log"] = read_log(out / "log.csv") if (out / "log.csv").exists() else []
    state = dist.broadcast(rank, state)
    if isinstance(state, ValueError):
        raise state
    return state


def _restore_rng(state: dict, rank: dist.Rank, cfg: TrainConfig) -> None:
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == rank.world:
        _set_rng_state(ranks[rank.rank])
    else:  # resumed with another number of ranks: the batch order is unchanged (seed, epoch); dropout reseeded
        import warnings

        if rank.main:
            warnings.warn(f"resuming a {len(ranks)}-process run with {rank.world}: dropout masks are reseeded", stacklevel=3)
        _set_rng_state(ranks[0])
        torch.manual_seed(cfg.seed + 1000 * state["epoch"] + rank.rank)


def fit(cfg: TrainConfig, out: Path, variant: str | None = None, resume: bool = False, hooks: Hooks | None = None, stop_after: int | None = None) -> dict:
    """Train with Adam, one-cycle LR (per batch) and early stopping on the validation loss; keep the
    best checkpoint; evaluate it on the test split. `resume` continues from out/last.pt with the saved
    config. `stop_after` ends after that many epochs of this call, as an interruption would (tests).
    Under torchrun every rank calls this with the same arguments (see the module docstring)."""
    hooks = hooks or Hooks()
    out = Path(out)
    rank = dist.init(resolve_device(cfg.device).type)
    state = _load_resume(out, rank) if resume else None
    if state is not None:
        cfg = TrainConfig(**state["config"])
    s = build(cfg, variant, rank=rank)
    meta = _checkpoint_meta(s)
    if rank.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(meta["config"] | {"world": rank.world}, indent=1) + "\n")
    model, device, train_loader = s.model, s.device, s.loaders["train"]
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s.cfg.max_lr, epochs=s.cfg.epochs, steps_per_epoch=len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=s.cfg.precision == "fp16")
    rows: list[dict] = []
    start_epoch, best_loss, bad, best_epoch, train_time, train_seen = 1, math.inf, 0, 0, 0.0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
        best_loss, bad, best_epoch = state["best_loss"], state["bad_epochs"], state["best_epoch"]
        train_time, train_seen = state["train_time"], state["train_seen"]
        rows = [r for r in state["log"] if r["epoch"] <= state["epoch"]]
        _restore_rng(state, rank, s.cfg)
        if state.get("finished"):
            start_epoch = s.cfg.epochs + 1
    net = data_parallel(s)  # after loading: DDP broadcasts rank 0's weights once here
    step_model = torch.compile(net) if s.cfg.compile else net
    stopped = state is not None and state.get("finished", False)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, s.cfg.epochs + 1):
        if stopped:
            break
        model.train()
        train_loader.set_epoch(epoch)
        hooks.epoch_start(epoch, len(train_loader))
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        n = steps = 0
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for (x, y), global_size in zip(train_loader, train_loader.global_sizes, strict=True):
            weight = len(y) * rank.world / global_size  # 1.0 in one process
            loss, logits = train_step(step_model, optimizer, scheduler, scaler, s.cfg, device, x, y, weight)
            total_loss += loss.detach() * len(y)  # stays on the device: no sync per batch
            correct += (logits.argmax(1) == y).sum()
            n += len(y)
            steps += 1
            if steps % 20 == 0:  # note: .item() is a CPU-GPU sync point, so the bar reads it every 20 steps
                hooks.batch(len(y), total_loss.item() / n, correct.item() / n)
            else:
                hooks.batch(len(y), float("nan"), float("nan"))
        sums = dist.all_reduce_sum(rank, torch.stack([total_loss, correct, torch.tensor(float(n), dtype=torch.float64, device=device)]))
        total, right, n = sums.tolist()  # every rank's examples: what one process would report
        train_row = {"epoch": epoch, "set": "train", "loss": total / n, "acc": right / n}
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        train_time += seconds
        train_seen += int(n)
        if not s.cfg.sync_bn:
            dist.broadcast_buffers(rank, model)  # evaluate (and checkpoint) rank 0's running statistics
        v = evaluate_model(model, s.loaders["validation"], s.cfg, device)
        valid_row = {"epoch": epoch, "set": "valid", "loss": v["loss"], "acc": v["acc"]}
        rows += [train_row, valid_row]
        improved = v["loss"] < best_loss
        if improved:
            best_loss, bad, best_epoch = v["loss"], 0, epoch
        else:
            bad += 1
        # one verdict for all ranks (their all-reduced numbers agree; this makes it certain)
        stopped = dist.broadcast(rank, bad >= s.cfg.patience and epoch >= s.cfg.min_epochs)
        rngs = dist.gather(rank, _rng_state())
        if rank.main:
            _write_log(out / "log.csv", rows)
            if improved:
                torch.save({**meta, "model": model.state_dict(), "epoch": epoch, "valid_loss": v["loss"]}, out / "best.pt")
            torch.save(
                {
                    **meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                    "best_loss": best_loss, "bad_epochs": bad, "best_epoch": best_epoch, "train_time": train_time,
                    "train_seen": train_seen, "rng": rngs[0], "rng_ranks": rngs, "world": rank.world,
                    "finished": stopped or epoch == s.cfg.epochs,
                },
                out / "last.pt",
            )  # fmt: skip
        hooks.epoch_end({"train": train_row, "valid": valid_row, "samples_per_s": n / max(seconds, 1e-9), "best": best_epoch == epoch})
        if stop_after is not None and epoch - start_epoch + 1 >= stop_after and not stopped:
            raise KeyboardInterrupt(f"stopped after epoch {epoch} (stop_after)")
    best = dist.broadcast(rank, torch.load(out / "best.pt", map_location="cpu", weights_only=False)["model"] if rank.main else None)
    model.load_state_dict(best)
    test = evaluate_model(model, s.loaders["test"], s.cfg, device)
    epochs_run = max((r["epoch"] for r in rows), default=0)
    metrics = {
        "test_loss": test["loss"],
        "test_acc": test["acc"],
        "per_class_acc": per_class(test["confusion"], s.classes),
        "confusion": test["confusion"].tolist(),
        "classes": s.classes,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "best_valid_loss": best_loss,
        "stopped_early": epochs_run < s.cfg.epochs,
        "train_samples_per_s": train_seen / train_time if train_time else None,
        "test_samples": test["n"],
        "train_samples": train_loader.n,
        "device": str(device) if not rank.distributed else f"{rank.world} x {device.type}",
        "world": rank.world,
        "loader_mode": train_loader.mode,
        "store": str(s.store),
        "variant": s.params.variant,
    }
    if rank.main:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        write_confusion(out / "confusion.csv", test["confusion"], s.classes)
    return metrics


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A checkpoint file, or a run folder (its best.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint; pass a run folder (with best.pt) or a .pt file")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    cfg = ckpt["config"]
    model = SeedCNN(ckpt["in_channels"], ckpt["n_classes"], cfg["dropout2d"], cfg["dropout"]).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def evaluate(run: Path, split: str = "test", store: str | None = None, device: str = "auto") -> dict:
    """Loss, accuracy, per-class accuracy, confusion and the most-confused pairs of a checkpoint."""
    dev = resolve_device(device)
    model, ckpt = load_checkpoint(run, dev)
    cfg = replace(TrainConfig(**ckpt["config"]), store=store or ckpt["config"]["store"], device=str(dev), loader="auto")
    loader = make_loader(cfg, where(cfg.store), split, dev)
    if loader.classes != ckpt["classes"]:
        raise ValueError(f"{cfg.store} has other classes than the checkpoint was trained on")
    r = evaluate_model(model, loader, cfg, dev)
    return {
        "split": split, "loss": r["loss"], "acc": r["acc"], "n": r["n"], "classes": loader.classes,
        "per_class_acc": per_class(r["confusion"], loader.classes), "confusion": r["confusion"],
        "most_confused": most_confused(r["confusion"], loader.classes),
    }  # fmt: skip


def lr_find(cfg: TrainConfig, out: Path, variant: str | None = None, start_lr: float = 1e-7, end_lr: float = 1.0, steps: int = 100, beta: float = 0.98, diverge: float = 4.0) -> dict:
    """The learning-rate range test: the LR grows exponentially from start_lr to end_lr, one step a
    batch; the loss is smoothed (exponential average, bias-corrected); the sweep stops when the smoothed
    loss passes `diverge` times its minimum. Suggests a max LR a tenth of the LR at the minimum."""
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lr_find.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lr", "loss"])
        w.writerows(zip(lrs, losses))
    suggestion, at_min = suggest_max_lr(lrs, smooth)
    fig = lr_figure(lrs, losses, smooth, suggestion)
    fig.savefig(out / "lr_find.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {"lr": lrs, "loss": losses, "smoothed": smooth, "suggested_max_lr": suggestion, "min_loss_lr": at_min}


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


def lr_figure(lrs, losses, smooth, suggestion: float):
    """Loss and smoothed loss against the LR (log axis), the suggested max LR marked: a matplotlib
    Figure for the caller to save and close."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    ax.plot(lrs, losses, color="#bbbbbb", lw=0.8, label="loss")
    ax.plot(lrs, smooth, color="#1f77b4", lw=1.6, label="smoothed")
    ax.axvline(suggestion, color="#d62728", ls="--", lw=1, label=f"suggested max LR {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("Learning rate finder")
    ax.legend()
    fig.tight_layout()
    return fig


def predict(checkpoint: Path, files: list[Path], top: int = 3, device: str = "auto") -> list[dict]:
    """Top-k labels with probabilities for each file, computed with the features the checkpoint was
    trained on; an unreadable file gets an error entry and the others are still predicted."""
    from speechcls.decode import BadAudio, load_clip
    from speechcls.features import FeatureExtractor

    dev = resolve_device(device)
    model, ckpt = load_checkpoint(checkpoint, dev)
    params = FeatureParams(**ckpt["params"])
    extractor = FeatureExtractor(params).to(dev)
    classes = ckpt["classes"]
    out = []
    for f in files:
        try:
            audio, _ = load_clip(Path(f), params.sample_rate, params.clip_samples)
        except BadAudio as e:
            out.append({"file": str(f), "error": f"not readable audio: {e}"})
            continue
        except OSError as e:
            out.append({"file": str(f), "error": str(e)})
            continue
        with torch.no_grad():
            x = extractor(torch.from_numpy(audio).unsqueeze(0).to(dev)).float()
            probs = torch.softmax(model(x).float(), dim=1)[0]
        p, i = probs.topk(min(top, len(classes)))
        out.append({"file": str(f), "top": [{"label": classes[j], "prob": float(q)} for q, j in zip(p.tolist(), i.tolist())]})
    return out


def default_run_dir(store: Where) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(config.RUNS_DIRNAME) / f"{name(store)}-{stamp}"

"""Training: the chapter's recipe over the feature cache. No argument parsing here; the CLI builds a
TrainConfig and calls `fit`.

Adam, one-cycle LR (stepped per batch), early stopping on the validation loss, the best checkpoint kept
and tested; every other selection rule (best validation accuracy or loss, final weights, EMA, SWA) is
tracked in the same run and tested too (metrics.json's test_acc_by). Under torchrun, fit() is
DistributedDataParallel: each rank steps on its share of every global batch (loader/sharding.py), the
loss is weighted so the averaged gradient is the global batch's mean, metrics are all-reduced, and rank
0 alone reads and writes the run folder (the others get its checkpoints by broadcast, so only rank 0's
machine needs the folder).
"""

from __future__ import annotations

import copy
import math
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from speechcls import dist
from speechcls.audio.augment import check_mask_widths, mixup
from speechcls.audio.frontend import InputSpec
from speechcls.config import TrainConfig
from speechcls.engine import checkpoint
from speechcls.engine.optim import EarlyStopping, make_optimizer, make_schedule
from speechcls.engine.run_dir import RunDir
from speechcls.engine.selection import RULES, Snapshots, ema_decay, recompute_bn, swa_window
from speechcls.engine.setup import Setup, build, data_parallel, make_loader
from speechcls.engine.steps import evaluate_model, per_class, train_step
from speechcls.runtime import Progress, package_versions, resolve_device, source_commit

__all__ = ["EarlyStopping", "Setup", "Trainer", "build", "fit", "make_loader"]


@dataclass
class Trainer:
    """The optimizer, LR schedule, scaler, weight averages and best-epoch snapshots of a run (the state
    last.pt keeps besides the model).

    Both averages are kept in every run, whatever --best-by says, so every rule is tested: the EMA is
    updated after every step (one foreach lerp over the parameters and buffers), the SWA average at the end
    of each of the last `swa_window` epochs."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel  # --ema DECAY: also the weights validated each epoch
    swa: torch.optim.swa_utils.AveragedModel  # equal-weight average; BatchNorm statistics recomputed at the end
    validate_ema: bool = False
    snapshots: Snapshots = None

    @classmethod
    def for_setup(cls, s: Setup) -> "Trainer":
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        optimizer = make_optimizer(s.cfg, s.model)
        scheduler = make_schedule(s.cfg, optimizer, len(s.loaders["train"]))
        decay = ema_decay(s.cfg, len(s.loaders["train"]))
        # use_buffers: the EMA's BatchNorm statistics follow the model's (no extra pass over the data)
        ema = AveragedModel(s.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        swa = AveragedModel(s.model)  # its buffers are recomputed over the training split (recompute_bn)
        scaler = torch.amp.GradScaler(s.device.type, enabled=s.cfg.precision == "fp16")
        return cls(optimizer, scheduler, scaler, ema, swa, bool(s.cfg.ema), Snapshots())

    def evaluated(self, s: Setup) -> torch.nn.Module:
        """The weights validated each epoch (and kept by acc | loss): the average under --ema, else the model."""
        return self.ema.module if self.validate_ema else s.model

    def end_epoch(self, s: Setup, epoch: int) -> None:
        """The SWA average takes the weights of each of the last swa_window epochs (of the schedule's)."""
        if epoch > s.cfg.epochs - swa_window(s.cfg):
            self.swa.update_parameters(s.model)

    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict(),
            "swa": self.swa.state_dict(),
            "selection": {"acc": self.snapshots.acc, "loss": self.snapshots.loss},
        }

    def load(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        # a last.pt from before every rule was tracked lacks the averages: they restart from here
        if "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if "swa" in state:
            self.swa.load_state_dict(state["swa"])
        if "selection" in state:
            self.snapshots = Snapshots(**state["selection"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_one_epoch(s: Setup, step_model, t: Trainer, epoch: int, progress: Progress) -> dict:
    """One pass over this rank's training shard. Returns the epoch's log row (every rank's examples,
    what one process would report), the examples and the seconds.

    A non-finite training loss raises a ValueError naming the epoch, the first bad step and the store rows
    of its batch. The losses stay on the device and are checked where the loop syncs anyway (every 20
    steps, and at the end of the epoch), so the run stops within 20 steps of the first bad batch; the
    checkpoints are written only at epoch ends, so they stay those of the last finished epoch."""
    loader, device, world = s.loaders["train"], s.device, s.rank.world
    s.model.train()
    loader.set_epoch(epoch)
    progress.start(f"epoch {epoch}", len(loader))
    total_loss = torch.zeros((), dtype=torch.float64, device=device)  # turns NaN/inf for good at a bad loss
    correct = torch.zeros((), dtype=torch.float64, device=device)
    losses = torch.zeros(len(loader), dtype=torch.float32, device=device)  # per step: finds the first bad one
    positions = loader.positions() if s.cfg.mixup else []  # each batch's first example in the epoch's order
    n = steps = 0
    _sync(device)
    t0 = time.perf_counter()
    for (x, y), global_size in zip(loader, loader.global_sizes, strict=True):
        weight = len(y) * world / global_size  # 1.0 in one process
        mix = {}
        if s.cfg.mixup:  # the pipeline's mixup generator: (seed, epoch, position), like every augmentation
            x, _y_a, y_b, lam = mixup(x, y, s.cfg.mixup, loader.pipeline.mixup_rng(epoch, positions[steps]))
            mix["mix"] = (y_b, lam)
        loss, logits = train_step(step_model, t.optimizer, t.scheduler, t.scaler, s.cfg, device, x, y, weight, **mix)
        t.ema.update_parameters(s.model)
        losses[steps] = loss.detach()
        total_loss += loss.detach() * len(y)  # stays on the device: no sync per batch
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
        steps += 1
        if steps % 20 == 0:  # note: .item() is a CPU-GPU sync point, so the bar reads it every 20 steps
            seen = total_loss.item()
            if not math.isfinite(seen):
                raise _diverged(s, losses[:steps], epoch)
            lr = t.scheduler.get_last_lr()[0]  # a Python float: no sync
            progress.advance(1, examples=len(y), loss=seen / n, acc=correct.item() / n, lr=lr)
        else:
            progress.advance(1, examples=len(y))
    count = torch.tensor(float(n), dtype=torch.float64, device=device)
    total, right, n = dist.all_reduce_sum(s.rank, torch.stack([total_loss, correct, count])).tolist()
    if not math.isfinite(total):  # every rank sees the all-reduced sum: all of them stop here
        raise _diverged(s, losses[:steps], epoch)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch, "set": "train", "loss": total / n, "acc": right / n}
    row |= {"lr": t.scheduler.get_last_lr()[0], "seconds": seconds, "samples_per_s": n / max(seconds, 1e-9)}
    return {"row": row, "n": int(n), "seconds": seconds}


def _diverged(s: Setup, losses: torch.Tensor, epoch: int) -> ValueError:
    """The one-line error for a non-finite training loss: this rank's first bad step (from its recorded
    per-step losses) and the store rows of that batch, what was kept, and what to do."""
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
    if bad:
        k = bad[0]
        rows = s.loaders["train"].batch_rows(k).tolist()
        shown = ", ".join(map(str, rows[:8])) + (f" and {len(rows) - 8} more" if len(rows) > 8 else "")
        loss = losses[k].item()
        where = f"epoch {epoch}, step {k} (batch index, from 0; loss {loss}): the batch of store rows {shown}"
    else:  # torchrun: another rank's batch; the all-reduced sum told this one
        where = f"epoch {epoch}, on another rank's batch"
    kept = "no checkpoint was written" if epoch == 1 else f"last.pt and log.csv are those of epoch {epoch - 1}"
    return ValueError(
        f"the training loss is not finite at {where}; the run stopped within 20 steps of it and {kept}. "
        f"Lower --max-lr (it is {s.cfg.max_lr:g}), or check the store with `speechcls info {s.store}` "
        "for clips with extreme features"
    )


def validate(s: Setup, epoch: int, model: torch.nn.Module | None = None) -> dict:
    """The validation split's log row (the chapter's CSV calls the set "valid")."""
    if not s.cfg.sync_bn:
        dist.broadcast_buffers(s.rank, s.model)  # evaluate (and checkpoint) rank 0's running statistics
    v = evaluate_model(model or s.model, s.loaders["validation"], s.cfg, s.device)
    return {"epoch": epoch, "set": "valid", "loss": v["loss"], "acc": v["acc"]}


def fit(
    cfg: TrainConfig,
    out: Path,
    variant: str | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    overwrite: bool = False,
    command: list[str] | None = None,
) -> dict:
    """Train, keep the best checkpoint, evaluate it on the test split; returns the test metrics.
    `resume` continues from out/last.pt with the saved config. A new run refuses a folder that already
    holds one unless `overwrite` (RunDir.claim: only a run's own files are ever removed). Under torchrun
    every rank calls this with the same arguments (see the module docstring). `command` (the CLI's
    sys.argv) is recorded in config.json; before the first epoch `progress.note("header", ...)` tells what
    is trained on what (Setup.header)."""
    progress, run, started = progress or Progress(), RunDir(out), _now()
    rank = dist.init(resolve_device(cfg.device))
    if not resume:
        _claim(run, rank, overwrite)  # before anything is written: a run already there is never mixed into
    state = _load_resume(run, rank) if resume else None
    spec = None
    if state is not None:
        cfg = TrainConfig(**state["config"])
        spec = InputSpec.from_dict(state.get("input"))  # the statistics of the first start, not recomputed
    s = build(cfg, variant, rank=rank, input_spec=spec)
    check_mask_widths(s.cfg.freq_width, s.cfg.time_width, s.params.shape)  # now that the features are known
    meta = s.meta()  # its "config" stays the TrainConfig's fields: TrainConfig(**config) rebuilds it on resume
    record = meta["config"] | s.resolved() | {
        "world": rank.world, "argv": command, "git_commit": source_commit() if rank.main else None,
        "versions": package_versions(), "host": socket.gethostname(), "start": started, "end": None,
        "resumed_from_epoch": state["epoch"] if state is not None else None,
    }  # fmt: skip
    if rank.main:
        run.write_config(record)
    t, stop = Trainer.for_setup(s), EarlyStopping.for_config(s.cfg)
    rows, start_epoch, clock, stopped = [], 1, {"time": 0.0, "seen": 0}, False
    if state is not None:
        start_epoch, rows, clock, stopped = _restore(state, s, t, stop)
    if rank.main:
        progress.note("header", **s.header(start_epoch), run=str(run.path))
    net = data_parallel(s)  # after loading: DDP broadcasts rank 0's weights once here
    step_model = torch.compile(net) if s.cfg.compile else net
    for epoch in range(start_epoch, s.cfg.epochs + 1):
        if stopped:
            break
        ep = train_one_epoch(s, step_model, t, epoch, progress)
        clock["time"] += ep["seconds"]
        clock["seen"] += ep["n"]
        t.end_epoch(s, epoch)
        evaluated = t.evaluated(s)
        valid_row = validate(s, epoch, evaluated)
        rows += [ep["row"], valid_row]
        improved = stop.update(valid_row["loss"], epoch, valid_row["acc"])
        t.snapshots.update(valid_row, evaluated)
        # one verdict for all ranks (their all-reduced numbers agree; this makes it certain)
        stopped = dist.broadcast(rank, stop.should_stop(epoch))
        rngs = dist.gather(rank, checkpoint.rng_state())
        if rank.main:
            run.write_log(rows)
            if improved and s.cfg.best_by in ("acc", "loss", "last"):  # ema, swa: written at the end (_test)
                kept = s.model if s.cfg.best_by == "last" else evaluated
                checkpoint.save(
                    run.best, {
                        **meta, "model": kept.state_dict(), "epoch": epoch, "valid_loss": valid_row["loss"],
                        "valid_acc": valid_row["acc"], "kept_by": s.cfg.best_by,
                    },
                )  # fmt: skip
            checkpoint.save(run.last, {
                **meta, **t.state(), "model": s.model.state_dict(), "epoch": epoch, "best_loss": stop.best_loss,
                "best_acc": stop.best_acc, "bad_epochs": stop.bad, "best_epoch": stop.best_epoch,
                "train_time": clock["time"], "train_seen": clock["seen"], "rng_ranks": rngs, "world": rank.world,
                "finished": stopped or epoch == s.cfg.epochs,
            })  # fmt: skip
        progress.end(train=ep["row"], valid=valid_row, samples_per_s=ep["row"]["samples_per_s"], best=improved)
    metrics = _test(s, run, rows, stop, clock, t, meta)
    if rank.main:
        run.write_config(record | {"end": _now()})
    return metrics


def _now() -> str:
    """Local time, ISO 8601 with its UTC offset."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _load_resume(run: RunDir, rank: dist.Rank) -> dict:
    """last.pt, read by rank 0 and broadcast (errors included, so no rank waits in vain)."""

    def load() -> dict:
        if not run.last.is_file():
            raise ValueError(f"{run.path}: no last.pt to resume from; start the run without --resume")
        state = checkpoint.load(run.last)
        state["log"] = run.read_log() if run.has_log() else []
        run.remove_temps()  # a kill during a checkpoint's write left its temporary file: never kept
        return state

    return dist.from_main(rank, load)


def _claim(run: RunDir, rank: dist.Rank, overwrite: bool) -> None:
    """RunDir.claim by rank 0, before anything is written; its refusal reaches every rank, so no rank
    trains towards a folder that was refused."""
    dist.from_main(rank, lambda: run.claim(overwrite))


def _restore(state: dict, s: Setup, t: Trainer, stop: EarlyStopping) -> tuple[int, list[dict], dict, bool]:
    """Model, optimizer, schedule, early stopping, clock, log rows and this rank's RNG from last.pt."""
    s.model.load_state_dict(state["model"])
    t.load(state)
    stop.best_loss, stop.bad, stop.best_epoch = state["best_loss"], state["bad_epochs"], state["best_epoch"]
    stop.best_acc = state.get("best_acc", -math.inf)
    rows = [r for r in state["log"] if r["epoch"] <= state["epoch"]]
    ranks = state["rng_ranks"]
    if len(ranks) == s.rank.world:
        checkpoint.set_rng_state(ranks[s.rank.rank])
    else:  # resumed with another number of ranks: the batch order is unchanged (seed, epoch); dropout reseeded
        if s.rank.main:
            warnings.warn(
                f"resuming a {len(ranks)}-process run with {s.rank.world}: dropout masks are reseeded", stacklevel=3
            )
        checkpoint.set_rng_state(ranks[0])
        torch.manual_seed(s.cfg.seed + 1000 * state["epoch"] + s.rank.rank)
    finished = bool(state.get("finished"))
    start = s.cfg.epochs + 1 if finished else state["epoch"] + 1
    return start, rows, {"time": state["train_time"], "seen": state["train_seen"]}, finished


def candidates(s: Setup, t: Trainer):
    """(rule, module) for every rule with weights to test: the best validation epochs' snapshots (acc,
    loss), the final weights (last), the EMA, and the SWA average with its BatchNorm statistics recomputed
    (none before its window's first epoch: a run stopped early). The model itself is loaded last: it holds
    the final weights until then."""
    scratch = copy.deepcopy(s.model)
    yield "last", s.model
    yield "ema", t.ema.module
    if t.swa.n_averaged.item() > 0:
        recompute_bn(s, t.swa.module)
        yield "swa", t.swa.module
    for rule in ("acc", "loss"):
        snap = getattr(t.snapshots, rule)
        if snap is not None:
            scratch.load_state_dict(snap["model"])
            yield rule, scratch


def _test(s: Setup, run: RunDir, rows: list[dict], stop: EarlyStopping, clock: dict, t: Trainer, meta: dict) -> dict:
    """Every rule's weights on the validation and test splits; the kept ones (--best-by: best.pt, written
    here for ema and swa) give metrics.json's test metrics and confusion.csv, and test_acc_by /
    valid_acc_by give every rule's accuracy."""
    rank, train_loader = s.rank, s.loaders["train"]
    epochs_run = max((r["epoch"] for r in rows), default=0)
    test_by, valid_by, test = {}, {}, None
    for rule, module in candidates(s, t):
        if not s.cfg.sync_bn:
            dist.broadcast_buffers(rank, module)  # rank 0's running statistics, as validate() does
        v = evaluate_model(module, s.loaders["validation"], s.cfg, s.device)
        r = evaluate_model(module, s.loaders["test"], s.cfg, s.device)
        test_by[rule], valid_by[rule] = r["acc"], v["acc"]
        if rule == s.cfg.best_by:
            test = r
            if rank.main and rule in ("ema", "swa"):
                checkpoint.save(run.best, {
                    **meta, "model": module.state_dict(), "epoch": epochs_run, "valid_loss": v["loss"],
                    "valid_acc": v["acc"], "kept_by": rule,
                })  # fmt: skip
    assert test is not None, f"no weights for --best-by {s.cfg.best_by}"
    metrics = {
        "test_loss": test["loss"],
        "test_acc": test["acc"],
        "kept_by": s.cfg.best_by,
        "test_acc_by": {rule: test_by[rule] for rule in RULES if rule in test_by},
        "valid_acc_by": {rule: valid_by[rule] for rule in RULES if rule in valid_by},
        "epoch_by": {
            "acc": t.snapshots.acc and t.snapshots.acc["epoch"],
            "loss": t.snapshots.loss and t.snapshots.loss["epoch"],
            "last": epochs_run,
        },
        "swa_epochs": int(t.swa.n_averaged.item()),
        "ema_decay": ema_decay(s.cfg, len(train_loader)),
        "per_class_acc": per_class(test["confusion"], s.classes),
        "confusion": test["confusion"].tolist(),
        "classes": s.classes,
        "epochs_run": epochs_run,
        "best_epoch": stop.best_epoch,
        "best_valid_loss": stop.best_loss,
        "best_valid_acc": stop.best_acc if math.isfinite(stop.best_acc) else None,
        "task": s.cfg.task,
        "recipe": s.cfg.recipe,
        "model": s.cfg.model,
        **s.complexity,  # parameters, macs
        "stopped_early": epochs_run < s.cfg.epochs,
        "train_samples_per_s": clock["seen"] / clock["time"] if clock["time"] else None,
        "test_samples": test["n"],
        "train_samples": train_loader.n,
        "device": str(s.device) if not rank.distributed else f"{rank.world} x {s.device.type}",
        "world": rank.world,
        "loader_mode": train_loader.mode,
        "store": str(s.store),
        "variant": s.params.variant,
    }
    if rank.main:
        run.write_metrics(metrics)
        run.write_confusion(test["confusion"], s.classes, "test")
    return metrics

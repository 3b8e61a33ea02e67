"""Run by tests/test_distributed.py, under torchrun (2 ranks, gloo) or as one plain process.

python ddp_script.py step OUT STORE BATCH        one optimizer step; rank 0 saves grads + weights
python ddp_script.py fit OUT STORE BATCH EPOCHS [--no-dropout] [--sync-bn] [--stop-after K] [--resume] [--loader M]
    speechcls.train.fit, recording a fingerprint of every example each rank steps on, per epoch
"""

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from speechcls import dist
from speechcls.config import TrainConfig
from speechcls.engine import fit as fitting
from speechcls.engine import steps
from speechcls.runtime import Progress


def fingerprint(row: torch.Tensor) -> str:
    return hashlib.sha1(row.cpu().numpy().tobytes()).hexdigest()


def step(args, cfg: TrainConfig) -> None:
    rank = dist.init("cpu")
    s = fitting.build(cfg, splits=("train",), rank=rank)
    net = fitting.data_parallel(s)
    optimizer = torch.optim.Adam(s.model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = s.loaders["train"]
    loader.set_epoch(1)
    x, y = next(iter(loader))
    weight = len(y) * rank.world / loader.global_sizes[0]
    loss, _ = steps.train_step(net, optimizer, None, scaler, s.cfg, s.device, x, y, weight)
    if rank.main:
        grads = {k: p.grad.clone() for k, p in s.model.named_parameters()}
        torch.save({"grads": grads, "state": s.model.state_dict(), "rows": len(y) * rank.world}, args.out)


def fit(args, cfg: TrainConfig) -> None:
    rank = dist.from_env()
    seen: dict[int, dict] = {}  # epoch -> example fingerprints, per batch [loss x n, correct, n]
    current = {}
    original, original_epoch = fitting.train_step, fitting.train_one_epoch

    def recording_step(model, optimizer, scheduler, scaler, cfg, device, x, y, weight=1.0):
        loss, logits = original(model, optimizer, scheduler, scaler, cfg, device, x, y, weight)
        record = seen[current["epoch"]]
        record["rows"] += [fingerprint(r) for r in x]
        record["batches"].append([float(loss) * len(y), int((logits.argmax(1) == y).sum()), len(y)])
        return loss, logits

    def recording_epoch(s, step_model, t, epoch, progress):
        current["epoch"] = epoch
        seen[epoch] = {"rows": [], "batches": []}
        return original_epoch(s, step_model, t, epoch, progress)

    class StopAfter(Progress):  # interrupts the run after N epochs, as Ctrl-C would
        def __init__(self, epochs):
            self.left = epochs

        def end(self, **summary):
            self.left = None if self.left is None else self.left - 1
            if self.left == 0:
                raise KeyboardInterrupt(f"stopped after epoch {summary['train']['epoch']}")

    fitting.train_step, fitting.train_one_epoch = recording_step, recording_epoch
    out = Path(args.out)
    try:
        fitting.fit(cfg, out, resume=args.resume, progress=StopAfter(args.stop_after))
    finally:
        (out.parent / f"{out.name}-seen-rank{rank.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["step", "fit"])
    p.add_argument("out")
    p.add_argument("store")
    p.add_argument("batch", type=int)
    p.add_argument("epochs", type=int, nargs="?", default=1)
    p.add_argument("--no-dropout", action="store_true")
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--stop-after", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--loader", default="device")
    args = p.parse_args()
    cfg = TrainConfig(
        store=args.store,
        device="cpu",
        loader=args.loader,
        batch_size=args.batch,
        epochs=args.epochs,
        sync_bn=args.sync_bn,
        min_epochs=args.epochs,
    )
    if args.no_dropout:
        cfg = replace(cfg, dropout2d=0.0, dropout=0.0)
    {"step": step, "fit": fit}[args.what](args, cfg)
    sys.exit(0)

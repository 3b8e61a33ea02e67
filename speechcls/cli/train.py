"""`speechcls train`, `lr-find`, `evaluate`, `predict`: a store in, a run folder out, and its use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls import config
from speechcls.cli.app import DeviceOpt, StoreOpt, VariantOpt, app, console, user_errors
from speechcls.cli.progress import RichProgress


def _train_config(**kw) -> "config.TrainConfig":
    kw["store"] = str(kw["store"]) if kw.get("store") else ""
    return config.TrainConfig(**kw).validate()


@app.command()
@user_errors
def train(
    store: StoreOpt = None,
    variant: VariantOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder [default: runs/<store>-<time>].")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this folder.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in --out (its run files only; never another folder).")
    ] = False,
    features: Annotated[str, typer.Option(help="For a waveform store: the variant computed on the device.")] = "",
    split_kind: Annotated[
        str, typer.Option("--split-kind", "--split", help="official (speaker-disjoint lists) | random (60/20/20).")
    ] = "official",
    split_seed: Annotated[int, typer.Option(help="Seed of the random split.")] = config.SPLIT_SEED,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (the one-cycle schedule spans them).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Examples per batch (per process under torchrun).")] = 128,
    max_lr: Annotated[float, typer.Option(help="Peak of the one-cycle learning rate.")] = 1e-2,
    patience: Annotated[int, typer.Option(help="Epochs without a lower validation loss before stopping.")] = 3,
    min_epochs: Annotated[int, typer.Option(help="Early stopping does not count before this epoch.")] = 0,
    seed: Annotated[int, typer.Option(help="Model init, dropout and batch order.")] = 0,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (CUDA autocast).")] = "fp32",
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    loader: Annotated[str, typer.Option(help="auto | device | host | stream.")] = "auto",
    workers: Annotated[int, typer.Option(help="Reader threads of the streaming loader.")] = 1,
    sync_bn: Annotated[
        bool, typer.Option("--sync-bn", help="Under torchrun: BatchNorm over the global batch.")
    ] = False,
) -> None:
    """Train the chapter's CNN on a feature store: Adam, one-cycle LR, early stopping; then test.
    Under `torchrun --nproc-per-node N -m speechcls train ...` it trains with DistributedDataParallel."""
    from speechcls import dist
    from speechcls.engine.fit import fit
    from speechcls.engine.run_dir import default_run_dir

    if resume is not None and overwrite:
        raise typer.BadParameter("--resume continues a run and --overwrite replaces one: choose one")
    cfg = _train_config(
        store=store, features=features, split_kind=split_kind, split_seed=split_seed, epochs=epochs,
        batch_size=batch_size, max_lr=max_lr, patience=patience, min_epochs=min_epochs, seed=seed, device=device,
        precision=precision, channels_last=channels_last, compile=compile, loader=loader, workers=workers,
        sync_bn=sync_bn,
    )  # fmt: skip
    if resume is not None:
        run_dir = resume
    else:
        from speechcls.store import find_store

        run_dir = out or default_run_dir(cfg.store or find_store(variant))
    if not dist.from_env().main:  # rank 0 alone shows progress, writes the run folder and reports
        fit(cfg, run_dir, variant, resume is not None, overwrite=overwrite)
        return
    with RichProgress(console(stderr=True), unit="samples", on_end=_epoch_line) as progress:
        metrics = fit(cfg, run_dir, variant, resume is not None, progress, overwrite)
    typer.echo(
        f"{run_dir}: test loss {metrics['test_loss']:.4f} acc {metrics['test_acc']:.4f} after {metrics['epochs_run']} "
        f"epochs (best {metrics['best_epoch']}), {metrics['train_samples_per_s']:.0f} train samples/s, "
        f"{metrics['loader_mode']} loader on {metrics['device']}"
    )


def _epoch_line(row: dict) -> str:
    t, v = row["train"], row["valid"]
    return (
        f"epoch {t['epoch']}: train loss {t['loss']:.4f} acc {t['acc']:.4f} | valid loss {v['loss']:.4f} "
        f"acc {v['acc']:.4f} | {row['samples_per_s']:,.0f} samples/s" + ("  *best" if row["best"] else "")
    )


@app.command("lr-find")
@user_errors
def lr_find(
    store: StoreOpt = None,
    variant: VariantOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for lr_find.csv and lr_find.png.")] = Path("runs/lr_find"),
    features: Annotated[str, typer.Option(help="For a waveform store: the variant computed on the device.")] = "",
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 128,
    steps: Annotated[int, typer.Option(help="Steps of the sweep at most.")] = 100,
    start_lr: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Last learning rate.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Model init and batch order.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Learning-rate range test: loss against an exponentially growing LR; suggests a max LR."""
    from speechcls.engine.lr_find import lr_find as sweep
    from speechcls.report.plots import lr_figure, save

    if not 0 < start_lr < end_lr:
        raise typer.BadParameter(f"need 0 < --start-lr < --end-lr, got {start_lr}, {end_lr}")
    if steps < 2:
        raise typer.BadParameter(f"--steps must be at least 2, got {steps}")
    cfg = _train_config(store=store, features=features, batch_size=batch_size, seed=seed, device=device)
    r = sweep(cfg, out, variant, start_lr, end_lr, steps)
    save(lr_figure(r["lr"], r["loss"], r["smoothed"], r["suggested_max_lr"]), out / "lr_find.png")
    typer.echo(
        f"{out}/lr_find.csv, lr_find.png: {len(r['lr'])} steps; lowest smoothed loss at lr {r['min_loss_lr']:.3g}; "
        f"suggested max LR {r['suggested_max_lr']:.3g}"
    )


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="A run folder (best.pt) or a .pt file.")],
    split: Annotated[str, typer.Option(help="test | validation | train.")] = "test",
    store: StoreOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Loss, accuracy, per-class accuracy, confusion matrix (CSV) and the most-confused pairs."""
    from speechcls.engine.evaluate import evaluate as run_evaluation
    from speechcls.engine.run_dir import RunDir
    from speechcls.report.console import print_evaluation

    r = run_evaluation(run, split, str(store) if store else None, device)
    csv_path = RunDir(run if run.is_dir() else run.parent).write_confusion(r["confusion"], r["classes"], split)
    print_evaluation(r, console())
    typer.echo(f"confusion matrix: {csv_path}")


@app.command()
@user_errors
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder (best.pt) or a .pt file.")],
    files: Annotated[list[Path], typer.Argument(metavar="FILE.wav...", help="Audio files to classify.")],
    top: Annotated[int, typer.Option(help="Labels per file.", min=1)] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Classify audio files with a trained checkpoint (the features it was trained on)."""
    import json

    from speechcls.infer.predict import predict as classify

    results = classify(checkpoint, files, top, device)
    if json_out:
        typer.echo(json.dumps(results, indent=1))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['file']}: error: {r['error']}", err=True)
            else:
                typer.echo(f"{r['file']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"]))
    if any("error" in r for r in results):  # the others were still predicted and printed
        raise typer.Exit(1)

"""`speechcls train`, `lr-find`, `evaluate`, `predict`: a store in, a run folder out, and its use."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls import config
from speechcls.cli.app import DeviceOpt, StoreOpt, VariantOpt, app, console, user_errors
from speechcls.cli.progress import RichProgress


def _train_config(**kw) -> "config.TrainConfig":
    kw["store"] = str(kw["store"]) if kw.get("store") else ""
    return config.TrainConfig(**kw).validate()


RecipeOpt = Annotated[
    Optional[str], typer.Option(help="A recipe's value (chapter | kws: the model's published one) unless set.")
]


def _opt(help_text: str, *names: str, panel: str = "Recipe (defaults: per --recipe)"):
    """An option whose default comes from --recipe: None until the user sets it."""
    return typer.Option(*names, help=help_text, show_default=False, rich_help_panel=panel)


AUGMENT = "Augmentation of the training split (defaults: per --recipe)"


@app.command()
@user_errors
def train(
    store: StoreOpt = None,
    variant: VariantOpt = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Run folder. \\[default: <store>-<time> under runs/]", show_default=False)
    ] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this folder.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in --out (its run files only; never another folder).")
    ] = False,
    recipe: Annotated[
        str,
        typer.Option(
            help="chapter (the book's: Adam, one-cycle, early stopping, raw features) | kws (the model's published "
            "keyword-spotting recipe: log-mel, augmentation, warm-up + cosine; see the README)."
        ),
    ] = "chapter",
    model: Annotated[
        str, typer.Option(help="seed (the chapter's CNN) | bcresnet-1|2|3|6|8 | matchboxnet-3x1x64.")
    ] = "seed",
    task: Annotated[
        str,
        typer.Option(
            help="words (every word folder a class) | kws12 (10 words + _silence_ + _unknown_) | keywords (set by "
            "--keywords)."
        ),
    ] = "words",
    keywords: Annotated[
        Optional[str],
        typer.Option(
            help='Your keywords as classes, e.g. "hey computer,lights on" (quote a label holding a comma): every '
            "other label becomes _unknown_ and _silence_ is cut from the noise, in kws12's proportions (each 10 % "
            "of the keywords' examples).",
            show_default=False,
        ),
    ] = None,
    noise_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Background-noise WAVs for _silence_ and noise mixing. \\[default: the tree's _background_noise_]",
            show_default=False,
        ),
    ] = None,
    features: Annotated[Optional[str], _opt("For a waveform store: the variant computed on the device.")] = None,
    n_mels: Annotated[Optional[int], _opt("Mel filters of features computed from a waveform store.")] = None,
    log: Annotated[Optional[bool], _opt("log(x + 1e-6) of power features.", "--log/--no-log")] = None,
    normalize: Annotated[
        Optional[bool],
        _opt("Standardize each frequency bin (training-split statistics).", "--normalize/--no-normalize"),
    ] = None,
    cmn: Annotated[
        Optional[bool],
        _opt(
            "Subtract each example's mean over time per frequency bin (channel mean normalization).", "--cmn/--no-cmn"
        ),
    ] = None,
    split_kind: Annotated[
        str, typer.Option("--split-kind", "--split", help="official (speaker-disjoint lists) | random (60/20/20).")
    ] = "official",
    split_seed: Annotated[int, typer.Option(help="Seed of the random split.")] = config.SPLIT_SEED,
    epochs: Annotated[Optional[int], _opt("Epochs (at most, with early stopping); the LR schedule spans them.")] = None,
    batch_size: Annotated[Optional[int], _opt("Examples per batch (per process under torchrun).")] = None,
    optimizer: Annotated[Optional[str], _opt("adam | adamw | sgd (momentum 0.9).")] = None,
    schedule: Annotated[Optional[str], _opt("onecycle | cosine (linear warm-up, then cosine to 0).")] = None,
    max_lr: Annotated[Optional[float], _opt("Peak learning rate.")] = None,
    warmup_epochs: Annotated[Optional[float], _opt("Cosine schedule: epochs of linear warm-up.")] = None,
    weight_decay: Annotated[Optional[float], _opt("Weight decay.")] = None,
    label_smoothing: Annotated[Optional[float], _opt("Label smoothing of the training loss.")] = None,
    early_stopping: Annotated[
        Optional[bool],
        _opt("Stop after --patience epochs without improvement.", "--early-stopping/--no-early-stopping"),
    ] = None,
    patience: Annotated[Optional[int], _opt("Epochs without a better validation score before stopping.")] = None,
    min_epochs: Annotated[int, typer.Option(help="Early stopping does not count before this epoch.")] = 0,
    best_by: Annotated[
        Optional[str],
        _opt(
            "The kept weights (best.pt): loss (lowest validation loss) | acc | last (the final weights) | ema (the "
            "weights' exponential average) | swa (the average of the last --swa-epochs epochs). Every rule is tested."
        ),
    ] = None,
    ema: Annotated[Optional[float], _opt("Decay of an average of the weights, validated and kept (0: off).")] = None,
    swa_epochs: Annotated[
        Optional[int], _opt("--best-by swa averages the weights of this many last epochs (0: a quarter of --epochs).")
    ] = None,
    speed: Annotated[
        Optional[float],
        _opt("Speed perturbation: each clip resampled by a factor in [1 - this, 1 + this].", panel=AUGMENT),
    ] = None,
    shift_ms: Annotated[
        Optional[float], _opt("Random time shift up to ± this (waveform stores).", panel=AUGMENT)
    ] = None,
    noise_prob: Annotated[Optional[float], _opt("Probability of mixing in background noise.", panel=AUGMENT)] = None,
    noise_volume: Annotated[Optional[float], _opt("The noise's volume, uniform in [0, this].", panel=AUGMENT)] = None,
    freq_masks: Annotated[Optional[int], _opt("SpecAugment frequency masks per example.", panel=AUGMENT)] = None,
    freq_width: Annotated[Optional[int], _opt("Their maximum width (bins).", panel=AUGMENT)] = None,
    time_masks: Annotated[Optional[int], _opt("SpecAugment time masks per example.", panel=AUGMENT)] = None,
    time_width: Annotated[Optional[int], _opt("Their maximum width (frames).", panel=AUGMENT)] = None,
    mixup: Annotated[Optional[float], _opt("Mixup's Beta(alpha, alpha) (0: off).", panel=AUGMENT)] = None,
    seed: Annotated[int, typer.Option(help="Model init, dropout, batch order and augmentation.")] = 0,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (CUDA autocast).")] = "fp32",
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    loader: Annotated[str, typer.Option(help="auto | device | host | stream.")] = "auto",
    workers: Annotated[int, typer.Option(help="Reader threads of the streaming loader.")] = 1,
    sync_bn: Annotated[
        bool, typer.Option("--sync-bn", help="Under torchrun: BatchNorm over the global batch.")
    ] = False,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Also write the epoch scalars to <run>/tensorboard/ (needs \\[tb]).")
    ] = False,
) -> None:
    """Train a model on a feature store, then test its best checkpoint.

    `--recipe chapter` (the default) is the book's: the seed CNN, Adam, one-cycle LR, early stopping.
    `--recipe kws` is the chosen model's published keyword-spotting recipe, e.g.
    `--recipe kws --model bcresnet-8 --task kws12` on a waveform store.
    Under `torchrun --nproc-per-node N -m speechcls train ...` it trains with DistributedDataParallel.
    Prints a header (store, task, model, device, loader, examples, recipe), a line per epoch and a summary,
    and keeps them in <run>/train.log."""
    from speechcls import dist
    from speechcls.engine.fit import fit
    from speechcls.engine.recipes import resolve
    from speechcls.engine.run_dir import RunDir, default_run_dir

    if resume is not None and overwrite:
        raise typer.BadParameter("--resume continues a run and --overwrite replaces one: choose one")
    words = ()
    if keywords is not None:
        from speechcls.data.tasks import parse_keywords

        words = parse_keywords(keywords)
        if task not in ("words", "keywords"):
            raise typer.BadParameter(f"--keywords is the keywords task, and --task {task} is another: choose one")
        task = "keywords"
    if tensorboard:
        from speechcls.report.tensorboard import check_available

        check_available()  # before training: a missing package never costs a run
    fixed = dict(
        store=str(store) if store else "", split_kind=split_kind, split_seed=split_seed, min_epochs=min_epochs,
        seed=seed, device=device, precision=precision, channels_last=channels_last, compile=compile, loader=loader,
        workers=workers, sync_bn=sync_bn, model=model, task=task, noise_dir=str(noise_dir) if noise_dir else "",
        keywords=words,
    )  # fmt: skip
    chosen = dict(
        features=features, n_mels=n_mels, log=log, normalize=normalize, cmn=cmn, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, schedule=schedule, max_lr=max_lr, warmup_epochs=warmup_epochs,
        weight_decay=weight_decay, label_smoothing=label_smoothing, early_stopping=early_stopping,
        patience=patience, best_by=best_by, ema=ema, swa_epochs=swa_epochs, speed=speed, shift_ms=shift_ms,
        noise_prob=noise_prob,
        noise_volume=noise_volume, freq_masks=freq_masks, freq_width=freq_width, time_masks=time_masks,
        time_width=time_width, mixup=mixup,
    )  # fmt: skip
    cfg = resolve(recipe, fixed | {k: v for k, v in chosen.items() if v is not None})
    if resume is not None:
        run_dir = resume
    else:
        from speechcls.store import find_store

        run_dir = out or default_run_dir(cfg.store or find_store(variant))
    if not dist.from_env().main:  # rank 0 alone shows progress, writes the run folder and reports
        fit(cfg, run_dir, variant, resume is not None, overwrite=overwrite, command=sys.argv)
        return
    scalars = None
    if tensorboard:
        from speechcls.report.tensorboard import EpochScalars

        scalars = EpochScalars(RunDir(run_dir).tensorboard)

    def on_end(row: dict) -> str:
        if scalars is not None:
            scalars.epoch(row)
        return _epoch_line(row)

    # the header, epoch lines and summary go to stderr (the bars' console) and to train.log; the header
    # comes from fit after it claimed the folder, so a refused --out gets no train.log
    t0 = time.perf_counter()
    bars = RichProgress(
        console(stderr=True), unit="samples", on_end=on_end, on_note=_header_lines, log=RunDir(run_dir).train_log
    )
    try:
        with bars as progress:
            metrics = fit(cfg, run_dir, variant, resume is not None, progress, overwrite, command=sys.argv)
    finally:
        if scalars is not None:
            scalars.close()
    lines = _summary_lines(metrics, Path(run_dir), time.perf_counter() - t0)
    typer.echo("\n".join(lines))  # stdout: the result, for a script to read
    with open(RunDir(run_dir).train_log, "a") as f:
        f.write("\n".join(lines) + "\n")


def _epoch_line(row: dict) -> str:
    t, v = row["train"], row["valid"]
    lr = f" lr {t['lr']:.2e}" if "lr" in t else ""
    return (
        f"epoch {t['epoch']}: train loss {t['loss']:.4f} acc {t['acc']:.4f}{lr} | valid loss {v['loss']:.4f} "
        f"acc {v['acc']:.4f} | {t.get('seconds', 0):.1f} s, {row['samples_per_s']:,.0f} samples/s"
        + ("  *best" if row["best"] else "")
    )


def _header_lines(kind: str, h: dict) -> list[str]:
    """fit's header (Setup.header) as the lines printed before the first epoch."""
    if kind != "header":
        return []
    if h["features"] != h["store_variant"]:  # a waveform store: the features are computed per batch
        features = f"{h['store_variant']} store, {h['features']} features computed on the device"
    else:
        features = f"{h['features']} features"
    device = h["device"] if h["world"] == 1 else f"{h['world']} processes, {h['device']} on rank 0"
    n = h["examples"]
    lines = [
        f"store: {h['store']} ({h['split_kind']} split kind; {features}, input {' x '.join(map(str, h['in_shape']))}"
        f" {h['input']})",
        f"model: {h['model']}, {h['parameters']:,} parameters, {h['macs'] / 1e6:,.1f} M multiply-adds per example; "
        f"device {device}, {h['loader']} loader, {h['precision']}",
        f"task: {h['task']}; examples: train {n.get('train', 0):,}, validation {n.get('validation', 0):,}, "
        f"test {n.get('test', 0):,} ({h['classes']} classes)",
        f"recipe {h['recipe']}: {h['optimizer']}, {_schedule(h)}; {h['epochs']} epochs"
        + (" at most" if h["early_stopping"] else "")
        + f", batch {h['batch_size']}, seed {h['seed']}; augmentation: {h['augment']}",
    ]
    if h["start_epoch"] > 1:
        lines.append(f"resuming {h['run']} at epoch {h['start_epoch']}")
    return lines


def _schedule(h: dict) -> str:
    if h["schedule"] == "onecycle":
        text = f"one-cycle max LR {h['max_lr']:g}"
    else:
        text = f"warm-up + cosine, max LR {h['max_lr']:g}"
    if h["early_stopping"]:
        text += f", patience {h['patience']}" + (f" (counted from epoch {h['min_epochs']})" if h["min_epochs"] else "")
    return text


_KEPT = {
    "loss": "lowest validation loss", "acc": "best validation accuracy", "last": "the final weights",
    "ema": "the weights' moving average", "swa": "the last epochs' average",
}  # fmt: skip


def _summary_lines(m: dict, run: Path, wall_s: float) -> list[str]:
    """What the run came to (metrics.json) and where to look next."""
    sps = m.get("train_samples_per_s")
    chance = 1 / len(m["classes"])
    lines = [
        f"summary: test loss {m['test_loss']:.4f} acc {m['test_acc']:.4f} (chance {chance:.4f}, "
        f"{len(m['classes'])} classes) of the kept weights ({_KEPT[m.get('kept_by', 'loss')]}), "
        + (f"final weights acc {final:.4f}; " if (final := m.get("test_acc_by", {}).get("last")) is not None else "")
        + f"best epoch {m['best_epoch']} of {m['epochs_run']}; wall time "
        f"{_duration(wall_s)}; "
        + (f"{sps:,.0f} train samples/s" if sps else "no epoch trained")
        + f"; {m['loader_mode']} loader on {m['device']}",
        f"run folder: {run}",
    ]
    if (run / "report.html").is_file():
        lines.append(f"open {run / 'report.html'}")
    else:
        lines.append(
            f"open {run / 'log.csv'} (curves) and {run / 'metrics.json'} (test results); "
            f"`speechcls report {run} --out {run / 'report.html'}` draws them"
        )
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


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
    overwrite: Annotated[
        bool, typer.Option(help="Replace an lr_find.csv or lr_find.png in --out that lr-find did not write.")
    ] = False,
) -> None:
    """Learning-rate range test: loss against an exponentially growing LR; suggests a max LR."""
    import math

    from speechcls.engine.lr_find import lr_find as sweep
    from speechcls.report import plots
    from speechcls.report.plots import lr_figure, save
    from speechcls.runtime import check_out, check_out_dir, marked

    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise typer.BadParameter(f"need 0 < --start-lr < --end-lr, both finite, got {start_lr}, {end_lr}")
    if steps < 2:
        raise typer.BadParameter(f"--steps must be at least 2, got {steps}")
    cfg = _train_config(store=store, features=features, batch_size=batch_size, seed=seed, device=device)
    # before the sweep: the folder, and the two files it writes there (its own earlier ones are rewritten)
    check_out_dir(out, command="lr-find")
    check_out(out / "lr_find.csv", own=marked(b"lr,loss", at_start=True), overwrite=overwrite, command="lr-find")
    plots.check_out(out / "lr_find.png", overwrite=overwrite, command="lr-find")
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
    checkpoint: Annotated[
        Path, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="A run folder (best.pt) or a .pt file.")
    ],
    files: Annotated[list[Path], typer.Argument(metavar="FILE.wav...", help="Audio files to classify.")],
    top: Annotated[int, typer.Option(help="Labels per file.", min=1)] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Classify audio files with a trained checkpoint (the features it was trained on). A file in a folder
    named after one of the classes (a tree's <word>/<clip>.wav) shows that true label and hit or miss."""
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
                truth = "" if r["true"] is None else f"true {r['true']}, {'hit' if r['hit'] else 'miss'} | "
                typer.echo(f"{r['file']}: {truth}" + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"]))
    if any("error" in r for r in results):  # the others were still predicted and printed
        raise typer.Exit(1)

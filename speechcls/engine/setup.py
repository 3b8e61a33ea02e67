"""What a run trains on: the store's loaders for the run's task, the on-device input pipeline (features
from a waveform store, log, standardization, augmentation of the training split) and the model.

Shapes: the loader yields (B, L) waveforms or (B, C, F, T) features; the pipeline turns them into the
model's input (B, C, F', T) where F' follows the run's features (e.g. 40 log-mel bins from a waveform
store). `Setup.meta()` is what every checkpoint carries to rebuild exactly this: the task and its
classes, the feature parameters, the input transform (with the training statistics) and the model.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, replace

import torch

from speechcls import dist
from speechcls.audio.frontend import InputSpec, check_log
from speechcls.config import FeatureParams, TrainConfig
from speechcls.loader import FeatureLoader, NeedsWaveformStore
from speechcls.models import build_model
from speechcls.runtime import resolve_device, seed_everything
from speechcls.store.location import Location, to_location
from speechcls.store.reader import find_store


@dataclass
class Setup:
    cfg: TrainConfig
    store: Location
    device: torch.device
    loaders: dict[str, FeatureLoader]
    classes: list[str]
    params: FeatureParams  # the features the model's input is made from (computed on the device from waveforms)
    input_spec: InputSpec  # log / standardization between the features and the model
    model: torch.nn.Module
    rank: dist.Rank
    complexity: dict  # parameters and multiply-adds of one example's forward pass
    noise: dict  # the background recordings used: folder, files, fingerprint (None: none used)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.params.shape

    def meta(self) -> dict:
        """What every checkpoint of the run holds besides its state: enough to rebuild the model and its input."""
        return {
            "config": asdict(self.cfg) | {"store": str(self.store)},
            "task": self.cfg.task,
            "classes": self.classes,
            "params": asdict(self.params),
            "input": self.input_spec.to_dict(),
            "in_shape": list(self.in_shape),
            "n_classes": len(self.classes),
            "model_name": self.cfg.model,
            "model_cfg": model_settings(self.cfg),
            "complexity": self.complexity,
            "noise": self.noise,
        }

    def resolved(self) -> dict:
        """What "auto" and "" became: the device, the training loader's mode, the features the model sees."""
        return {
            "device": str(self.device),  # rank 0's under torchrun ("world" says how many)
            "loader": self.loaders["train"].mode if "train" in self.loaders else None,
            "features": self.params.variant,
            "n_mels": self.params.n_mels if self.params.variant == "mel" else None,
            "classes": self.classes,
            "noise": self.noise,
        } | self.complexity

    def header(self, start_epoch: int) -> dict:
        """What the run trains on what and how, for the front end to show before the first epoch."""
        train, cfg = self.loaders["train"], self.cfg
        return self.resolved() | {
            "store": str(self.store),
            "split_kind": cfg.split_kind,
            "task": f"keywords ({', '.join(cfg.keywords)})" if cfg.keywords else cfg.task,
            "recipe": cfg.recipe,
            "store_variant": train.store_params.variant,
            "in_shape": list(self.in_shape),
            "input": " ".join(
                w for w, on in (("log", cfg.log), ("standardized", cfg.normalize), ("mean-normalized", cfg.cmn)) if on
            )
            or "raw",
            "augment": augment_summary(cfg),
            "model": cfg.model,
            "examples": {split: loader.n for split, loader in self.loaders.items()},
            "classes": len(self.classes),
            "epochs": cfg.epochs,
            "min_epochs": cfg.min_epochs,
            "early_stopping": cfg.early_stopping,
            "start_epoch": start_epoch,  # > 1 on a resume
            "steps_left": len(train) * max(cfg.epochs - start_epoch + 1, 0),  # this rank's, for an overall ETA
            "batch_size": cfg.batch_size,
            "world": self.rank.world,
            "optimizer": {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[cfg.optimizer],
            "schedule": cfg.schedule,
            "max_lr": cfg.max_lr,
            "patience": cfg.patience,
            "precision": cfg.precision,
            "seed": cfg.seed,
        }


def model_settings(cfg: TrainConfig) -> dict:
    """The model's own settings from the run's config: the seed CNN's dropouts; the compact models use
    their published ones."""
    return {"dropout2d": cfg.dropout2d, "dropout": cfg.dropout} if cfg.model in ("seed", "seed_cnn") else {}


def augment_summary(cfg: TrainConfig) -> str:
    """One line: which augmentations the training split gets."""
    parts = []
    if cfg.speed:
        parts.append(f"speed ×{1 - cfg.speed:g}–{1 + cfg.speed:g}")
    if cfg.shift_ms:
        parts.append(f"shift ±{cfg.shift_ms:g} ms")
    if cfg.noise_prob:
        parts.append(f"noise p={cfg.noise_prob:g} vol≤{cfg.noise_volume:g}")
    if cfg.freq_masks and cfg.freq_width:
        parts.append(f"{cfg.freq_masks} freq masks ≤{cfg.freq_width}")
    if cfg.time_masks and cfg.time_width:
        parts.append(f"{cfg.time_masks} time masks ≤{cfg.time_width}")
    if cfg.mixup:
        parts.append(f"mixup {cfg.mixup:g}")
    return ", ".join(parts) or "none"


def make_loader(
    cfg: TrainConfig,
    store: Location,
    split: str,
    device: torch.device,
    mode: str | None = None,
    rank: dist.Rank = dist.Rank(),
) -> FeatureLoader:
    return FeatureLoader(store, split, cfg.loader_config(split, str(device), mode), rank)


def input_params(cfg: TrainConfig, loader: FeatureLoader) -> FeatureParams:
    """The features the model's input is made from: the store's, or for a waveform store the variant of
    --features (with --n-mels filters) computed on the device."""
    stored = loader.store_params
    if stored.variant == "waveform":
        variant = cfg.features or "spectrogram"
        return FeatureParams(
            variant, n_mels=cfg.n_mels or FeatureParams.n_mels, sample_rate=stored.sample_rate,
            clip_samples=stored.clip_samples,
        ).validate()  # fmt: skip
    if cfg.n_mels and (stored.variant != "mel" or stored.n_mels != cfg.n_mels):
        have = f"{stored.n_mels} mel filters" if stored.variant == "mel" else f"{stored.variant} features"
        raise ValueError(
            f"--n-mels {cfg.n_mels}: {loader.loc} holds {have}. Featurize once with --variant waveform and train "
            f"with --features mel --n-mels {cfg.n_mels} (any filter count from one store), or featurize "
            f"--variant mel --n-mels {cfg.n_mels}"
        )
    return stored


def check_augment(cfg: TrainConfig, loader: FeatureLoader) -> None:
    """Waveform augmentations need waveforms: refuse them on a feature store, saying what to do."""
    if loader.store_params.variant != "waveform" and (cfg.speed or cfg.shift_ms or cfg.noise_prob):
        raise ValueError(
            f"--speed {cfg.speed:g} / --shift-ms {cfg.shift_ms:g} / --noise-prob {cfg.noise_prob:g} resample, "
            f"shift and mix waveforms, and {loader.loc} holds {loader.store_params.variant} features. Featurize "
            "with --variant waveform (features are then computed on the device per batch), or pass --speed 0 "
            "--shift-ms 0 --noise-prob 0"
        )


def training_noise(cfg: TrainConfig, loader: FeatureLoader) -> tuple[list[torch.Tensor] | None, dict | None]:
    """The training region of the background recordings, for noise mixing (None when not mixing), and
    what was used (folder, files, fingerprint) for the run's record: the loader's for _silence_, else the
    mixed recordings'."""
    from speechcls.data import noise as noise_mod

    if not cfg.noise_prob:
        return None, loader.noise
    attrs = dict(loader.group.attrs)
    folder = noise_mod.noise_source(attrs, cfg.noise_dir)
    if folder is None:
        raise ValueError(
            f"--noise-prob {cfg.noise_prob:g} mixes background noise, and none was found ("
            f"{noise_mod.looked_at(attrs)}): pass --noise-dir FOLDER (WAV recordings of noise) or --noise-prob 0"
        )
    params = loader.store_params
    recordings = noise_mod.load_noise(folder, params.sample_rate, params.clip_samples)
    # the training region only: validation and test silence are cut from the others
    regions = [noise_mod.split_region(r, "train") for r in recordings]
    region = [torch.from_numpy(r.copy()) for r in regions if len(r) >= params.clip_samples]
    if not region:
        raise ValueError(f"the noise recordings in {folder} are too short for one clip in their training 80 %")
    return region, loader.noise or noise_mod.noise_fingerprint(folder)


def build(
    cfg: TrainConfig,
    variant: str | None = None,
    splits=("train", "validation", "test"),
    rank: dist.Rank = dist.Rank(),
    input_spec: InputSpec | None = None,
) -> Setup:
    """Store, loaders (this rank's shards) with their input pipelines, and a freshly initialised model
    (seeded) for `cfg`. `input_spec`: the one saved in a checkpoint (resume, evaluate); else it is made
    from cfg, with the standardization statistics taken over the training split."""
    from speechcls.audio.pipeline import Pipeline
    from speechcls.models.complexity import complexity

    cfg.validate()
    device = torch.device(dist.local_device(resolve_device(cfg.device), rank))  # one GPU per process
    if cfg.precision != "fp32" and device.type != "cuda":
        raise ValueError(f"--precision {cfg.precision} needs CUDA (autocast); use fp32 on the CPU")
    store = to_location(cfg.store) if cfg.store else find_store(variant)
    try:
        loaders = {s: make_loader(cfg, store, s, device, rank=rank) for s in splits}
    except NeedsWaveformStore as e:
        if cfg.recipe != "kws":
            raise
        raise NeedsWaveformStore(  # the recipe chose the features: say so
            f"{e}. --recipe kws computes log-mel on the device from a waveform store: featurize --variant "
            "waveform and train from it, or pass --features with the store's variant"
        ) from None
    first = next(iter(loaders.values()))
    params = input_params(cfg, first)
    check_log(params.variant, cfg.log)
    if "train" in loaders:
        check_augment(cfg, first)
    noise, noise_record = training_noise(cfg, first) if "train" in loaders else (None, None)
    _warn_absent_classes(cfg, store, loaders, rank)
    extractor = None
    if first.store_params.variant == "waveform":
        from speechcls.audio.features import FeatureExtractor

        extractor = FeatureExtractor(params)
    if input_spec is None:
        input_spec = InputSpec(log=cfg.log)
        if cfg.normalize:
            plain = Pipeline(extractor, input_spec).to(device)
            mean, std = standardization(loaders["train"], plain, rank)
            input_spec = replace(input_spec, mean=_nested(mean), std=_nested(std))
        input_spec = replace(input_spec, cmn=cfg.cmn)  # after the statistics: they are of the features before it
    plain = Pipeline(extractor, input_spec).to(device)
    for split, loader in loaders.items():
        loader.pipeline = plain
    if "train" in loaders:
        augment = augment_config(cfg)
        if augment is not None:
            loaders["train"].pipeline = Pipeline(extractor, input_spec, augment, noise, seed=cfg.seed).to(device)
    seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(cfg.model, params.shape, len(first.classes), **model_settings(cfg))
    cost = complexity(copy.deepcopy(model), params.shape)  # an eval forward on a copy: no RNG drawn, no BN update
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rank.distributed:
        torch.manual_seed(cfg.seed + rank.rank)  # each rank its own dropout masks
        if cfg.sync_bn:
            model = dist.convert_sync_batchnorm(model, device)
    return Setup(cfg, store, device, loaders, first.classes, params, input_spec, model, rank, cost, noise_record)


def augment_config(cfg: TrainConfig):
    """The training split's augmentation (None: the chapter's, none at all)."""
    from speechcls.audio.augment import AugmentConfig

    aug = AugmentConfig(
        speed=cfg.speed, shift_ms=cfg.shift_ms, noise_prob=cfg.noise_prob, noise_volume=cfg.noise_volume,
        freq_masks=cfg.freq_masks, freq_width=cfg.freq_width, time_masks=cfg.time_masks, time_width=cfg.time_width,
        mixup=cfg.mixup,
    )  # fmt: skip
    return aug.validate() if augment_summary(cfg) != "none" else None


def _nested(x) -> tuple:
    return tuple(tuple(row) for row in x)


@torch.no_grad()
def standardization(loader: FeatureLoader, pipeline, rank: dist.Rank) -> tuple[list, list]:
    """Per (channel, frequency bin) mean and standard deviation of the (log) features over the training
    split, every example and frame, without augmentation; under torchrun the ranks' sums are all-reduced,
    so every rank gets the statistics of the whole split."""
    from speechcls.audio.frontend import finish_stats, stats_sums

    saved = loader.pipeline
    loader.pipeline = pipeline
    loader.set_epoch(0)
    try:
        sums = stats_sums(x for x, _ in loader)
    finally:
        loader.pipeline = saved
    total = dist.all_reduce_sum(rank, sums)
    return finish_stats(total)


def _warn_absent_classes(cfg: TrainConfig, store: Location, loaders: dict, rank: dist.Rank) -> None:
    """Said before training: a class without a training clip is never learned."""
    if "train" not in loaders or not rank.main:
        return
    train = loaders["train"]
    seen = set(train.labels.tolist())
    if absent := [name for i, name in enumerate(train.classes) if i not in seen]:
        warnings.warn(
            f"no training clips for class {', '.join(map(repr, absent))} in the {cfg.split_kind} split of "
            f"{store}: the model cannot learn it; add clips to the tree (and featurize again), or try "
            "--split-kind random",
            stacklevel=3,
        )


def data_parallel(s: Setup) -> torch.nn.Module:
    """The module to step: DDP over the ranks (gradients averaged in buckets during backward)."""
    if not s.rank.distributed:
        return s.model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)


def eval_loader(ckpt: dict, split: str, device: torch.device, store: str | None = None) -> FeatureLoader:
    """A loader of `split` serving what the checkpoint's model was trained on: its task and classes, its
    features and input transform (no augmentation). `store`: another store with the same classes and
    features (default: the run's)."""
    from speechcls.audio.pipeline import Pipeline

    cfg = replace(TrainConfig(**ckpt["config"]), store=store or ckpt["config"]["store"], device=str(device))
    cfg = replace(cfg, loader="auto")
    loader = make_loader(cfg, to_location(cfg.store), split, device)
    if loader.classes != ckpt["classes"]:
        raise ValueError(
            f"{cfg.store} gives other classes for the {cfg.task} task than the checkpoint was trained on: "
            f"{loader.classes} vs {ckpt['classes']}"
        )
    params = input_params(cfg, loader)
    trained = FeatureParams(**ckpt["params"])
    if params != trained:
        raise ValueError(f"{cfg.store} serves {params}, and the checkpoint was trained on {trained}")
    extractor = None
    if loader.store_params.variant == "waveform":
        from speechcls.audio.features import FeatureExtractor

        extractor = FeatureExtractor(params)
    loader.pipeline = Pipeline(extractor, InputSpec.from_dict(ckpt.get("input"))).to(device)
    return loader

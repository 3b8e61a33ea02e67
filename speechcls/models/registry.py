"""Models by name (timm's create_model): a run records the name and its settings, so any checkpoint
can be rebuilt whatever model trained it."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}  # an older name -> the name it stands for (checkpoints keep the name they were saved as)
_PUBLISHED: dict[str, dict[str, Any]] = {}


def register(name: str, *, aliases: tuple[str, ...] = (), published: dict[str, Any] | None = None):
    """Decorator: `@register("seed", aliases=("seed_cnn",))` on a builder `(in_shape, n_classes, **cfg) ->
    nn.Module`. `aliases` also build it (an old name in old checkpoints) but are not listed by `names()`;
    `published` is the input its paper trained on (see `published_input`)."""

    def add(builder: Callable[..., nn.Module]):
        for n in (name, *aliases):
            if n in _MODELS or n in _ALIASES:
                raise ValueError(f"model {n!r} is registered twice")
        _MODELS[name] = builder
        _ALIASES.update(dict.fromkeys(aliases, name))
        _PUBLISHED[name] = dict(published or {})
        return builder

    return add


def names() -> list[str]:
    """Every model once, by its current name (aliases left out)."""
    return sorted(_MODELS)


def canonical(name: str) -> str:
    """The current name of `name` (itself, or what an alias stands for)."""
    name = _ALIASES.get(name, name)
    if name not in _MODELS:
        also: dict[str, list[str]] = {}
        for alias, to in sorted(_ALIASES.items()):
            also.setdefault(to, []).append(alias)
        listed = ", ".join(n + (f" (also {', '.join(also[n])})" if n in also else "") for n in names())
        raise ValueError(f"unknown model {name!r}: choose one of {listed}")
    return name


def settings(name: str) -> dict[str, Any]:
    """The keyword settings of model `name` and their defaults, e.g. {"dropout2d": 0.1} for a BC-ResNet:
    what `build_model` accepts as `cfg` (and what a checkpoint should record)."""
    params = inspect.signature(_MODELS[canonical(name)]).parameters.values()
    return {p.name: p.default for p in params if p.default is not p.empty}


def published_input(name: str) -> dict[str, Any]:
    """The features the model's paper trained on, as FeatureParams / TrainConfig field names (`variant`,
    `n_mels`, `n_fft`, `win_length`, `hop_length`, `log`) plus `source` (where they come from) and `note`
    where speechcls cannot compute them exactly; {} for the chapter's CNN (the defaults are its input)."""
    return dict(_PUBLISHED[canonical(name)])


def build_model(name: str, in_shape: tuple[int, ...], n_classes: int, **cfg) -> nn.Module:
    """The model `name` for inputs of `in_shape` (C, F, T) and `n_classes` outputs; `cfg` its settings.
    An input the model cannot take is refused here, before any training."""
    builder = _MODELS[canonical(name)]
    if unknown := sorted(set(cfg) - set(settings(name))):
        raise ValueError(
            f"model {name!r} has no setting {', '.join(map(repr, unknown))}: its settings are "
            f"{', '.join(settings(name)) or 'none'}"
        )
    if len(in_shape) != 3 or not all(int(n) == n and n >= 1 for n in in_shape):
        raise ValueError(
            f"in_shape must be (channels, frequency bins, frames), each at least 1, got {tuple(in_shape)}; a model "
            "takes spectrogram, mel or complex features (a waveform store needs --features)"
        )
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    return builder(tuple(int(n) for n in in_shape), n_classes, **cfg)

"""Models by name (timm's create_model): a run records the name and its settings, so any checkpoint
can be rebuilt whatever model trained it."""

from __future__ import annotations

from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator: `@register("seed_cnn")` on a builder `(in_shape, n_classes, **cfg) -> nn.Module`."""

    def add(builder: Callable[..., nn.Module]):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = builder
        return builder

    return add


def names() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, in_shape: tuple[int, ...], n_classes: int, **cfg) -> nn.Module:
    """The model `name` for inputs of `in_shape` (C, F, T) and `n_classes` outputs; `cfg` its settings.
    An input the model cannot take is refused here, before any training."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(names())}")
    return _MODELS[name](in_shape, n_classes, **cfg)

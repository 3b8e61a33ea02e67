"""Models: a registry (build_model by name) and one file per model."""

from speechcls.models import seed_cnn  # noqa: F401  (registers "seed_cnn")
from speechcls.models.registry import build_model, names, register

__all__ = ["build_model", "names", "register"]

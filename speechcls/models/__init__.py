"""Models: a registry (build_model by name) and one file per model."""

from speechcls.models import bcresnet, matchboxnet, seed_cnn  # noqa: F401  (each registers its models)
from speechcls.models.complexity import complexity
from speechcls.models.registry import build_model, canonical, names, published_input, register, settings

__all__ = ["build_model", "canonical", "complexity", "names", "published_input", "register", "settings"]

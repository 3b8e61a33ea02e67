"""The one save/load pair of checkpoints (best.pt, last.pt): the only code that knows their contents.

A checkpoint is a dict of tensors and plain types only (RNG states included), so it is read with
`torch.load(weights_only=True)`: loading never runs code from the file. It holds the model's registry
name and settings, the input shape, the classes, the feature parameters and the run's config, so the
model is rebuilt whatever trained it (nanoGPT keeps its model config in the checkpoint the same way).
Written to a temporary file and renamed (timm's CheckpointSaver): a kill never leaves half a file.

Formats: 2 (this one). 1 (before the model registry): best.pt loads (it held plain types and the seed
CNN's weights); a format-1 last.pt held numpy RNG objects that a weights-only load refuses, so resuming
such a run is refused with a message naming the format.
"""

from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from speechcls.runtime import atomic_write

FORMAT = 2


def rng_state() -> dict:
    """Python's, numpy's, torch's (and CUDA's) generator states as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, state: dict) -> Path:
    """`state` (tensors and plain types) with the format version, atomically. Serialized in memory and
    written by Python, so a full disk is an OSError naming the file (torch's own file writer turns it
    into a RuntimeError without the errno: "unexpected pos")."""
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint file, weights only (no code runs from the file), brought to the current format.
    ValueError naming the file for anything that is not a speechcls checkpoint it can read."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint; pass a run folder (with best.pt) or a .pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(e))
        if found is None:  # not a pickle at all: garbage or damaged bytes
            raise ValueError(f"{path}: not a checkpoint, or a damaged one (it does not unpickle)") from None
        raise ValueError(
            f"{path}: refused: the file holds a {found[1]} object; speechcls unpickles only tensors and plain values "
            "(anything else could run code). A format-1 last.pt (speechcls before the model registry) holds numpy "
            "RNG objects: its run cannot be resumed, its best.pt still loads."
        ) from None
    except (EOFError, RuntimeError) as e:  # empty or truncated: torch's zip reader or the unpickler ran out
        raise ValueError(f"{path}: not a checkpoint, or a truncated one ({type(e).__name__}: {e})") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "format" not in ckpt:
        raise ValueError(f"{path}: not a speechcls checkpoint (no model state or format version)")
    version = ckpt["format"]
    if version not in (1, FORMAT):
        raise ValueError(f"{path}: checkpoint format {version}, this speechcls reads formats 1 and {FORMAT}")
    try:
        ckpt = _from_format_1(ckpt) if version == 1 else ckpt
        check(ckpt)
    except (KeyError, TypeError, ValueError) as e:  # a key missing, a value of the wrong type, an impossible one
        what = f"no {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(
            f"{path}: a damaged or edited checkpoint, refused before use: {what}. Use another checkpoint of the "
            "run (best.pt, last.pt) or train again"
        ) from None
    return ckpt


def check(ckpt: dict) -> None:
    """What every reader of a checkpoint relies on, checked once on load so that every command (evaluate,
    predict, export, listen, train --resume) refuses a damaged or edited file the same way, before any work:
    feature parameters that featurize accepts (a hop of 0 would divide by zero later), the input shape
    they give, classes (distinct names), a model name and settings, and finite weights (a NaN weight makes
    every prediction NaN: evaluate would print loss nan, export would write a model that answers nothing)."""
    from speechcls.config import FeatureParams

    if not isinstance(ckpt["params"], dict):
        raise TypeError(f"the feature parameters are {type(ckpt['params']).__name__}, not a table of settings")
    try:
        params = FeatureParams(**ckpt["params"]).validate()
    except TypeError as e:  # an unknown field
        raise TypeError(f"the feature parameters hold a setting speechcls does not know ({e})") from None
    except ValueError as e:
        raise ValueError(f"impossible feature parameters: {e}") from None
    if params.variant != "waveform" and list(ckpt["in_shape"]) != list(params.shape):
        raise ValueError(f"in_shape {list(ckpt['in_shape'])} is not the shape {list(params.shape)} its parameters give")
    classes = ckpt["classes"]
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"classes {classes!r} is not a list of class names")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes!r} names a class twice")
    if not isinstance(ckpt["model_name"], str) or not isinstance(ckpt["model_cfg"], dict):
        raise TypeError("the model's name or settings are of the wrong type")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(t, torch.Tensor) for t in ckpt["model"].values()):
        raise TypeError("the model state is not a table of tensors")
    for key, t in ckpt["model"].items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"the weights are not finite: {key} holds {bad} NaN or infinite value(s)")


def _from_format_1(ckpt: dict) -> dict:
    """Format 1 -> 2: the seed CNN was the only model; the split kind was called "split"."""
    from speechcls.config import FeatureParams

    cfg = dict(ckpt["config"])
    if "split" in cfg:
        cfg["split_kind"] = cfg.pop("split")
    in_shape = list(FeatureParams(**ckpt["params"]).shape)
    model_cfg = {"dropout2d": cfg.get("dropout2d", 0.2), "dropout": cfg.get("dropout", 0.5)}
    return {
        **ckpt,
        "config": cfg,
        "model_name": "seed_cnn",
        "model_cfg": model_cfg,
        "in_shape": in_shape,
        "format": FORMAT,
    }


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint file, or of a run folder (its best.pt), in eval mode, and the checkpoint."""
    from speechcls.models import build_model

    path = Path(path)
    path = path / "best.pt" if path.is_dir() else path
    ckpt = load(path, map_location=device)
    try:
        model = build_model(ckpt["model_name"], tuple(ckpt["in_shape"]), len(ckpt["classes"]), **ckpt["model_cfg"])
    except (TypeError, ValueError) as e:  # an unknown model or setting, an input it cannot take
        raise ValueError(f"{path}: the checkpoint's model cannot be built: {e}") from None
    if mismatch := state_mismatch(model.state_dict(), ckpt["model"]):
        raise ValueError(
            f"{path}: the weights do not fit the model the checkpoint names ({ckpt['model_name']}, input "
            f"{tuple(ckpt['in_shape'])}, {len(ckpt['classes'])} classes): {mismatch}; a damaged or edited checkpoint"
        )
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def state_mismatch(expected: dict, found: dict) -> str | None:
    """How a checkpoint's tensors differ from a model's state_dict, in a line (None: they fit): torch's own
    message is a paragraph per tensor."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = []
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{k} has shape {tuple(found[k].shape)}, the model's is {tuple(expected[k].shape)}"
            + (f" (and {len(reshaped) - 1} more)" if len(reshaped) > 1 else "")
        )
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{what}: {', '.join(keys[:3])}" + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""))
    return "; ".join(parts) or None

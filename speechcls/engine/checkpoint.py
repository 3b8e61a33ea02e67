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
    if version == 1:
        return _from_format_1(ckpt)
    if version != FORMAT:
        raise ValueError(f"{path}: checkpoint format {version}, this speechcls reads formats 1 and {FORMAT}")
    return ckpt


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
    ckpt = load(path / "best.pt" if path.is_dir() else path, map_location=device)
    model = build_model(ckpt["model_name"], tuple(ckpt["in_shape"]), len(ckpt["classes"]), **ckpt["model_cfg"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt

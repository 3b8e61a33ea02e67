"""`speechcls predict`: audio files -> the features a checkpoint was trained on -> top-k labels."""

from __future__ import annotations

from pathlib import Path

import torch

from speechcls.config import FeatureParams
from speechcls.engine.checkpoint import load_model
from speechcls.runtime import resolve_device

# featurize skips such a clip with the same words (featurize.py's _refuse_nonfinite)
_NONFINITE_FEATURES = "features are not finite (peak sample {peak:.3g}: a float file out of [-1, 1]?)"


def predict(checkpoint: Path, files: list[Path], top: int = 3, device: str = "auto") -> list[dict]:
    """Top-k labels with probabilities for each file, computed with the features the checkpoint was
    trained on; an unreadable file, or one whose features or probabilities are not finite, gets an error
    entry and the others are still predicted. Each predicted entry's "true" is the file's label where its folder
    names one of the checkpoint's classes (a tree's <word>/<clip>.wav), else None; "hit" says whether the
    top label is that one (None where the label is not known)."""
    from speechcls.audio.decode import BadAudio, load_clip
    from speechcls.audio.features import FeatureExtractor

    dev = torch.device(resolve_device(device))
    model, ckpt = load_model(checkpoint, dev)
    params = FeatureParams(**ckpt["params"])
    extractor = FeatureExtractor(params).to(dev)
    classes = ckpt["classes"]
    out = []
    for f in files:
        true = Path(f).parent.name if Path(f).parent.name in classes else None
        try:
            audio, _ = load_clip(Path(f), params.sample_rate, params.clip_samples)
        except BadAudio as e:
            out.append({"file": str(f), "error": f"not readable audio: {e}"})
            continue
        except OSError as e:
            out.append({"file": str(f), "error": str(e)})
            continue
        with torch.no_grad():
            x = extractor(torch.from_numpy(audio).unsqueeze(0).to(dev)).float()
            if not torch.isfinite(x).all():
                out.append({"file": str(f), "error": _NONFINITE_FEATURES.format(peak=float(abs(audio).max()))})
                continue
            probs = torch.softmax(model(x).float(), dim=1)[0]
        if not torch.isfinite(probs).all():
            out.append({"file": str(f), "error": "the model's probabilities are not finite (NaN or inf)"})
            continue
        p, i = probs.topk(min(top, len(classes)))
        top_k = [{"label": classes[j], "prob": float(q)} for q, j in zip(p.tolist(), i.tolist())]
        hit = None if true is None else top_k[0]["label"] == true
        out.append({"file": str(f), "true": true, "hit": hit, "top": top_k})
    return out

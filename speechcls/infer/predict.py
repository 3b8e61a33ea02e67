"""A run's model for inference, and `speechcls predict`: audio files -> the features a checkpoint was
trained on -> the run's input transform -> top-k labels.

The two modules here are what export writes to a file and what listen slides over a recording, so
predict, export and listen compute one thing: `Classifier` (stored features -> probabilities: the
run's InputTransform, the model, softmax) and `EndToEnd` (a 16 kHz waveform -> probabilities: featurize's
own FeatureExtractor, then the Classifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from speechcls.audio.frontend import InputSpec, InputTransform
from speechcls.config import FeatureParams
from speechcls.engine.checkpoint import load_model
from speechcls.runtime import resolve_device

# featurize skips such a clip with the same words (speechcls/featurize/stages.py's _refuse_nonfinite)
_NONFINITE_FEATURES = "features are not finite (peak sample {peak:.3g}: a float file out of [-1, 1]?)"
DEFAULT_TASK = "words"  # a run from before tasks existed: every word folder a class


class Classifier(torch.nn.Module):
    """(B, C, F, T) features as featurize stores them -> (B, K) class probabilities: the run's input
    transform (log, standardization; identity for the chapter's recipe), the model, softmax."""

    def __init__(self, model: torch.nn.Module, spec: InputSpec = InputSpec()):
        super().__init__()
        self.input = InputTransform(spec)
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(self.input(features)), dim=1)


class EndToEnd(torch.nn.Module):
    """(B, clip_samples) float32 waveforms at the run's sample rate -> (B, K) class probabilities:
    torchaudio's transform of the run's feature variant (featurize's FeatureExtractor), then the Classifier."""

    def __init__(self, params: FeatureParams, classifier: Classifier):
        super().__init__()
        from speechcls.audio.features import FeatureExtractor

        self.features = FeatureExtractor(params)
        self.classifier = classifier

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(wave))


@dataclass
class RunModel:
    """What inference needs of a checkpoint: the Classifier (in eval mode, on its device) and what the
    model sees and says."""

    classifier: Classifier
    ckpt: dict
    classes: list[str]
    params: FeatureParams  # the features the model sees (computed on the device for a waveform store)
    spec: InputSpec  # the run's input transform (identity before log features existed)
    task: str  # words | kws12

    def end_to_end(self) -> EndToEnd:
        device = next(self.classifier.parameters()).device
        return EndToEnd(self.params, self.classifier).to(device).eval()


def run_parts(ckpt: dict) -> tuple[FeatureParams, InputSpec, str]:
    """The feature parameters, input transform and task a checkpoint records (older runs: identity, words)."""
    params = FeatureParams(**ckpt["params"])
    if params.variant == "waveform":  # the trainer records the variant it computed, never the waveform
        raise ValueError(
            "the checkpoint's features are the raw waveform; a model trained from a waveform store records the "
            "variant it computed (spectrogram, mel or complex): is this a speechcls checkpoint?"
        )
    return params, InputSpec.from_dict(ckpt.get("input")), ckpt.get("task") or DEFAULT_TASK


def load_run(path: str | Path, device: str = "cpu") -> RunModel:
    """A run folder (its best.pt) or a checkpoint file, ready for inference on `device` ("auto" resolves)."""
    dev = torch.device(resolve_device(device))
    model, ckpt = load_model(path, dev)
    params, spec, task = run_parts(ckpt)
    classifier = Classifier(model, spec).to(dev).eval()
    return RunModel(classifier, ckpt, list(ckpt["classes"]), params, spec, task)


def predict(checkpoint: Path, files: list[Path], top: int = 3, device: str = "auto") -> list[dict]:
    """Top-k labels with probabilities for each file, computed with the features the checkpoint was
    trained on and the run's input transform (log, standardization), as in training; an unreadable file, or
    one whose features or probabilities are not finite, gets an error entry and the others are still
    predicted. Each predicted entry's "true" is the file's label where its folder names one of the
    checkpoint's classes (a tree's <word>/<clip>.wav), else None; "hit" says whether the top label is that
    one (None where the label is not known)."""
    from speechcls.audio.decode import BadAudio, load_clip
    from speechcls.audio.features import FeatureExtractor

    dev = torch.device(resolve_device(device))
    model, ckpt = load_model(checkpoint, dev)
    params, spec, _ = run_parts(ckpt)
    extractor = FeatureExtractor(params).to(dev)
    to_input = InputTransform(spec).to(dev)
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
            probs = torch.softmax(model(to_input(x)).float(), dim=1)[0]
        if not torch.isfinite(probs).all():
            out.append({"file": str(f), "error": "the model's probabilities are not finite (NaN or inf)"})
            continue
        p, i = probs.topk(min(top, len(classes)))
        top_k = [{"label": classes[j], "prob": float(q)} for q, j in zip(p.tolist(), i.tolist())]
        hit = None if true is None else top_k[0]["label"] == true
        out.append({"file": str(f), "true": true, "hit": hit, "top": top_k})
    return out

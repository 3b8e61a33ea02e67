"""What listen and stream eval classify windows with: a Scorer turns windows of a recording, (B,
clip_samples) float32 at the model's sample_rate, into posteriors (B, classes). TorchScorer runs a run
folder's or checkpoint's EndToEnd module on the device; OnnxScorer an exported file with onnxruntime, its
speechcls metadata checked against its graph before use (onnx_metadata). open_scorer picks by the path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from speechcls.runtime import require_extra

# the highest sample rate a model may ask for: every recording is resampled to it (a 1e9 in a file's
# metadata would make a one-second recording 4 GB); 384 kHz is the highest rate audio interfaces record at
MAX_SAMPLE_RATE = 384_000


class Scorer(Protocol):
    """Windows -> posteriors: (B, clip_samples) float32 at sample_rate -> (B, len(classes)) float32."""

    classes: list[str]
    sample_rate: int
    clip_samples: int

    def __call__(self, windows: np.ndarray) -> np.ndarray: ...


class TorchScorer:
    """A run folder or checkpoint: the run's EndToEnd module (features, input transform, model, softmax)
    on the device."""

    def __init__(self, path: Path, device: str = "auto"):
        from speechcls.infer.predict import load_run

        run = load_run(path, device)
        self.path = Path(path)
        self.module = run.end_to_end()
        self.device = next(self.module.parameters()).device
        self.classes = run.classes
        self.params = run.params
        self.sample_rate, self.clip_samples = run.params.sample_rate, run.params.clip_samples

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(windows).to(self.device, non_blocking=True)
            return self.module(x).float().cpu().numpy()  # note: a sync point, once per batch

    def extractor(self):
        """featurize's FeatureExtractor of the run, on the device (the sliding way's front end)."""
        return self.module.features

    def classify(self, features) -> np.ndarray:
        """(B, C, F, T) features (a tensor on the device) -> (B, K) posteriors."""
        import torch

        with torch.no_grad():
            return self.module.classifier(features).float().cpu().numpy()


class OnnxScorer:
    """A file from `speechcls export --format onnx` (with its front end), run by onnxruntime."""

    def __init__(self, path: Path, threads: int = 0, device: str = "auto"):
        require_extra(f"{path}: an ONNX file", "export", "onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's choice (every core)
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "cuda":
            raise ValueError("--device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
        self.path = path
        self.session = onnx_session(path, options, providers)
        meta = onnx_metadata(self.session, path)
        if not meta["frontend"]:
            raise ValueError(
                f"{path}: exported without its front end (its input is features); listen feeds waveforms: export "
                "again with --with-frontend (the default)"
            )
        self.classes, params = meta["classes"], meta["feature_params"]
        self.params, self.meta = params, meta
        self.sample_rate, self.clip_samples = params.sample_rate, params.clip_samples
        self.input = self.session.get_inputs()[0].name
        self._options, self._providers, self._classifier = options, providers, None

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        try:
            probs = self.session.run(None, {self.input: windows})[0]
        except Exception as e:  # onnxruntime's own classes (InvalidArgument, Fail, RuntimeException, ...)
            raise ValueError(f"{self.path}: onnxruntime cannot run the model ({type(e).__name__}: {e})") from None
        if probs.shape != (len(windows), len(self.classes)):  # a graph that left its output's shape undeclared
            raise ValueError(
                f"{self.path}: the model gives {tuple(probs.shape)} for {len(windows)} windows, not one probability "
                f"per class of its metadata's {len(self.classes)} classes: the file was not made by speechcls export"
            )
        return probs

    def extractor(self):
        """The front end of the sliding way: featurize's FeatureExtractor of the file's feature parameters,
        on the CPU (the file's own front end is that module traced, export.py)."""
        from speechcls.audio.features import FeatureExtractor

        return FeatureExtractor(self.params)

    def classifier_session(self):
        """An onnxruntime session of the file's classifier alone (its features -> probabilities part), cut
        from the graph by onnx's Extractor at the tensor the front end hands it; None where the onnx package
        is absent (the export extra) or the graph has no such tensor."""
        if self._classifier is None:
            try:
                import onnx
                import onnx.utils
            except ImportError:
                return None
            from speechcls.infer.export import CLASSIFIER_INPUT, OUTPUT

            model = onnx.load(str(self.path))
            if not any(CLASSIFIER_INPUT in n.input for n in model.graph.node):
                return None
            sub = onnx.utils.Extractor(model).extract_model([CLASSIFIER_INPUT], [OUTPUT])
            self._classifier = onnx_session(sub.SerializeToString(), self._options, self._providers, self.path)
            self._classifier_input = CLASSIFIER_INPUT
        return self._classifier

    def classify(self, features) -> np.ndarray:
        """(B, C, F, T) features (a CPU tensor) -> (B, K) posteriors, by the file's classifier."""
        session = self.classifier_session()
        try:
            return session.run(None, {self._classifier_input: features.numpy()})[0]
        except Exception as e:  # onnxruntime's own classes
            raise ValueError(f"{self.path}: onnxruntime cannot run the model ({type(e).__name__}: {e})") from None


def onnx_session(path, options=None, providers: list[str] | None = None, name: Path | None = None):
    """onnxruntime's InferenceSession of `path` (or of a model's bytes, `name` naming the file they come
    from); ValueError naming the file where onnxruntime cannot load it."""
    import onnxruntime as ort

    source = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors are its own classes (InvalidProtobuf, Fail, ...)
        where = name if name is not None else path
        raise ValueError(f"{where}: not an ONNX file onnxruntime can load ({type(e).__name__}: {e})") from None


def onnx_metadata(session, path: Path) -> dict:
    """The speechcls metadata of an ONNX file (export.py's `metadata`), decoded and checked against the graph
    before anything runs, so that a file that does not fit it is one error naming the file, not an
    InvalidArgument, an IndexError or a MemoryError later: classes (distinct names), feature parameters
    featurize accepts (sample rate at most MAX_SAMPLE_RATE), a bool `frontend`; one float32 input of shape
    (batch, clip_samples) with the front end, (batch, *features shape) without; an output of (batch, classes)
    where the graph declares it. Returns the raw string values, with classes, feature_params (FeatureParams)
    and frontend decoded."""
    from speechcls.config import FeatureParams

    raw = dict(session.get_modelmeta().custom_metadata_map)
    if "speechcls_metadata" not in raw:
        raise ValueError(f"{path}: no speechcls metadata in this ONNX file; make it with `speechcls export`")

    def refuse(what: str):
        return ValueError(f"{path}: {what}; the file was not made by speechcls export, or was edited: export it again")

    meta: dict = dict(raw)
    for key in ("classes", "feature_params", "frontend"):
        try:
            meta[key] = json.loads(raw[key])
        except KeyError:
            raise refuse(f"its metadata has no {key}") from None
        except json.JSONDecodeError as e:
            raise refuse(f"its metadata's {key} is not JSON ({e})") from None
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise refuse(f"its metadata's classes {raw['classes']!r} are not a list of class names")
    if len(set(classes)) != len(classes):
        raise refuse(f"its metadata's classes {raw['classes']!r} name a class twice")
    if not isinstance(meta["frontend"], bool):
        raise refuse(f"its metadata's frontend {raw['frontend']!r} is not true or false")
    if not isinstance(meta["feature_params"], dict):
        raise refuse(f"its metadata's feature_params {raw['feature_params']!r} are not a table of settings")
    try:
        params = FeatureParams(**meta["feature_params"]).validate()
    except (TypeError, ValueError) as e:
        raise refuse(f"its metadata's feature_params are impossible ({e})") from None
    if not params.sample_rate <= MAX_SAMPLE_RATE:
        raise refuse(f"its metadata's sample_rate {params.sample_rate} is above {MAX_SAMPLE_RATE:,} Hz")
    meta["feature_params"] = params

    inputs, outputs = session.get_inputs(), session.get_outputs()
    want = [params.clip_samples] if meta["frontend"] else list(params.shape)
    if (
        len(inputs) != 1
        or inputs[0].type != "tensor(float)"
        or len(inputs[0].shape) != 1 + len(want)
        or any(dim != n for dim, n in zip(inputs[0].shape[1:], want))
    ):
        found = ", ".join(f"{i.name} {i.type} {list(i.shape)}" for i in inputs)
        raise refuse(
            f"its graph's input ({found}) is not the float32 (batch, {', '.join(map(str, want))}) its metadata says"
        )
    shape = outputs[0].shape if outputs else []
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(classes)):
        raise refuse(
            f"its graph's output {list(shape)} is not (batch, {len(classes)}), one probability for each of its classes"
        )
    return meta


def open_scorer(path: str | Path, device: str = "auto", threads: int = 0) -> Scorer:
    """An .onnx file -> OnnxScorer; a run folder or a checkpoint -> TorchScorer."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ValueError(f"{path}: no such file; make it with `speechcls export RUN_DIR`")
        return OnnxScorer(path, threads, device)
    return TorchScorer(path, device)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file, read by onnxruntime (no onnx package needed), as strings, once
    listen's reader has checked them against the graph (ValueError naming the file where they do not fit)."""
    session = onnx_session(Path(path))
    onnx_metadata(session, Path(path))
    return dict(session.get_modelmeta().custom_metadata_map)

"""`speechcls export`: a run's model as one file that runs without speechcls, ONNX or TorchScript.

With its front end (the default) the file takes a float32 waveform at the run's sample rate, (batch,
clip_samples) = (batch, 16000) for one-second clips (--clip-seconds S: S x 16,000, also in the input's
metadata as clip_seconds), and gives the class probabilities (batch, classes): the STFT with its
reflect padding, the mel filterbank, the power, the run's log and standardization, the model and a
softmax, exactly as training computed them. Without it the file takes the features featurize stores,
(batch, C, F, T), and applies the rest. The classes, the feature parameters and the input transform go
into the file (ONNX metadata_props; TorchScript extra files), the same keys in both.

The STFT in ONNX: torch.onnx's default exporter (dynamo, torch 2.14) writes torch.stft as ONNX's STFT
operator (opset 17 and later) and ONNX Runtime runs it, for the power and the complex variants alike; the
legacy TorchScript exporter refuses it ("STFT does not currently support complex types"). So the front
end in the file is torchaudio's own module, traced, not a second implementation (a DFT as a conv1d) that
would have to be kept equal to it; the tests hold ONNX Runtime's probabilities to PyTorch's.

The ONNX file is composed of two exported graphs, the front end (waveform -> features) and the classifier
(features -> probabilities), joined on the features: `--quantize int8` quantizes the classifier alone
(static, QDQ, int8 weights per channel and int8 activations calibrated on the run's training features;
the first layer, which takes the features, stays float too), so the power spectrum, whose range no 8
bits hold, is never quantized.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from speechcls import __version__
from speechcls.infer.predict import RunModel, load_run
from speechcls.runtime import atomic_write, check_out, marked, require_extra

FORMATS = ("onnx", "torchscript")
QUANTIZE = ("int8",)
METADATA_FORMAT = "1"  # of the keys below; a reader checks it
# in every file export writes (an ONNX metadata key; a TorchScript extra file's name): how a rerun knows
# its own earlier output, which it may rewrite without --overwrite
OWN_MARK = b"speechcls_metadata"
WAVE_INPUT, FEATURES_INPUT, OUTPUT = "waveform", "features", "probabilities"
# the tensor between the front end and the classifier in a file with its front end (merge_models keeps the
# front end's prefixed output name): where listen's sliding way cuts the classifier out (stream_frames.py)
CLASSIFIER_INPUT = "frontend/" + FEATURES_INPUT
OPSET = 20  # ONNX's STFT needs 17; 20 is what torch 2.14's exporter writes by default
CALIBRATION_EXAMPLES = 256  # training examples that calibrate int8 activations (min-max per tensor)
# int8 where it pays: the matrix products, and the ops that pass int8 through unchanged. Quantizing
# every op (Add, Softmax's input...) moved a random seed CNN's probabilities by 0.27, these by 0.017.
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean"]


def default_out(run: Path, fmt: str, frontend: bool = True, quantize: str | None = None) -> Path:
    """Beside the checkpoint: best.onnx, best.features.onnx (no front end), best.int8.onnx, best.torchscript.pt."""
    ckpt = run / "best.pt" if run.is_dir() else run
    parts = [ckpt.stem] + ([] if frontend else ["features"]) + ([quantize] if quantize else [])
    return ckpt.parent / (".".join(parts) + (".onnx" if fmt == "onnx" else ".torchscript.pt"))


def metadata(
    m: RunModel, frontend: bool, quantize: str | None, fmt: str, operating_point: dict | None = None
) -> dict[str, str]:
    """What the file says about itself, as string -> string (JSON where structured): ONNX metadata_props
    and TorchScript extra files alike. `operating_point`: the run's measured one (`speechcls stream eval`,
    stream_eval.py's record: threshold, FRR, FA/h, the target, the listen settings and the stream), or
    JSON null where none was measured; listen takes its threshold from it."""
    p = m.params
    if frontend:
        inp = {"name": WAVE_INPUT, "shape": ["batch", p.clip_samples], "dtype": "float32", "range": [-1.0, 1.0]}
        inp |= {"sample_rate": p.sample_rate, "clip_seconds": p.clip_samples / p.sample_rate}  # featurize's
    else:
        inp = {"name": FEATURES_INPUT, "shape": ["batch", *p.shape], "dtype": "float32", "variant": p.variant}
    out = {"name": OUTPUT, "shape": ["batch", len(m.classes)], "dtype": "float32", "softmax": True}
    return {
        "speechcls_metadata": METADATA_FORMAT,
        "speechcls_version": __version__,
        "format": fmt,
        "classes": json.dumps(m.classes),
        "task": m.task,
        "feature_params": json.dumps(asdict(p)),
        "input_transform": json.dumps(m.spec.to_dict()),
        "frontend": json.dumps(frontend),
        "quantization": quantize or "none",
        "model_name": m.ckpt["model_name"],
        "model_cfg": json.dumps(m.ckpt.get("model_cfg", {})),
        "input": json.dumps(inp),
        "output": json.dumps(out),
        "operating_point": json.dumps(operating_point),
    }


def export(
    run: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    frontend: bool = True,
    quantize: str | None = None,
    calibration_examples: int = CALIBRATION_EXAMPLES,
    calibration_data: torch.Tensor | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the model of `run` (a run folder or a checkpoint) as one `fmt` file; returns what was written:
    path, bytes, format, frontend, quantization, classes, input and output (the metadata's). int8 calibrates
    on `calibration_data` ((N, C, F, T) stored features) where given, else on `calibration_examples` of the
    run's training split. An existing `out` is replaced only where it is an earlier export (it carries
    OWN_MARK) or `overwrite` says so, never the checkpoint itself unless `overwrite` (runtime.check_out)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"--quantize {quantize!r}: choose int8 (or leave it out for float32)")
    if quantize is not None and fmt != "onnx":
        raise ValueError("--quantize int8 goes through onnxruntime's quantization tools: use it with --format onnx")
    if fmt == "onnx":  # the exporter needs onnx + onnxscript; the check, metadata and int8 need onnxruntime
        require_extra("speechcls export --format onnx", "export", "onnx", "onnxscript", "onnxruntime")
    run = Path(run)
    out = Path(out) if out is not None else default_out(run, fmt, frontend, quantize)
    # before any work: never onto the checkpoint it reads, another checkpoint or a file it did not write
    read = run / "best.pt" if run.is_dir() else run
    check_out(out, reads=(read,), own=marked(OWN_MARK), overwrite=overwrite, command="export")
    m = load_run(run, "cpu")
    from speechcls.infer.stream_results import read_operating_point

    meta = metadata(m, frontend, quantize, fmt, read_operating_point(run))
    if fmt == "torchscript":
        module = m.end_to_end() if frontend else m.classifier
        atomic_write(out, lambda tmp: _save_torchscript(module, _example(m, frontend), meta, tmp))
    else:
        if quantize and calibration_data is None:
            calibration_data = calibration(m, run, calibration_examples)
        proto = onnx_model(m, frontend, calibration_data if quantize else None)
        _set_metadata(proto, meta)
        atomic_write(out, lambda tmp: _save_onnx(proto, tmp))
    return (
        {"path": str(out), "bytes": out.stat().st_size}
        | {k: json.loads(meta[k]) for k in ("classes", "frontend", "input", "output")}
        | {"format": fmt, "quantization": meta["quantization"]}
    )


def _example(m: RunModel, frontend: bool) -> torch.Tensor:
    """An input to trace with: batch 2, so that nothing specializes on a batch of one."""
    gen = torch.Generator().manual_seed(0)
    if frontend:
        return 0.1 * torch.randn(2, m.params.clip_samples, generator=gen)
    return torch.rand(2, *m.params.shape, generator=gen)  # non-negative: a power variant's log stays finite


# --- TorchScript -------------------------------------------------------------------------------------
def _save_torchscript(module: torch.nn.Module, example: torch.Tensor, meta: dict[str, str], path: Path) -> None:
    # torch.jit warns that it is deprecated (torch 2.14: FutureWarning); it is still what libtorch (C++) loads;
    # the tracer warns where a model branches on a shape (BC-ResNet's sub-band split): those shapes are the
    # fixed (C, F, T) of the features, only the batch varies, and the tests run other batch sizes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module.eval(), example)
        torch.jit.save(traced, str(path), _extra_files=meta)


def read_torchscript_metadata(path: str | Path) -> dict[str, str]:
    """The extra files export wrote into a TorchScript file (loads the module to read them)."""
    keys = {k: "" for k in ("speechcls_metadata", "classes", "feature_params", "input_transform", "frontend")}
    keys |= {k: "" for k in ("task", "quantization", "model_name", "model_cfg", "input", "output", "format")}
    keys |= {"operating_point": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=keys)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in keys.items()}


# --- ONNX --------------------------------------------------------------------------------------------
def _to_onnx(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_name: str):
    """One module through torch.onnx's dynamo exporter, batch dynamic; the ModelProto."""
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ValueError(f"exporting to ONNX needs {e.name}: pip install 'speechcls[export]'") from None
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" and friends, at every export
    level, quiet.level = quiet.level, logging.ERROR
    said = io.StringIO()  # the exporter prints its progress ("[torch.onnx] Obtain model graph ...")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(said), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module.eval(), (example,), dynamo=True, opset_version=OPSET, input_names=[input_name],
                output_names=[output_name], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
            )  # fmt: skip
    except Exception as e:
        raise RuntimeError(f"torch.onnx.export failed: {type(e).__name__}: {e}\n{said.getvalue()}") from e
    finally:
        quiet.level = level
    proto = program.model_proto
    # the exporter notes every node's Python stack trace, module path and fx node: 300 KB of a 430 KB
    # BC-ResNet-1 file, and the paths of the machine that exported it
    for node in [*proto.graph.node, *(n for f in proto.functions for n in f.node)]:
        del node.metadata_props[:]
    return proto


def onnx_model(m: RunModel, frontend: bool, int8_calibration: torch.Tensor | None = None):
    """The ModelProto: the classifier (features -> probabilities), quantized to int8 where calibration
    features are given, with the front end (waveform -> features) joined before it."""
    import onnx

    features = _example(m, frontend=False)
    classifier = _to_onnx(m.classifier, features, FEATURES_INPUT, OUTPUT)
    if int8_calibration is not None:
        classifier = quantize_int8(classifier, int8_calibration)
    if not frontend:
        return classifier
    front = frontend_onnx(m.params)
    joined = onnx.compose.merge_models(
        front, classifier, io_map=[(FEATURES_INPUT, FEATURES_INPUT)], prefix1="frontend/", prefix2="classifier/"
    )
    _rename(joined.graph, "frontend/" + WAVE_INPUT, WAVE_INPUT)
    _rename(joined.graph, "classifier/" + OUTPUT, OUTPUT)
    return joined


def frontend_onnx(params):
    """The front end alone as a ModelProto: waveform (batch, clip_samples) -> features (batch, C, F, T),
    featurize's FeatureExtractor through the exporter (torch.stft -> ONNX STFT)."""
    from speechcls.audio.features import FeatureExtractor

    example = 0.1 * torch.randn(2, params.clip_samples, generator=torch.Generator().manual_seed(0))
    return _to_onnx(FeatureExtractor(params), example, WAVE_INPUT, FEATURES_INPUT)


def _rename(graph, old: str, new: str) -> None:
    """An input or output of the joined graph back to its plain name (merge_models prefixed it)."""
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]


def calibration(m: RunModel, run: Path, n: int) -> torch.Tensor:
    """Up to `n` training examples of the run's store as the classifier sees them, in the loader's seeded
    shuffled order."""
    try:
        return split_features(m, "train", n)[0]
    except (ValueError, OSError) as e:
        raise ValueError(
            f"--quantize int8 calibrates on the run's training features and they cannot be read ({e}); featurize "
            "the run's store again, or export without --quantize"
        ) from None


def split_features(m: RunModel, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of a split of the run's store, as the classifier takes them: the stored features,
    or those of a waveform store computed with the run's parameters (as training did, without its
    augmentation); labels in the run's classes (its task). At most `limit` examples."""
    from dataclasses import fields

    from speechcls.audio.features import FeatureExtractor
    from speechcls.config import TrainConfig
    from speechcls.engine.setup import make_loader

    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in m.ckpt.get("config", {}).items() if k in known})
    if not cfg.store:
        raise ValueError("the checkpoint names no store")
    loader = make_loader(cfg, cfg.store, split, torch.device("cpu"), mode="stream")
    extractor = FeatureExtractor(m.params) if loader.store_params.variant == "waveform" else None
    # the loader hands (B, L) float waveforms of a waveform store, (B, C, F, T) float32 features otherwise
    loader.pipeline = (lambda x, epoch, position: extractor(x)) if extractor else (lambda x, epoch, position: x)
    loader.set_epoch(1)
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x.float())
        ys.append(y)
        seen += len(y)
        if limit is not None and seen >= limit:
            break
    return torch.cat(xs)[:limit], torch.cat(ys)[:limit]


def quantize_int8(classifier, examples: torch.Tensor):
    """Static int8 quantization of the classifier graph with onnxruntime's tools: shape inference and
    graph optimization (quant_pre_process), then QDQ with int8 weights per output channel and int8
    activations whose ranges come from `examples` (min-max)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{FEATURES_INPUT: examples[i : i + 1].numpy()} for i in range(len(examples))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="speechcls-int8-") as tmp:
        fp32, ready, int8 = (Path(tmp) / name for name in ("fp32.onnx", "ready.onnx", "int8.onnx"))
        onnx.save(classifier, fp32)
        quant_pre_process(str(fp32), str(ready))
        # the first layer stays float: its input is the features themselves, whose range (a power mel
        # spans ten decades without log) 8 bits cannot hold, and it is little of the compute (the seed
        # CNN's first conv on the chapter's mel: 3.6 of 138 M multiply-adds). Seen on the demo run's test
        # split (120 clips): top-1 0.342 with it quantized, 0.383 without; float32 0.392
        first = next(n.name for n in onnx.load(ready).graph.node if n.op_type in ("Conv", "Gemm", "MatMul"))
        quantize_static(
            str(ready), str(int8), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=[first],
        )  # fmt: skip
        return onnx.load(int8)


def _set_metadata(proto, meta: dict[str, str]) -> None:
    import onnx

    proto.doc_string = f"speechcls {__version__}: {meta['input']} -> {meta['output']}"
    onnx.helper.set_model_props(proto, meta)


def _save_onnx(proto, path: Path) -> None:
    import onnx

    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))  # one file: a speechcls model is megabytes, far from protobuf's 2 GB

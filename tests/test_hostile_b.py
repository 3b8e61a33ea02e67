"""Issue 26, part B: hostile input never moves a clip between splits, never reaches a traceback, and every
name read from a file or folder is printed as it is."""

import pytest
from typer.testing import CliRunner

from speechcls import config
from speechcls.cli import app
from speechcls.data.tree import index_tree

runner = CliRunner()


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _one_error_line(r) -> str:
    """The output of a refused command: exit 1, one `error:` line, no traceback."""
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


# --- item 2: list entries are normalized paths, or refused with the line named ------------------------
CLIP = "yes/439c84f4_nohash_1.wav"


@pytest.mark.parametrize(
    "spelling",
    [CLIP, f"./{CLIP}", "yes/./439c84f4_nohash_1.wav", "yes//439c84f4_nohash_1.wav", ".//yes/439c84f4_nohash_1.wav",
     "yes\\439c84f4_nohash_1.wav", f"  {CLIP}\t", f"{CLIP}\r", "./yes/.//./439c84f4_nohash_1.wav"],
)  # fmt: skip
def test_every_spelling_of_a_listed_clip_puts_it_in_its_split(spelling, tmp_path):
    for rel in (CLIP, "yes/aa_nohash_0.wav", "no/bb_nohash_0.wav"):
        _touch(tmp_path / rel)
    (tmp_path / config.VALIDATION_LIST).write_text(f"no/bb_nohash_0.wav\n{spelling}\n", newline="")
    (tmp_path / config.TESTING_LIST).write_text("")
    index = index_tree(tmp_path)
    split = dict(zip(index.paths, index.official.tolist()))
    assert split == {"no/bb_nohash_0.wav": 1, CLIP: 1, "yes/aa_nohash_0.wav": 0}
    assert index.missing == {config.VALIDATION_LIST: 0, config.TESTING_LIST: 0}


def test_two_spellings_of_one_clip_in_both_lists_are_refused(tmp_path):
    _touch(tmp_path / CLIP)
    (tmp_path / config.VALIDATION_LIST).write_text(f"{CLIP}\n")
    (tmp_path / config.TESTING_LIST).write_text("yes/./439c84f4_nohash_1.wav\n")
    with pytest.raises(ValueError, match="listed in both"):
        index_tree(tmp_path)


@pytest.mark.parametrize(
    "entry, why",
    [
        ("../yes/439c84f4_nohash_1.wav", "'..'"),
        ("dog/../yes/439c84f4_nohash_1.wav", "'..'"),  # lexically yes/...: refused all the same (see tree.py)
        ("yes/../../439c84f4_nohash_1.wav", "'..'"),
        ("/yes/439c84f4_nohash_1.wav", "absolute"),
        ("\\yes\\439c84f4_nohash_1.wav", "absolute"),
        ("C:/yes/439c84f4_nohash_1.wav", "absolute"),
        ("439c84f4_nohash_1.wav", "<word>/<file>.wav"),
        ("yes/sub/439c84f4_nohash_1.wav", "<word>/<file>.wav"),
        ("yes/439c84f4_nohash_1.txt", "<word>/<file>.wav"),
        ("yes/", "<word>/<file>.wav"),
        (".", "<word>/<file>.wav"),
    ],
)
def test_an_entry_that_escapes_the_tree_or_is_no_clip_path_is_refused_with_its_line(entry, why, tmp_path):
    _touch(tmp_path / CLIP)
    (tmp_path / config.TESTING_LIST).write_text(f"{CLIP}\n\n{entry}\n")
    with pytest.raises(ValueError) as e:
        index_tree(tmp_path)
    message = str(e.value)
    assert f"{tmp_path / config.TESTING_LIST}:3:" in message and repr(entry) in message and why in message
    r = runner.invoke(app, ["data", "info", "--root", str(tmp_path), "--no-check-audio"])
    assert f"{config.TESTING_LIST}:3:" in _one_error_line(r)


# --- item 6: a WAV with a streaming header is read to the end of the file -----------------------------
def _streaming(wav: bytes) -> bytes:
    """`wav` with the sizes a writer to a pipe leaves (ffmpeg, sox): RIFF and data 0xFFFFFFFF."""
    out, pos = bytearray(wav), 12
    out[4:8] = b"\xff\xff\xff\xff"
    while out[pos : pos + 4] != b"data":
        pos += 8 + int.from_bytes(out[pos + 4 : pos + 8], "little")
    out[pos + 4 : pos + 8] = b"\xff\xff\xff\xff"
    return bytes(out)


def _wav_bytes(x, rate: int, subtype: str) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("PCM_16", 2), ("PCM_24", 1), ("FLOAT", 1)])
def test_a_wav_with_a_streaming_header_reads_as_libsndfile_and_wave_read_it(subtype, channels, tmp_path):
    import io
    import wave
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import soundfile as sf

    from speechcls.audio.decode import decode_batch, read_audio

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((12_345, channels))).clip(-1, 1).astype(np.float32)
    data = _streaming(_wav_bytes(x, 16_000, subtype))
    path = tmp_path / "yes" / "pipe_nohash_0.wav"
    path.parent.mkdir()
    path.write_bytes(data + (b"\x00" if subtype == "PCM_16" and channels == 2 else b""))  # half a frame: dropped
    # the references: libsndfile (soundfile) and, for 16-bit PCM, Python's wave
    expected, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == 16_000 and expected.shape == (12_345, channels)
    if subtype == "PCM_16":
        with wave.open(io.BytesIO(data)) as w:
            pcm = np.frombuffer(w.readframes(1 << 30), dtype="<i2").reshape(-1, channels)
        np.testing.assert_array_equal(pcm.astype(np.float32) / 32768, expected)
    mono = expected.mean(axis=1, dtype=np.float32)
    audio, rate = read_audio(path)
    assert rate == 16_000
    np.testing.assert_array_equal(audio, mono)
    with ThreadPoolExecutor(1) as pool:
        batch = decode_batch(tmp_path, ["yes/pipe_nohash_0.wav"], 16_000, 16_000, pool)
    assert batch.skipped == {} and batch.decoded.all()
    np.testing.assert_array_equal(batch.wave[0, :12_345], mono)
    assert not batch.wave[0, 12_345:].any()


def test_a_truncated_wav_is_still_skipped(tmp_path):
    import numpy as np

    from speechcls.audio.decode import BadAudio, read_audio

    for subtype in ("PCM_16", "FLOAT"):
        path = tmp_path / f"{subtype}.wav"
        path.write_bytes(_wav_bytes(np.zeros(1000, np.float32), 16_000, subtype)[:-100])
        with pytest.raises(BadAudio, match="truncated"):
            read_audio(path)


# --- item 4: every path, class name and file-derived string is printed literally -----------------------
# rich markup as folder names (a style, a lone tag) and an emoji code; a closing tag holds a "/" and an
# escaped bracket a backslash (a list's separator too), so they are in the paths (tree, store, run) instead
HOSTILE_WORDS = ("[red]x", "[bold]", ":smile:")


@pytest.fixture(scope="module")
def hostile_tree(mini_root, tmp_path_factory):
    """Real clips under word folders named like rich markup, official lists naming them, and one
    unreadable clip whose name is markup too; the store and run folders' names hold brackets as well."""
    import shutil

    base = tmp_path_factory.mktemp("hostile")
    tree = base / "tree[/]"
    lists: dict[str, list[str]] = {config.VALIDATION_LIST: [], config.TESTING_LIST: []}
    for word, src in zip(HOSTILE_WORDS, ("bed", "cat", "dog")):
        (tree / word).mkdir(parents=True)
        for i, wav in enumerate(sorted((mini_root / src).glob("*.wav"))[:12]):
            shutil.copy(wav, tree / word / wav.name)
            if i >= 6:  # 6 train, 2 validation, 2 test clips a word (the mini tree has 10)
                lists[config.VALIDATION_LIST if i < 8 else config.TESTING_LIST].append(f"{word}/{wav.name}")
    (tree / "[red]x" / "[blue]bad_nohash_0.wav").write_bytes(b"not audio at all")
    for name, entries in lists.items():
        (tree / name).write_text("\n".join(entries) + "\n")
    return base, tree


def _literal(output: str, *names: str) -> None:
    for name in names:
        assert name in output, (name, output)


def test_every_command_prints_names_and_paths_literally(hostile_tree):
    base, tree = hostile_tree
    store, run = base / "s[/]x\\[red].zarr", base / "r[bold]un[/]"
    r = runner.invoke(app, ["data", "info", "--root", str(tree)])
    assert r.exit_code == 0, r.output
    _literal(r.output, *HOSTILE_WORDS, "[red]x/[blue]bad_nohash_0.wav", str(tree))
    mel = ["--variant", "mel", "--n-mels", "80", "--hop-length", "200", "--device", "cpu", "--backend", "torch"]
    r = runner.invoke(app, ["featurize", "--root", str(tree), "--out", str(store), *mel])
    assert r.exit_code == 0, r.output
    _literal(r.output, "skipped [red]x/[blue]bad_nohash_0.wav", str(store))
    r = runner.invoke(app, ["info", str(store)])
    assert r.exit_code == 0, r.output
    _literal(r.output, f"{store}: mel store, complete", ", ".join(sorted(HOSTILE_WORDS)), str(tree.resolve()))
    _literal(r.output, "[red]x/[blue]bad_nohash_0.wav")
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 0 and f"{store}: ok" in r.output, r.output
    r = runner.invoke(app, ["train", "--store", str(store), "--out", str(run), "--device", "cpu", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    _literal(r.output, str(store), str(run))
    r = runner.invoke(app, ["evaluate", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _literal(r.output, *(f"│ {w} " for w in HOSTILE_WORDS), str(run))  # the per-class table's rows
    clip = next((tree / ":smile:").glob("*.wav"))
    r = runner.invoke(app, ["predict", str(run), str(clip), "--device", "cpu"])
    assert r.exit_code == 0 and str(clip) in r.output, r.output
    r = runner.invoke(app, ["listen", str(run), str(clip), "--device", "cpu", "--threshold", "0"])
    assert r.exit_code == 0 and str(clip) in r.output, r.output
    r = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(base / "m[/].pt")])
    assert r.exit_code == 0 and str(base / "m[/].pt") in r.output, r.output


@pytest.mark.parametrize("name", ["x[/].zarr", "[red]z.zarr", ":smile:.zarr", "[link=file:///etc]y.zarr"])
def test_an_error_about_a_path_prints_it_literally(name, tmp_path):
    (tmp_path / name).mkdir(parents=True)
    for args in (["info", str(tmp_path / name)], ["verify", str(tmp_path / name)]):
        assert str(tmp_path / name) in _one_error_line(runner.invoke(app, args))
    line = _one_error_line(runner.invoke(app, ["data", "info", "--root", str(tmp_path / name)]))
    assert str(tmp_path / name) in line


def test_the_progress_bar_prints_descriptions_and_lines_literally():
    import io

    from rich.console import Console

    from speechcls.cli.progress import RichProgress

    for terminal in (True, False):
        out = io.StringIO()
        bar = RichProgress(Console(file=out, force_terminal=terminal, width=120, markup=False), unit="clips")
        with bar:
            bar.start("featurize [red]x[/]", total=10)
            bar.advance(10)
            bar.bar.refresh()
            bar.say("line [bold]y[/] :smile:")
            bar.end()
        text = out.getvalue()
        assert "line [bold]y[/] :smile:" in text, text
        if terminal:
            assert "featurize [red]x[/]" in text and "[progress.description]" not in text, text


# --- item 5 and the weak ones: a checkpoint is checked on load, the same way for every command ----------
def _good_checkpoint(path):
    """A small MatchboxNet checkpoint of 3 classes in the trainer's layout (engine/setup.py's Setup.meta())."""
    from dataclasses import asdict

    import torch

    from speechcls.audio.frontend import InputSpec
    from speechcls.config import FeatureParams, TrainConfig
    from speechcls.engine import checkpoint
    from speechcls.engine.setup import model_settings
    from speechcls.models import build_model

    params = FeatureParams("mel", n_mels=40)
    cfg = TrainConfig(model="matchboxnet-3x1x64")
    torch.manual_seed(0)
    model = build_model(cfg.model, params.shape, 3, **model_settings(cfg)).eval()
    meta = {
        "config": asdict(cfg) | {"store": ""}, "task": "words", "classes": ["a", "b", "c"], "params": asdict(params),
        "input": InputSpec().to_dict(), "in_shape": list(params.shape), "n_classes": 3, "model_name": cfg.model,
        "model_cfg": model_settings(cfg), "complexity": {}, "noise": None,
    }  # fmt: skip
    return checkpoint.save(path, {**meta, "model": model.state_dict(), "epoch": 1, "valid_loss": 1.0})


def _first_weight(ckpt: dict) -> str:
    return next(k for k, t in ckpt["model"].items() if k.endswith("weight") and t.dim() > 1)


def _nan_weight(c):
    c["model"][_first_weight(c)].view(-1)[3] = float("nan")


def _inf_running_var(c):
    key = next(k for k in c["model"] if k.endswith("running_var"))
    c["model"][key][0] = float("inf")


def _reshaped_weight(c):
    key = _first_weight(c)
    c["model"][key] = c["model"][key][:1].clone()


def _drop_weight(c):
    del c["model"][_first_weight(c)]


BAD_CHECKPOINTS = {
    "hop_length 0": (lambda c: c["params"].update(hop_length=0), "hop_length must be positive"),
    "sample_rate 0": (lambda c: c["params"].update(sample_rate=0), "sample_rate and clip_samples must be positive"),
    "unknown parameter": (lambda c: c["params"].update(bogus=1), "bogus"),
    "params not a dict": (lambda c: c.update(params=[1, 2]), "feature parameters"),
    "in_shape off": (lambda c: c.update(in_shape=[1, 40, 50]), "in_shape"),
    "no classes": (lambda c: c.update(classes=[]), "classes"),
    "repeated class": (lambda c: c.update(classes=["a", "a", "c"]), "classes"),
    "unknown model": (lambda c: c.update(model_name="resnet-9000"), "resnet-9000"),
    "weight of another shape": (_reshaped_weight, "shape"),
    "weight missing": (_drop_weight, "missing"),
    "NaN weight": (_nan_weight, "not finite"),
    "inf running_var": (_inf_running_var, "not finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_refused_by_every_command_in_one_line_naming_it(case, tmp_path, mini_root):
    import torch

    edit, words = BAD_CHECKPOINTS[case]
    ckpt_path = _good_checkpoint(tmp_path / "best.pt")
    ckpt = torch.load(ckpt_path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, ckpt_path)
    wav = str(next(mini_root.glob("bed/*.wav")))
    out = tmp_path / "exported.pt"
    for args in (
        ["evaluate", str(ckpt_path), "--device", "cpu"],
        ["predict", str(ckpt_path), wav, "--device", "cpu"],
        ["export", str(ckpt_path), "--format", "torchscript", "--out", str(out)],
        ["listen", str(ckpt_path), wav, "--device", "cpu"],
        ["evaluate", str(tmp_path), "--device", "cpu"],  # the run folder: its best.pt
    ):
        line = _one_error_line(runner.invoke(app, args))
        assert str(ckpt_path) in line and words in line, (args, line)
    assert not out.exists()


# --- item 5: an ONNX file is checked against its metadata before listen uses it -----------------------
def _onnx_file(path, graph_in=("batch", 16_000), graph_out=("batch", 3), in_type=None, **meta):
    """An ONNX file carrying speechcls's metadata keys (export.py's `metadata`) around a tiny graph: the
    mean of the input, repeated graph_out[1] times, softmaxed (uniform probabilities). `meta` overrides keys;
    a dict or list value is written as JSON."""
    import json
    from dataclasses import asdict

    import onnx
    from onnx import TensorProto, helper

    from speechcls.config import FeatureParams

    k = graph_out[1] if isinstance(graph_out[1], int) else 3
    elem = in_type or TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["waveform"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1, axes=[1]),
        helper.make_node("Concat", ["m"] * k, ["c"], axis=1),
        helper.make_node("Softmax", ["c"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("waveform", elem, list(graph_in))],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, list(graph_out))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    params = asdict(FeatureParams("mel", n_mels=40))
    values = {
        "speechcls_metadata": "1", "format": "onnx", "classes": ["a", "b", "c"], "task": "words",
        "feature_params": params, "input_transform": {}, "frontend": True, "quantization": "none",
        "model_name": "matchboxnet-3x1x64", "model_cfg": {},
    } | meta  # fmt: skip
    if "feature_params_update" in values:
        values["feature_params"] = params | values.pop("feature_params_update")
    text = {key: v if isinstance(v, str) else json.dumps(v) for key, v in values.items()}
    helper.set_model_props(model, text)
    onnx.save(model, str(path))
    return path


BAD_ONNX = {
    "input shorter than clip_samples": (dict(graph_in=("batch", 8_000)), "input"),
    "input of rank 3": (dict(graph_in=("batch", 1, 16_000)), "input"),
    "input of int16": (dict(in_type=5), "input"),
    "fewer classes than outputs": (dict(classes=["a", "b"]), "classes"),
    "more classes than outputs": (dict(classes=["a", "b", "c", "d"]), "classes"),
    "clip_samples 10**12": (dict(feature_params_update={"clip_samples": 10**12}), "input"),
    "sample_rate 0": (dict(feature_params_update={"sample_rate": 0}), "sample_rate"),
    "sample_rate 10**9": (dict(feature_params_update={"sample_rate": 10**9}), "sample_rate"),
    "hop_length 0": (dict(feature_params_update={"hop_length": 0}), "hop_length"),
    "params not JSON": (dict(feature_params="{not json"), "feature_params"),
    "params not a table": (dict(feature_params=[1, 2]), "feature_params"),
    "classes not a list": (dict(classes={"a": 1}), "classes"),
    "classes not JSON": (dict(classes="[a, b"), "classes"),
    "frontend not JSON": (dict(frontend="yes"), "frontend"),
    "a window of 10**12 samples": (
        dict(graph_in=("batch", 10**12), feature_params_update={"clip_samples": 10**12}),
        "memory",
    ),
}


def test_an_onnx_file_that_fits_its_metadata_listens(tmp_path, mini_root):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = _onnx_file(tmp_path / "good.onnx")
    r = runner.invoke(app, ["listen", str(path), str(next(mini_root.glob("bed/*.wav"))), "--json"])
    assert r.exit_code == 0 and '"detections": []' in r.output, r.output


@pytest.mark.parametrize("case", sorted(BAD_ONNX))
def test_an_onnx_file_that_does_not_fit_its_metadata_is_refused_in_one_line(case, tmp_path, mini_root):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    kwargs, words = BAD_ONNX[case]
    path = _onnx_file(tmp_path / "m.onnx", **kwargs)
    line = _one_error_line(runner.invoke(app, ["listen", str(path), str(next(mini_root.glob("bed/*.wav")))]))
    assert str(path) in line and words in line, line
    if words != "memory":  # the one reader of the metadata: export's refuses the file as listen does
        from speechcls.infer.scorers import read_onnx_metadata

        with pytest.raises(ValueError, match=words):
            read_onnx_metadata(path)


# --- item 5: the CLI's error mapping covers running out of memory and the libraries' own errors ---------
def _library_errors():
    import json
    import pickle
    import tarfile

    import zarr.errors

    errors = [
        MemoryError("Unable to allocate 3.64 TiB for an array with shape (1000000000000,) and data type float32"),
        tarfile.ReadError("file could not be opened successfully"),
        json.JSONDecodeError("Expecting value", "{x", 1),
        zarr.errors.MetadataValidationError("bad zarr.json"),
        pickle.UnpicklingError("invalid load key"),
    ]
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

        errors += [InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions"), Fail("x")]
    except ImportError:
        pass
    return errors


@pytest.mark.parametrize("error", _library_errors(), ids=lambda e: type(e).__name__)
def test_memory_and_library_errors_are_one_line(error, monkeypatch, tmp_path):
    import speechcls.store

    def fail(store):
        raise error

    monkeypatch.setattr(speechcls.store, "store_info", fail)
    line = _one_error_line(runner.invoke(app, ["info", str(tmp_path)]))
    assert type(error).__name__ in line or "out of memory" in line, line
    if isinstance(error, MemoryError):
        assert "3.64 TiB" in line and "available" in line, line


# --- item 5: an archive that is no tar.gz is one error naming it, and nothing is extracted ------------
def _tar_gz(members: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["random bytes", "empty", "truncated gzip", "gzip of no tar", "text"])
def test_an_archive_that_is_no_tar_gz_is_refused_naming_it(kind, tmp_path):
    import gzip
    import hashlib

    import numpy as np

    from speechcls.data import download as dl

    payload = {
        "random bytes": np.random.default_rng(0).bytes(100_000),
        "empty": b"",
        "truncated gzip": _tar_gz({f"yes/a{i}_nohash_0.wav": np.random.default_rng(i).bytes(5_000) for i in range(20)})[
            :-30_000
        ],  # fmt: skip
        "gzip of no tar": gzip.compress(b"hello " * 1000),
        "text": b"<html>404 not found</html>\n",
    }[kind]
    root = tmp_path / "speech_commands_v0.01"
    archive = dl.archive_path(root)
    archive.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    line = _one_error_line(runner.invoke(app, ["download", "--root", str(root), "--sha256", sha]))
    assert str(archive) in line and "nothing was extracted" in line, line
    assert not root.exists() and sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


# --- item 5: no chunk or block size can ask featurize for more memory than there is ---------------------
MEL = ["--variant", "mel", "--n-mels", "80", "--hop-length", "200", "--device", "cpu", "--backend", "torch"]


@pytest.mark.parametrize(
    "args, ram, option",
    [
        (["--chunk-rows", "100000000"], None, "memory available"),  # 100 M rows of 25 KB: 2.6 TB a chunk
        (["--chunk-rows", str(2**62)], None, "memory available"),
        (["--chunk-rows", "100000", "--variant", "waveform"], 1 << 50, "over the 2,147,483,647 bytes a codec takes"),
        (
            ["--batch-size", "1000000000"],
            20 << 20,
            "--batch-size 1,000,000,000",
        ),  # the whole tree a block, 20 MB of memory
    ],
)
def test_a_layout_whose_buffers_exceed_the_memory_is_refused_before_the_store(
    args, ram, option, words10_tree, tmp_path, monkeypatch
):
    import speechcls.runtime

    if ram is not None:
        monkeypatch.setattr(speechcls.runtime, "available_ram", lambda: ram)
    out = tmp_path / "mel.zarr"
    line = _one_error_line(
        runner.invoke(app, ["featurize", "--root", str(words10_tree), "--out", str(out), *MEL, *args])
    )
    assert option in line and "Nothing was written" in line, line
    assert list(tmp_path.iterdir()) == []  # no store, no lock file


def test_the_default_layout_fits_with_room(words10_tree, tmp_path):
    from speechcls.config import FeatureParams
    from speechcls.runtime import available_ram
    from speechcls.store.layout import Layout, default_chunk_rows, layout_bytes

    for variant in ("spectrogram", "mel", "complex", "waveform"):
        params = FeatureParams(variant)
        rows = default_chunk_rows(params)
        need = layout_bytes(params, Layout(64_727, rows, -(-config.BATCH_SIZE // rows) * rows))
        assert need < 2 << 30 < available_ram(), (variant, need)  # the full release, the defaults: under 2 GiB


# --- weak: what a tree holds that is no clip is named by featurize too, as data info names it ---------------
def test_featurize_names_links_and_folders_that_are_no_clips(words10_tree, tmp_path):
    from helpers import copy_tree

    tree = copy_tree(words10_tree, tmp_path / "tree", per_word=2)
    word = sorted(p for p in tree.iterdir() if p.is_dir())[0].name
    (tree / word / "loop_nohash_0.wav").symlink_to("loop_nohash_0.wav")
    (tree / word / "dangling_nohash_0.wav").symlink_to("/nonexistent/x.wav")
    (tree / word / "dir_nohash_0.wav").mkdir()
    r = runner.invoke(app, ["featurize", "--root", str(tree), "--out", str(tmp_path / "s.zarr"), *MEL])
    assert r.exit_code == 0, r.output
    for name, reason in (("loop", "symbolic link loop"), ("dangling", "broken symbolic link"), ("dir", "directory")):
        assert f"left out {word}/{name}_nohash_0.wav (" in r.output and reason in r.output, r.output
    assert "3 entries of the tree (no clip files) left out: not in the store" in r.output

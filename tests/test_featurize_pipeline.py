"""The pipelined featurize (issue 14): decoding each file once from memory, chunks encoded off the
writer's thread, stages running at once. Its output must not depend on how the work is spread: the same
bytes for any worker count and feature sub-batch, samples equal to libsndfile's, chunk objects equal to
zarr's own writes, failures in any stage stopping the run with the store resumable."""

import io
import json
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import zarr
from typer.testing import CliRunner

from speechcls.audio import decode
from speechcls.cli import app
from speechcls.config import FeatureParams
from speechcls.featurize import featurize, profile, stages
from speechcls.store import IncompleteStore, reader
from speechcls.store import format as fmt
from speechcls.store.writer import encode_chunk

from helpers import SMALL_MEL, copy_tree


def objects(store: Path) -> dict[str, bytes]:
    """Every object of a store, the group's zarr.json without the attributes that time the run."""
    out = {}
    for p in sorted(store.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.relative_to(store).as_posix() == "zarr.json":
                j = json.loads(data)
                for key in ("seconds", "clips_per_s"):
                    j["attributes"].pop(key)
                data = json.dumps(j, sort_keys=True).encode()
            out[p.relative_to(store).as_posix()] = data
    return out


# --- decoding: one read per file, plain WAVs without libsndfile ---------------------------------------


def riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WAVE" + b"".join(kind + struct.pack("<I", len(data)) + data for kind, data in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(channels: int = 1, rate: int = 16000, bits: int = 16, tag: int = 1, extra: bytes = b"") -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits) + extra


def test_plain_wavs_decode_to_libsndfiles_samples(mini_root):
    """Every real clip, and written variants (stereo, 8 kHz, a LIST chunk before or after the data, an
    18-byte fmt), equal sf.read sample for sample; anything else is left to libsndfile (None)."""
    clips = sorted(mini_root.rglob("*.wav"))
    assert len(clips) == 300
    for path in clips:
        got = decode.pcm16_wav(path.read_bytes())
        ref, rate = sf.read(path, dtype="float32", always_2d=True)
        assert got is not None and got[1] == rate == 16000 and got[0].dtype == np.float32
        assert np.array_equal(got[0], ref[:, 0]), path
    pcm = np.random.default_rng(0).integers(-32768, 32768, size=(4001, 2), dtype=np.int16)
    plain = {
        "stereo 8 kHz": riff([(b"fmt ", fmt_chunk(2, 8000)), (b"data", pcm.tobytes())]),
        "LIST before the data": riff([(b"fmt ", fmt_chunk()), (b"LIST", b"INFOISFT" + b"\4\0\0\0abc\0"),
                                      (b"data", pcm[:, 0].tobytes())]),
        "LIST after the data": riff([(b"fmt ", fmt_chunk()), (b"data", pcm[:, 0].tobytes()), (b"LIST", b"INFO")]),
        "18-byte fmt": riff([(b"fmt ", fmt_chunk(extra=b"\0\0")), (b"data", pcm[:, 0].tobytes())]),
    }  # fmt: skip
    for what, data in plain.items():
        ref, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        got = decode.pcm16_wav(data)
        assert got is not None, what
        assert got[1] == rate and np.array_equal(got[0], ref.mean(axis=1, dtype=np.float32)), what
        assert np.array_equal(decode.audio_from_bytes(data, Path(what))[0], got[0])
    good = plain["stereo 8 kHz"]
    others = {
        "24-bit": riff([(b"fmt ", fmt_chunk(bits=24)), (b"data", b"\0" * 300)]),
        "float": riff([(b"fmt ", fmt_chunk(bits=32, tag=3)), (b"data", b"\0" * 400)]),
        "extensible": riff([(b"fmt ", fmt_chunk(tag=0xFFFE)), (b"data", b"\0" * 400)]),
        "truncated in the data": good[: len(good) // 2],
        "no samples": riff([(b"fmt ", fmt_chunk()), (b"data", b"")]),
        "odd data size": riff([(b"fmt ", fmt_chunk()), (b"data", b"\0" * 3)]),
        "data before fmt": riff([(b"data", b"\0" * 400), (b"fmt ", fmt_chunk())]),
        "an unknown chunk first": riff([(b"fmt ", fmt_chunk()), (b"junk", b"xx"), (b"data", b"\0" * 400)]),
        "not RIFF": b"text" * 40,
    }
    for what, data in others.items():
        assert decode.pcm16_wav(data) is None, what
    with pytest.raises(decode.BadAudio, match="truncated"):
        decode.audio_from_bytes(others["truncated in the data"], Path("t.wav"))
    with pytest.raises(decode.BadAudio, match="^Format not recognised"):  # libsndfile's words, no BytesIO repr
        decode.audio_from_bytes(others["not RIFF"], Path("t.wav"))


def test_decoded_rows_equal_libsndfiles_samples_fitted(tmp_path, mini_root):
    """decode_batch's rows (plain mono 16 kHz clips are scaled straight into their row) equal sf.read's
    samples padded with zeros / truncated to one clip, for the real clips, a longer one, a stereo one and
    an 8 kHz one (these two through pcm16_wav and the resampler)."""
    from concurrent.futures import ThreadPoolExecutor

    rels = sorted(p.relative_to(mini_root).as_posix() for p in mini_root.rglob("*.wav"))
    pcm = np.random.default_rng(1).integers(-32768, 32768, size=(20_000, 2), dtype=np.int16)
    extra = {
        "long_nohash_0.wav": riff([(b"fmt ", fmt_chunk()), (b"data", pcm[:, 0].tobytes())]),
        "stereo_nohash_0.wav": riff([(b"fmt ", fmt_chunk(2)), (b"data", pcm[:9_000].tobytes())]),
        "slow_nohash_0.wav": riff([(b"fmt ", fmt_chunk(1, 8000)), (b"data", pcm[:6_000, 0].tobytes())]),
    }
    (tmp_path / "x").mkdir()
    for name, data in extra.items():
        (tmp_path / "x" / name).write_bytes(data)
    for root, names in ((mini_root, rels), (tmp_path, [f"x/{n}" for n in extra])):
        with ThreadPoolExecutor(2) as pool:
            batch = decode.decode_batch(root, names, 16_000, 16_000, pool, group=7)
        assert batch.decoded.all() and not batch.skipped
        for row, rel in zip(batch.wave, names):
            ref, rate = sf.read(root / rel, dtype="float32", always_2d=True)  # libsndfile
            mono = ref.mean(axis=1, dtype=np.float32)
            if rate != 16_000:
                mono = decode.resample(mono, rate, 16_000)
            assert np.array_equal(row, decode.fit_length(mono, 16_000)), rel
    assert batch.resampled == 1


def test_each_file_is_read_once_and_its_crc_is_of_those_bytes(tmp_path, mini_root, monkeypatch):
    import builtins

    import google_crc32c

    tree = copy_tree(mini_root, tmp_path / "t", per_word=1, words=("yes", "no", "up"))
    rels = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.wav"))
    opened = []
    real_open = builtins.open

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(decode, "open", counting_open, raising=False)
    with stages.ThreadPoolExecutor(2) as pool:
        batch = decode.decode_batch(tree, rels, 16000, 16000, pool)
    assert sorted(opened) == sorted(tree / r for r in rels)  # once each
    assert batch.crc32c.tolist() == [google_crc32c.value((tree / r).read_bytes()) for r in rels]
    assert batch.decoded.all() and batch.read_s > 0


# --- encoding: zarr's bytes, off zarr's write path -------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "zstd-3", fmt.DEFAULT_CODEC, "blosc-zstd-3-shuffle"])
def test_encoded_chunks_are_the_bytes_zarr_writes(tmp_path, codec):
    """Features (every stored dtype) and the per-row records (bool, str, int64), a partial last chunk
    included, encoded by the writer equal what zarr's own setitem stores."""
    rng = np.random.default_rng(1)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    arrays = {
        "float32": (rng.standard_normal((50, 2, 7, 5)) * 100).astype("float32"),
        "float16": (rng.standard_normal((50, 1, 7, 5))).astype("float16"),
        "int16": rng.integers(-32768, 32767, (50, 1, 40), dtype=np.int16),
    }
    records = {
        "valid": rng.random(50) > 0.5,
        "reason": np.array(["", "truncated: header 'data : 32000 (should be 15978)'", "é"] * 16 + ["", ""], dtype=str),
        "crc": rng.integers(-1, 2**32, 50),
    }
    for name, values in {**arrays, **records}.items():
        compressors = fmt.checksummed(fmt.make_codec(codec)) if name in arrays else fmt.record_codecs()
        kw = dict(shape=values.shape, chunks=(16, *values.shape[1:]), dtype=values.dtype if name != "reason" else str,
                  compressors=compressors, config=fmt.ARRAY_CONFIG)  # fmt: skip
        theirs = group.create_array(f"{name}_zarr", **kw, fill_value=0 if name in arrays else None)
        ours = group.create_array(f"{name}_ours", **kw, fill_value=0 if name in arrays else None)
        theirs.with_config(fmt.ARRAY_CONFIG)[:] = values
        ours = ours.with_config(fmt.ARRAY_CONFIG)
        for c in range(4):  # 16, 16, 16, 2 rows
            where, data = encode_chunk(ours, c, values[c * 16 : (c + 1) * 16])
            assert where.path == f"{name}_ours/c/{c}" + "/0" * (values.ndim - 1)
            key = where.path.split("/", 1)[1]
            assert data.to_bytes() == (tmp_path / "s.zarr" / f"{name}_zarr" / key).read_bytes(), (name, c)


# --- the same bytes however the work is spread ----------------------------------------------------


@pytest.fixture(scope="module")
def tree_with_a_bad_file(mini_root, tmp_path_factory):
    tree = copy_tree(mini_root, tmp_path_factory.mktemp("pipe") / "t", per_word=4)
    (tree / "no" / "deadbeef_nohash_0.wav").write_bytes(b"not audio")
    return tree


@pytest.mark.parametrize("variant", ["complex", "waveform"])
def test_stores_are_byte_identical_whatever_the_workers_and_sub_batch(tree_with_a_bad_file, tmp_path, monkeypatch,
                                                                      variant):  # fmt: skip
    kw = dict(backend="torch", device="cpu", chunk_rows=16, batch_size=48)
    runs = {}
    for workers, sub in ((1, 32), (2, 32), (2, 7), (3, 64)):
        monkeypatch.setattr(stages, "SUB_BATCH", sub)
        out = tmp_path / f"w{workers}-s{sub}.zarr"
        r = featurize(FeatureParams(variant), tree_with_a_bad_file, out=out, workers=workers, **kw)
        assert r.clips == 121 and list(r.skipped) == ["no/deadbeef_nohash_0.wav"]
        runs[(workers, sub)] = objects(out)
    first = runs[(1, 32)]
    assert sum("features/c/" in k for k in first) == 8
    for key, got in runs.items():
        assert sorted(got) == sorted(first), key
        assert [k for k in first if got[k] != first[k]] == [], key


def test_files_from_storage_are_read_on_more_threads_with_the_same_bytes(tree_with_a_bad_file, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """Files read from the page cache are read on the decoding thread; once a block's bytes came from storage
    (/proc/thread-self/io's read_bytes grew by more than half of them, or its reads took over SLOW_READ_S a
    file), the next blocks are read on max(2, workers) threads. The store is the same either way."""
    import threading

    from speechcls.audio import decode

    kw = dict(backend="torch", device="cpu", chunk_rows=16, batch_size=48, workers=3)  # read tasks of 32 + 16
    readers, real = [], decode._read_files

    def reading(base, rels):
        readers.append(threading.current_thread().name)
        return real(base, rels)

    monkeypatch.setattr(decode, "_read_files", reading)
    monkeypatch.setattr(stages, "_storage_read_bytes", lambda: 0)  # every file from the page cache
    monkeypatch.setattr(stages, "SLOW_READ_S", float("inf"))  # however loaded this machine is
    featurize(FeatureParams("waveform"), tree_with_a_bad_file, out=tmp_path / "cached.zarr", **kw)
    assert len(set(readers)) == 1 and not readers[0].startswith("featurize-read")
    fetched = iter(range(0, 10**15, 10**9))  # every block read from storage
    monkeypatch.setattr(stages, "_storage_read_bytes", lambda: next(fetched))
    readers.clear()
    featurize(FeatureParams("waveform"), tree_with_a_bad_file, out=tmp_path / "storage.zarr", **kw)
    decoding = readers[0]  # the first block on the decoding thread, the rest on the readers
    assert readers[:2] == [decoding] * 2 and not decoding.startswith("featurize-read")
    assert readers[2:] and all(r.startswith("featurize-read_") for r in readers[2:])  # the reader pool's
    monkeypatch.setattr(stages, "_storage_read_bytes", lambda: 0)  # slow reads, not counted by the kernel
    monkeypatch.setattr(stages, "SLOW_READ_S", 0.0)
    readers.clear()
    featurize(FeatureParams("waveform"), tree_with_a_bad_file, out=tmp_path / "slow.zarr", **kw)
    assert readers[:2] == [decoding] * 2 and readers[2:] and all(r.startswith("featurize-read_") for r in readers[2:])
    first = objects(tmp_path / "cached.zarr")
    for name in ("storage", "slow"):
        got = objects(tmp_path / f"{name}.zarr")
        assert sorted(got) == sorted(first) and [k for k in first if got[k] != first[k]] == [], name


def test_profile_accounts_for_the_run(tree_with_a_bad_file, tmp_path):
    r = featurize(FeatureParams("mel", **SMALL_MEL), tree_with_a_bad_file, out=tmp_path / "m.zarr", device="cpu",
                  backend="torch", workers=2, chunk_rows=16, batch_size=32)  # fmt: skip
    p = r.profile
    assert p.clips == 121 and p.workers == 2 and list(p.stages) == ["decode", "features", "encode", "write"]
    assert 0 < p.setup_s and 0 < p.open_s < p.pipeline_s and 0 <= p.finish_s
    assert p.setup_s + p.pipeline_s + p.finish_s == pytest.approx(r.seconds)
    for name, st in p.stages.items():
        assert 0 < st["busy_s"] <= p.pipeline_s + 1e-6, name  # busy: overlapping tasks counted once
    assert 0 < p.stages["decode"]["read_s"]
    assert sum(st["cpu_s"] for st in p.stages.values()) > 0
    lines = p.lines()
    assert lines[0].split() == ["stage", "busy", "s", "of", "pipeline", "clips/s", "cpu", "s"]
    assert [line.split()[0] for line in lines[1:5]] == list(p.stages)
    assert lines[5].startswith("121 clips in") and "bound by" in lines[6]
    assert any(w in p.bound for w in ("the cores", "opening the store", *p.stages))


def test_busy_time_counts_overlapping_tasks_once():
    stage = profile._Stage("x")
    stage.spans = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7)]
    assert stage.busy_s() == pytest.approx(4.0)


def test_cli_workers_and_profile(tree_with_a_bad_file, tmp_path):
    out = tmp_path / "s.zarr"
    args = ["featurize", "--variant", "mel", "--root", str(tree_with_a_bad_file), "--out", str(out), "--device", "cpu",
            "--backend", "torch", "--workers", "2", "--profile"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "121 clips, 1 skipped" in r.output
    for stage in ("decode", "features", "encode", "write"):
        assert any(line.startswith(stage) for line in r.output.splitlines()), stage
    assert "2 workers" in r.output and "bound by" in r.output
    bad = CliRunner().invoke(app, [*args[:-3], "--workers", "0"])
    assert bad.exit_code != 0 and "--workers" in bad.output


# --- failures anywhere stop the run; the store resumes -------------------------------------------


@pytest.mark.parametrize("where", ["decode", "features", "encode"])
def test_a_failure_in_any_stage_stops_the_run_and_the_same_command_finishes_it(
    tree_with_a_bad_file, tmp_path, monkeypatch, where
):
    from speechcls.store import writer as store_writer

    kw = dict(backend="torch", device="cpu", chunk_rows=16, batch_size=16, workers=2)
    params = FeatureParams("mel", **SMALL_MEL)
    whole = featurize(params, tree_with_a_bad_file, out=tmp_path / "whole.zarr", **kw)
    # each fails on block 3 (16 rows a block and a chunk): decode_batch and _refuse_nonfinite run once
    # a block, in order, on the stage threads; encode_chunk on the pool, its error comes from a future
    calls = {"n": 0}
    targets = {"decode": (decode, "decode_batch"), "features": (stages, "_refuse_nonfinite"),
               "encode": (store_writer, "encode_chunk")}  # fmt: skip
    owner, name = targets[where]
    original = getattr(owner, name)

    def failing(*args, **kwargs):
        calls["n"] += 1
        if (args[1] == 3) if where == "encode" else (calls["n"] == 4):
            raise RuntimeError(f"{where} failed (test)")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match=f"{where} failed"):
        featurize(params, tree_with_a_bad_file, out=tmp_path / "part.zarr", **kw)
    assert threading.active_count() <= before  # every stage thread and worker has stopped
    monkeypatch.setattr(owner, name, original)
    with pytest.raises(IncompleteStore, match="3 of 8 blocks"):  # the blocks before the failing one
        reader.open_store(tmp_path / "part.zarr")
    # what a kill -9 during the block's concurrent object writes leaves: a temporary file, never renamed
    where = tmp_path / "part.zarr" / "features" / "c" / "3" / "0" / "0"
    where.mkdir(parents=True, exist_ok=True)
    (where / "0.0123456789abcdef0123456789abcdef.partial").write_bytes(b"half an object")
    again = featurize(params, tree_with_a_bad_file, out=tmp_path / "part.zarr", **kw)
    assert again.status == "resumed" and again.computed == 121 - 3 * 16
    assert objects(whole.store) == objects(again.store)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stores_are_byte_identical_whatever_the_workers(tree_with_a_bad_file, tmp_path):
    kw = dict(backend="torch", device="cuda", chunk_rows=16, batch_size=48)
    one = featurize(FeatureParams("complex"), tree_with_a_bad_file, out=tmp_path / "w1.zarr", workers=1, **kw)
    many = featurize(FeatureParams("complex"), tree_with_a_bad_file, out=tmp_path / "w4.zarr", workers=4, **kw)
    assert one.profile.workers == 1 and many.profile.workers == 4
    assert objects(one.store) == objects(many.store)


@pytest.mark.slow
def test_the_benchmark_times_worker_counts_and_each_stage_alone(tree_with_a_bad_file, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "featurize.py"
    common = ["--root", str(tree_with_a_bad_file), "--variants", "mel", "--out", str(tmp_path), "--repeats", "1"]
    subprocess.run([sys.executable, str(script), *common, "--engines", "torch/cpu", "--no-peer", "--workers", "1,2",
                    "--warmup", "0"], check=True, capture_output=True, timeout=600)  # fmt: skip
    rows = json.loads(next(tmp_path.glob("featurize-*.json")).read_text())["results"]
    assert [r["way"] for r in rows] == [f"speechcls featurize torch/cpu, workers={w}" for w in (1, 2)]
    assert [r["workers"] for r in rows] == [1, 2] and all(r["ratio_vs_peer"] is None for r in rows)
    assert all(set(r["stages"]) == {"decode", "features", "encode", "write"} and r["bound"] for r in rows)
    subprocess.run([sys.executable, str(script), *common, "--scaling", "--workers", "1,2", "--clips", "64"],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    rows = json.loads(next(tmp_path.glob("featurize_scaling-*.json")).read_text())["results"]
    decode_ways = {(r["way"], r["workers"]) for r in rows if r["stage"] == "decode"}
    ways = [f"{d}, {k}" for d in ("riff", "libsndfile") for k in ("threads", "processes")]
    assert decode_ways == {(way, w) for way in ways for w in (1, 2)}
    assert {r["stage"] for r in rows} == {"decode", "features", "encode", "write"}
    assert f"sub-batch {stages.SUB_BATCH}, 1 torch thread each" in {r["way"] for r in rows if r["stage"] == "features"}
    assert all(r["clips_per_s"] > 0 and r["per_worker"] == pytest.approx(r["clips_per_s"] / r["workers"]) for r in rows)

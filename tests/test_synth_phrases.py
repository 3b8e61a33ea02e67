"""Synthetic phrases (issue 25): synth speaks phrases into class folders named as written, at
--clip-seconds, with a simple room (--reverb) and noise at a drawn SNR (--snr) measured here from the
clips; with none of them the tree is byte for byte what synth wrote before (the demo's)."""

import hashlib
import subprocess

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechcls import config
from speechcls.cli import app
from speechcls.data.synth import parse_snr, synthesize
from speechcls.data.tree import index_tree, speakers_by_split

PHRASES = ("hey computer", "lights on")


def tree_digest(tree) -> str:
    h = hashlib.sha256()
    for p in sorted(p for p in tree.rglob("*") if p.is_file()):
        h.update(str(p.relative_to(tree)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_the_default_tree_is_unchanged(tmp_path, espeak):
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    if "1.51" not in version:
        pytest.skip(f"the pinned bytes are espeak-ng 1.51's; this is {version.strip()}")
    out, _ = synthesize(tmp_path / "t", words=("yes", "no", "up"), voices=3, seed=0, noise=0.05)
    # written by synth before phrases, clip lengths, rooms and SNRs existed (commit 42a2c48), same command
    assert tree_digest(out) == "fce93339da4fe1f4e973419466255df6717ca5b099ba20cf51c1e9c3036f1017"


def test_phrases_at_a_clip_length(tmp_path, espeak):
    out, _ = synthesize(tmp_path / "p", words=(*PHRASES, "stop"), voices=6, seed=1, clip_seconds=1.5)
    index = index_tree(out)
    assert index.classes == ["hey computer", "lights on", "stop"]
    assert {sf.info(out / c.path).frames for c in index.clips} == {24000}
    groups = speakers_by_split(index, index.official)
    assert all(groups[s] for s in config.SPLITS) and not groups["train"] & groups["test"]
    assert len(index.background) == 3


def speech_region(x: np.ndarray) -> slice:
    loud = np.flatnonzero(x)
    return slice(loud[0], loud[-1] + 1)


def test_snr_is_the_drawn_one_and_the_speech_stays(tmp_path, espeak):
    kw = dict(words=("hey computer",), voices=4, seed=2, clip_seconds=1.5)
    clean, _ = synthesize(tmp_path / "clean", **kw)
    noisy, _ = synthesize(tmp_path / "noisy", **kw, snr=(10.0, 10.0))
    for wav in sorted((clean / "hey computer").glob("*.wav")):
        c, _ = sf.read(wav, dtype="float64")
        n, _ = sf.read(noisy / "hey computer" / wav.name, dtype="float64")
        a = float(n @ c / (c @ c))  # the mix may be scaled down to stay under full scale; never clipped
        noise = n - a * c
        region = speech_region(c)
        snr = 10 * np.log10(a**2 * np.mean(c[region] ** 2) / np.mean(noise**2))
        assert snr == pytest.approx(10.0, abs=1.0)
        assert np.abs(n).max() <= 0.99 + 1e-4


def test_reverb_keeps_the_peak_and_adds_a_tail(tmp_path, espeak):
    kw = dict(words=("stop",), voices=4, seed=2, clip_seconds=1.5)
    dry, _ = synthesize(tmp_path / "dry", **kw)
    wet, _ = synthesize(tmp_path / "wet", **kw, reverb=1.0)
    for wav in sorted((dry / "stop").glob("*.wav")):
        d, _ = sf.read(wav, dtype="float64")
        w, _ = sf.read(wet / "stop" / wav.name, dtype="float64")
        assert np.abs(w).max() == pytest.approx(np.abs(d).max(), abs=2e-4)
        end = speech_region(d).stop
        if end + 1600 < len(d):  # room after the word: the reverberation rings on into it
            assert np.mean(w[end : end + 1600] ** 2) > 0 == np.mean(d[end : end + 1600] ** 2)
        assert not np.allclose(w, d, atol=1e-3)


def test_a_phrase_longer_than_the_clip_is_cut_with_a_warning(tmp_path, espeak):
    with pytest.warns(UserWarning, match=r"clips were longer than 0.3 s and were cut"):
        synthesize(tmp_path / "short", words=("hey computer",), voices=3, seed=0, clip_seconds=0.3)


def test_bad_synth_options_are_refused(tmp_path, espeak):
    assert parse_snr("5,20") == (5.0, 20.0) and parse_snr("10") == (10.0, 10.0)
    for bad in ("20,5", "x", "1,2,3", "nan"):
        with pytest.raises(ValueError, match="--snr"):
            parse_snr(bad)
    cli = CliRunner()
    for args, why in (
        (["--noise", "0.1", "--snr", "5,20"], "two rules for the same noise"),
        (["--reverb", "2"], "the chance of a room"),
        (["--clip-seconds", "30"], "synth writes clips of 0.1 to 10 s"),
        (["--words", "hey -x"], "never an option like '-x'"),
    ):
        r = cli.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--voices", "3", *args])
        assert r.exit_code != 0 and why in " ".join(r.output.split()), r.output

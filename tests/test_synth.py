import filecmp
import json

import numpy as np
import pytest
import soundfile as sf

from speechcls import config
from speechcls.data.synth import MARKER, choose_voices, synthesize
from speechcls.data.tree import index_tree, speakers_by_split, split_counts

WORDS = ("yes", "no", "up", "down")


def test_layout_and_audio_format(synth_tree):
    index = index_tree(synth_tree)
    assert index.classes == sorted(WORDS)
    assert len(index.clips) == 6 * 4
    assert len(set(index.speakers)) == 6
    for clip in index.clips:
        info = sf.info(synth_tree / clip.path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    assert index.background and all((synth_tree / p).is_file() for p in index.background)
    for p in index.background:
        info = sf.info(synth_tree / p)
        assert info.samplerate == 16000 and info.duration >= 10
    assert index.missing == {"validation_list.txt": 0, "testing_list.txt": 0}


def test_clips_hold_speech_not_silence(synth_tree):
    for path in sorted(synth_tree.glob("*/*_nohash_0.wav")):
        audio, _ = sf.read(path, dtype="float32")
        peak = np.abs(audio).max()
        assert 0.2 < peak <= 1.0
        # speech is loud for a stretch of at least 100 ms (envelope over 10 % of the peak)
        env = np.convolve(np.abs(audio), np.ones(160) / 160, mode="same")
        assert (env > 0.1 * peak).sum() > 1600


def test_lists_are_speaker_disjoint_and_cover_every_split(synth_tree):
    index = index_tree(synth_tree)
    codes = index.split("official")
    groups = speakers_by_split(index, codes)
    assert all(groups[s] for s in config.SPLITS)
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    # every clip of a held-out speaker is listed: 1 speaker x 4 words each for validation and test
    assert split_counts(codes) == {"train": 16, "validation": 4, "test": 4}


def test_same_seed_same_bytes_other_seed_other_tree(synth_tree, tmp_path):
    again, what = synthesize(tmp_path / "again", words=WORDS, voices=6, seed=3, noise=0.05)
    assert what == "written"
    cmp = filecmp.dircmp(synth_tree, again)
    files = [p.relative_to(synth_tree) for p in synth_tree.rglob("*") if p.is_file()]
    match, mismatch, errors = filecmp.cmpfiles(synth_tree, again, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors and len(match) == len(files) > 24
    assert not cmp.left_only and not cmp.right_only
    other, _ = synthesize(tmp_path / "other", words=WORDS, voices=6, seed=4, noise=0.05)
    assert sorted(index_tree(other).speakers) != sorted(index_tree(synth_tree).speakers)


def test_rerun_is_a_no_op_and_other_params_need_overwrite(tmp_path, espeak):
    out = tmp_path / "t"
    assert synthesize(out, words=("go",), voices=3, seed=0)[1] == "written"
    stamp = (out / "go").stat().st_mtime_ns, sorted(p.name for p in (out / "go").iterdir())
    assert synthesize(out, words=("go",), voices=3, seed=0)[1] == "present"
    assert ((out / "go").stat().st_mtime_ns, sorted(p.name for p in (out / "go").iterdir())) == stamp
    with pytest.raises(ValueError, match="--overwrite"):
        synthesize(out, words=("go",), voices=4, seed=0)
    assert synthesize(out, words=("go",), voices=4, seed=0, overwrite=True)[1] == "written"
    assert len(list((out / "go").iterdir())) == 4
    assert json.loads((out / MARKER).read_text())["voices"] == 4
    assert not list(tmp_path.glob(".*synth-tmp"))


def test_overwrite_replaces_only_a_tree_synth_wrote(tmp_path, espeak):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"not a tree written by `speechcls synth`.*choose another --out") as e:
            synthesize(mine, words=("go",), voices=3, seed=0, overwrite=overwrite)
        assert str(mine) in str(e.value) and "pass --overwrite" not in str(e.value)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file"):
        synthesize(tmp_path / "file", words=("go",), voices=3, seed=0, overwrite=True)
    assert (tmp_path / "file").read_text() == "not a folder"
    own = tmp_path / "own"
    assert synthesize(own, words=("go",), voices=3, seed=0)[1] == "written"
    assert synthesize(own, words=("go",), voices=3, seed=0, overwrite=True)[1] == "written"  # its own: replaced
    assert len(list((own / "go").iterdir())) == 3


def test_default_out_is_data_synth_commands(tmp_path, monkeypatch, espeak):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPEECHCLS_DATA", raising=False)
    out, _ = synthesize(words=("on",), voices=3)
    assert out == tmp_path.joinpath("data", "synth_commands").relative_to(tmp_path)
    assert (tmp_path / "data" / "synth_commands" / "on").is_dir()


def test_voices_are_distinct_and_many():
    voices = choose_voices(500, seed=0)
    assert len(set(voices)) == 500
    assert len({v.accent for v in voices}) >= 6 and len({v.variant for v in voices}) >= 20
    with pytest.raises(ValueError, match="voices"):
        choose_voices(2, seed=0)


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match="apt-get install espeak-ng"):
        synthesize(tmp_path / "x", words=("go",), voices=3)


def test_bad_words_are_refused(tmp_path, espeak):
    with pytest.raises(ValueError, match="folder name"):
        synthesize(tmp_path / "x", words=("../up",), voices=3)

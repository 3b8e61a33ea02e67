"""Manifests (issue 25): a CSV or JSONL table of clips indexes as a tree does; splits from the split
column, else Speech Commands' own hash of the speaker (checked against the release's lists), else of the
file name; labels with spaces, unicode and commas; every bad input a message naming the line, or a
counted skip, never a traceback and never a label moved into another column."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import FeatureParams
from speechcls.data.manifest import read_manifest
from speechcls.data.tree import index_tree, which_set
from speechcls.featurize import featurize

from helpers import read_store, write_wav


def mini_rows(mini_root, split: bool, speaker: bool = True) -> list[dict]:
    """The mini tree's 300 clips as manifest rows, the release's split where `split`."""
    index = index_tree(mini_root)
    rows = []
    for clip, code in zip(index.clips, index.official):
        row = {"path": f"tree/{clip.path}", "label": index.classes[clip.label]}
        if split:
            row["split"] = ("train", "validation", "test")[code]
        if speaker:
            row["speaker"] = clip.speaker
        rows.append(row)
    return rows


def write_csv(path, rows: list[dict], columns=None) -> "Path":  # noqa: F821
    import csv

    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
    return path


@pytest.fixture
def linked(tmp_path, mini_root):
    """tmp_path/tree -> the mini tree: a manifest in tmp_path names its clips as tree/<word>/<file>.wav."""
    (tmp_path / "tree").symlink_to(mini_root)
    return tmp_path


def test_speaker_hash_is_speech_commands_own_rule(mini_root, linked):
    # the release's lists were written by which_set on the speaker id: a manifest without a split column but
    # with speakers reproduces them for every one of the 300 clips
    index = read_manifest(write_csv(linked / "m.csv", mini_rows(mini_root, split=False)))
    tree = index_tree(mini_root)
    assert index.classes == tree.classes and [c.path for c in index.clips] == [f"tree/{c.path}" for c in tree.clips]
    assert np.array_equal(index.official, tree.official)
    assert index.name == "m" and index.root == linked
    # without a speaker column the rule reads the file name up to _nohash_: the same speaker, the same split
    by_name = read_manifest(write_csv(linked / "n.csv", mini_rows(mini_root, split=False, speaker=False)))
    assert np.array_equal(by_name.official, tree.official)
    assert which_set("0a7c2a8d_nohash_0.wav") == which_set("0a7c2a8d")


def test_csv_and_jsonl_give_one_index_and_the_tree_store_bytes(mini_root, linked):
    rows = mini_rows(mini_root, split=True)
    csv_index = read_manifest(write_csv(linked / "m.csv", rows))
    (linked / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    jsonl_index = read_manifest(linked / "m.jsonl")
    assert csv_index.clips == jsonl_index.clips and np.array_equal(csv_index.official, jsonl_index.official)
    # the same clips, labels and splits from a manifest and from the tree: the same stored numbers
    params = FeatureParams("mel", n_mels=40, hop_length=400)
    kw = dict(backend="torch", device="cpu", chunk_rows=64)
    a = read_store(featurize(params, mini_root, out=linked / "tree.zarr", **kw).store)
    b = read_store(featurize(params, manifest=linked / "m.csv", out=linked / "m.zarr", **kw).store)
    assert a["features"].tobytes() == b["features"].tobytes()
    assert np.array_equal(a["label"], b["label"]) and np.array_equal(a["split"], b["split"])
    assert [p.removeprefix("tree/") for p in b["path"]] == list(a["path"])
    assert b["attrs"]["dataset"]["manifest"] == str((linked / "m.csv").resolve())
    assert a["attrs"]["classes"] == b["attrs"]["classes"]


def test_labels_with_spaces_unicode_and_commas(tmp_path):
    for i, label in enumerate(["hey computer", "lights, on", "café ☕", "hey computer"]):
        write_wav(tmp_path / "clips" / f"{i}.wav", np.zeros(8000, np.int16), 16000, "PCM_16")
    (tmp_path / "m.csv").write_text(
        'path,label,speaker\nclips/0.wav,hey computer,a\nclips/1.wav,"lights, on",b\nclips/2.wav,café ☕,c\n'
        "clips/3.wav, hey computer ,d\n",
        encoding="utf-8",
    )
    index = read_manifest(tmp_path / "m.csv")
    assert index.classes == ["café ☕", "hey computer", "lights, on"]  # code-point order
    assert [index.classes[c.label] for c in index.clips] == ["hey computer", "lights, on", "café ☕", "hey computer"]
    assert [c.speaker for c in index.clips] == ["a", "b", "c", "d"]


def test_split_column_wins_and_accepts_the_usual_names(tmp_path):
    for i in range(5):
        write_wav(tmp_path / f"{i}.wav", np.zeros(4000, np.int16), 16000, "PCM_16")
    (tmp_path / "m.csv").write_text(
        "path,label,split\n0.wav,a,train\n1.wav,a,valid\n2.wav,b,TEST\n3.wav,b,dev\n4.wav,b,\n"
    )
    index = read_manifest(tmp_path / "m.csv")
    assert index.official.tolist() == [0, 1, 2, 1, which_set("4.wav")]


# --- bad input: the line named, nothing shifted -----------------------------------------------------------
BAD = {
    "unknown column": ("path,label,duration\na.wav,yes,1.0\n", ":1: unknown column(s) 'duration'"),
    "no label column": ("path,speaker\na.wav,x\n", ":1: no 'label' column"),
    "repeated column": ("path,label,label\na.wav,yes,no\n", "given twice"),
    "unquoted comma": ("path,label\na.wav,lights, on\n", ":2: 3 fields where the header has 2"),
    "too few fields": ("path,label,speaker\na.wav,yes\n", ":2: 2 field(s) where the header has 3"),
    "mixed delimiters": (
        "path,label\na.wav;yes\n",
        ":2: 1 field(s) where the header has 2 (path, label), and a semicolon",
    ),
    "mixed header": ("path,label;split\na.wav,yes\n", ":1: the header mixes delimiters"),
    "empty label": ("path,label\na.wav,yes\nb.wav,\n", ":3: the label of b.wav is empty"),
    "escaping path": ("path,label\na.wav,yes\n../x.wav,no\n", ":3: the path '../x.wav' has a '..' component"),
    "absolute path": ("path,label\n/etc/x.wav,no\n", ":2: the path '/etc/x.wav' is an absolute path"),
    "duplicate path": ("path,label\na.wav,yes\n./a.wav,no\n", ":3: a.wav is already on line 2"),
    "unknown split": ("path,label,split\na.wav,yes,holdout\n", ":2: split 'holdout'"),
    "one column": ("path\na.wav\n", ":1: the header 'path' has one column"),
    "empty file": ("\n\n", "the manifest is empty"),
    "bad quote": ('path,label\na.wav,"yes\n', "not CSV"),
    "jsonl not json": ('{"path": "a.wav", "label": "yes"}\n{"path": "b.wav", "label": \n', ":2: not JSON"),
    "jsonl unknown key": ('{"path": "a.wav", "label": "yes", "text": "yes"}\n', ":1: unknown column(s) 'text'"),
    "jsonl label not text": ('{"path": "a.wav", "label": ["yes"]}\n', ':1: label is ["yes"], not text'),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_names_the_line(tmp_path, case):
    text, expected = BAD[case]
    write_wav(tmp_path / "a.wav", np.zeros(4000, np.int16), 16000, "PCM_16")
    write_wav(tmp_path / "b.wav", np.zeros(4000, np.int16), 16000, "PCM_16")
    path = tmp_path / ("m.jsonl" if case.startswith("jsonl") else "m.csv")
    path.write_text(text)
    with pytest.raises(ValueError, match=None) as e:
        read_manifest(path)
    assert expected in str(e.value) and str(path) in str(e.value)
    r = CliRunner().invoke(app, ["data", "info", "--manifest", str(path), "--no-check-audio"])
    assert r.exit_code == 1 and "Traceback" not in r.output and expected in " ".join(r.output.split())


def test_not_utf8_names_the_line(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"path,label\na.wav,yes\nb.wav,caf\xe9\n")
    with pytest.raises(ValueError, match=r"m.csv:3: not UTF-8"):
        read_manifest(tmp_path / "m.csv")


def test_unusable_files_are_counted_skips(tmp_path):
    write_wav(tmp_path / "ok.wav", np.zeros(8000, np.int16), 16000, "PCM_16")
    write_wav(tmp_path / "ok2.wav", np.zeros(12000, np.int16), 8000, "PCM_16")
    write_wav(tmp_path / "short.wav", np.zeros(1500, np.int16), 16000, "PCM_16")  # 0.094 s
    write_wav(tmp_path / "long.wav", np.zeros(8000 * 600, np.int16), 8000, "PCM_16")  # exactly 10 minutes
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "m.csv").write_text(
        "path,label\nok.wav,yes\nmissing.wav,yes\nshort.wav,no\nlong.wav,no\nfolder.wav,no\nok2.wav,no\n"
    )
    index = read_manifest(tmp_path / "m.csv")
    assert [c.path for c in index.clips] == ["ok.wav", "ok2.wav"] and index.classes == ["no", "yes"]
    assert index.unusable == {
        "missing.wav": "line 3: no such file",
        "short.wav": "line 4: 0.094 s long, under 0.1 s: too short to hold a word",
        "long.wav": "line 5: 10.0 minutes long, 10 minutes or more: a recording to cut into clips, not a clip "
        "(background noise goes in --noise-dir)",
        "folder.wav": "line 6: a folder, not an audio file",
    }
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(
        app, ["featurize", "--manifest", str(tmp_path / "m.csv"), "--out", str(out), "--variant", "waveform"]
    )
    assert r.exit_code == 0, r.output
    assert "left out missing.wav (line 3: no such file)" in r.output and "4 manifest row(s) left out" in r.output
    assert sorted(read_store(out)["path"]) == ["ok.wav", "ok2.wav"]


def test_manifest_and_root_are_one_source(tmp_path, mini_root):
    write_wav(tmp_path / "a.wav", np.zeros(4000, np.int16), 16000, "PCM_16")
    (tmp_path / "m.csv").write_text("path,label\na.wav,yes\n")
    r = CliRunner().invoke(app, ["featurize", "--manifest", str(tmp_path / "m.csv"), "--root", str(mini_root)])
    assert r.exit_code == 1 and "a store is made from one source" in r.output
    r = CliRunner().invoke(app, ["featurize", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path)])
    assert r.exit_code == 1 and "is or holds the folder of the manifest" in r.output


def test_an_edited_manifest_is_not_the_stored_one(tmp_path):
    for i in range(4):
        write_wav(tmp_path / f"{i}.wav", np.zeros(4000, np.int16), 16000, "PCM_16")
    (tmp_path / "m.csv").write_text("path,label,split\n0.wav,a,train\n1.wav,a,test\n2.wav,b,train\n3.wav,b,test\n")
    params, out = FeatureParams("waveform"), tmp_path / "s.zarr"
    assert featurize(params, manifest=tmp_path / "m.csv", out=out, device="cpu").status == "written"
    assert featurize(params, manifest=tmp_path / "m.csv", out=out, device="cpu").status == "present"
    (tmp_path / "m.csv").write_text("path,label,split\n0.wav,a,train\n1.wav,a,train\n2.wav,b,train\n3.wav,b,test\n")
    with pytest.raises(ValueError):  # a split moved: the store is no longer what the manifest says
        featurize(params, manifest=tmp_path / "m.csv", out=out, device="cpu")
    assert featurize(params, manifest=tmp_path / "m.csv", out=out, device="cpu", overwrite=True).status == "written"
    assert read_store(out)["split"].tolist().count(2) == 1
    shutil.rmtree(out)


def test_verify_checks_the_manifest_a_store_was_made_from(tmp_path):
    """verify --manifest: the manifest's rows and every clip it lists, as verify --root does for a tree."""
    for i in range(4):
        write_wav(tmp_path / f"{i}.wav", (np.arange(4000) % 50 * i).astype(np.int16), 16000, "PCM_16")
    rows = "path,label,split\n0.wav,a,train\n1.wav,a,test\n2.wav,b,train\n3.wav,b,test\n"
    (tmp_path / "m.csv").write_text(rows)
    out = tmp_path / "s.zarr"
    featurize(FeatureParams("waveform"), manifest=tmp_path / "m.csv", out=out, device="cpu")
    verify = ["verify", str(out), "--manifest", str(tmp_path / "m.csv")]
    r = CliRunner().invoke(app, verify)
    assert r.exit_code == 0 and ": ok:" in r.output, r.output
    (tmp_path / "m.csv").write_text(rows.replace("1.wav,a,test", "1.wav,b,test"))  # a label changed
    r = CliRunner().invoke(app, verify)
    assert r.exit_code == 1 and "manifest's rows" in r.output and f"the manifest {tmp_path / 'm.csv'}" in r.output
    (tmp_path / "m.csv").write_text(rows)
    write_wav(tmp_path / "2.wav", np.ones(4000, np.int16), 16000, "PCM_16")  # a clip's audio changed
    r = CliRunner().invoke(app, verify)
    assert r.exit_code == 1 and "1 clip(s) whose audio bytes changed since featurize: 2.wav" in r.output
    (tmp_path / "m.csv").write_text(rows + "4.wav,b,train\n")
    write_wav(tmp_path / "4.wav", np.ones(4000, np.int16), 16000, "PCM_16")  # a clip added
    r = CliRunner().invoke(app, verify)
    assert r.exit_code == 1 and "in the manifest but not in the store: 4.wav" in r.output
    r = CliRunner().invoke(app, [*verify, "--root", str(tmp_path)])
    assert r.exit_code == 1 and "a store is made from one source" in r.output

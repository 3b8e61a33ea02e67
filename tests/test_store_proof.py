"""Verify proves what a store holds (issue 26, item 3): every chunk's place, every array's metadata and
every attribute are what featurize wrote. The rules are held on every array, field and attribute of a
real store, not on the issue's examples alone."""

import errno
import itertools
import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import FeatureParams
from speechcls.featurize import featurize
from speechcls.store import DamagedStore, reader
from speechcls.store.format import ARRAYS, UNDIGESTED

from helpers import SMALL_MEL, as_format_4

runner = CliRunner()


def make(tree, out, **kw):
    kw = {"backend": "torch", "device": "cpu", "chunk_rows": 16, "batch_size": 32} | kw
    return featurize(FeatureParams("mel", **SMALL_MEL), tree, out=out, **kw)


def objects(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def original(words10_tree, tmp_path_factory):
    """100 clips in chunks of 16 rows, blocks of 32: 4 blocks, 7 chunks an array, a short last block."""
    return make(words10_tree, tmp_path_factory.mktemp("proof") / "mel.zarr").store


@pytest.fixture
def copy(original, tmp_path):
    return shutil.copytree(original, tmp_path / "mel.zarr")


def one_line(r) -> str:
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def chunk_keys(store: Path) -> list[str]:
    return [k for k in objects(store) if "/c/" in k]


def test_any_two_chunk_objects_swapped_fail_verify_naming_both(copy, original):
    """Every pair of chunk objects with different bytes (within an array and across arrays, records and
    per-block rows included), a seeded sample of 80 of them: each swap fails verify naming both keys (one
    of them where a block's record itself moved)."""
    keys = chunk_keys(copy)
    data = {k: (copy / k).read_bytes() for k in keys}
    pairs = [(a, b) for a, b in itertools.combinations(keys, 2) if data[a] != data[b]]
    assert len(pairs) > 500
    sample = random.Random(0).sample(pairs, 80) + [("features/c/1/0/0/0", "features/c/2/0/0/0")]
    sample += [("label/c/0", "audio_crc32c/c/0"), ("chunk_crc32c/c/1/0", "chunk_crc32c/c/2/0")]
    for a, b in sample:
        (copy / a).write_bytes(data[b])
        (copy / b).write_bytes(data[a])
        problems = " ".join(reader.verify(copy)["problems"])
        assert "not the objects featurize wrote at their place" in problems, (a, b)
        if not a.startswith("chunk_crc32c") and not b.startswith("chunk_crc32c"):
            assert a in problems and b in problems, (a, b, problems)
        else:  # a block's record moved: it is named; its block's chunks are unproven until recomputed
            assert (a if a.startswith("chunk_crc32c") else b) in problems, (a, b, problems)
            if a.startswith("chunk_crc32c") and b.startswith("chunk_crc32c"):  # two records swapped
                assert a in problems and b in problems, (a, b, problems)
        (copy / a).write_bytes(data[a])
        (copy / b).write_bytes(data[b])
    assert reader.verify(copy)["problems"] == []
    assert objects(copy) == objects(original)


def test_swapped_chunks_are_never_already_complete_featurize_puts_them_back(copy, original, words10_tree):
    a, b = "features/c/1/0/0/0", "features/c/4/0/0/0"
    da, db = (copy / a).read_bytes(), (copy / b).read_bytes()
    (copy / a).write_bytes(db)
    (copy / b).write_bytes(da)
    (copy / "label/c/0").write_bytes((original / "audio_crc32c/c/0").read_bytes())
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 1 and "DAMAGED" in r.output and a in r.output and "label/c/0" in r.output, r.output
    fixed = make(words10_tree, copy)
    assert fixed.status == "repaired" and fixed.computed == 64  # blocks 0 and 2 (chunk 1 and 4), label rewritten
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 0
    assert {k: v for k, v in objects(copy).items() if k != "zarr.json"} == {
        k: v for k, v in objects(original).items() if k != "zarr.json"
    }


def _edits(value):
    """Values different from `value` that are still valid JSON of a plausible kind."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1]
    if isinstance(value, str):
        return [value + "x"]
    if isinstance(value, list):
        return [value[:-1] if value else ["x"], [*value, value[-1] if value else 0]]
    if isinstance(value, dict):
        return [{**value, "x": 1}] + ([{k: v for k, v in list(value.items())[1:]}] if value else [])
    return ["x"]


def test_any_edit_of_any_arrays_metadata_fails_open_verify_and_featurize(copy, words10_tree):
    """Every top-level field of every array's zarr.json, changed, added to or cut: open refuses the store
    naming the file, verify fails, featurize refuses it (never "already complete") pointing to --overwrite."""
    cases = 0
    for name in ARRAYS:
        meta = copy / name / "zarr.json"
        text = meta.read_text()
        doc = json.loads(text)
        for field, value in doc.items():
            for edited in _edits(value):
                meta.write_text(json.dumps({**doc, field: edited}))
                with pytest.raises(DamagedStore, match=f"metadata in {name}/zarr.json is not what featurize wrote"):
                    reader.open_store(copy)
                assert any(f"{name}/zarr.json" in p for p in reader.verify(copy)["problems"]), (name, field)
                cases += 1
        meta.write_text(json.dumps({**doc, "extra": 1}))
        assert reader.verify(copy)["problems"], name
        meta.write_text(text)
    assert cases > 150
    # the two, through the CLI and featurize
    for name, edit in (
        ("label", lambda d: d | {"data_type": "int32"}),
        ("features", lambda d: d | {"codecs": [c for c in d["codecs"] if c["name"] != "crc32c"]}),
    ):
        meta = copy / name / "zarr.json"
        text = meta.read_text()
        meta.write_text(json.dumps(edit(json.loads(text))))
        r = runner.invoke(app, ["verify", str(copy)])
        assert r.exit_code == 1 and "DAMAGED" in r.output and "Traceback" not in r.output, r.output
        assert f"{name}/zarr.json is not what featurize wrote" in r.output and "--overwrite" in r.output, r.output
        with pytest.raises(DamagedStore, match=f"{name}/zarr.json is not what featurize wrote.*--overwrite"):
            make(words10_tree, copy)
        line = one_line(runner.invoke(app, ["train", "--store", str(copy), "--device", "cpu", "--epochs", "1"]))
        assert f"{name}/zarr.json" in line, line
        meta.write_text(text)
    assert make(words10_tree, copy).status == "present"


@pytest.mark.parametrize("where", ["zarr.json", "label/zarr.json", "features/zarr.json", "chunk_crc32c/zarr.json"])
def test_a_flipped_byte_in_any_zarr_json_is_named(copy, words10_tree, where):
    """Each flipped byte of a zarr.json (a seeded sample of offsets): an error naming the file for verify,
    info and featurize, never the JSON parser's own, never "already complete"."""
    path = copy / where
    original = path.read_bytes()
    named = where if where != "zarr.json" else "the store's zarr.json"
    for offset in random.Random(where).sample(range(len(original)), 6):
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        verified = runner.invoke(app, ["verify", str(copy)])
        line = one_line(runner.invoke(app, ["info", str(copy)]))
        for text in (line, verified.output):
            assert named in text or "were edited" in text or "format version" in text, (offset, text)
            assert "json could not read" not in text and "Traceback" not in text, (offset, text)
        assert verified.exit_code == 1
        r = runner.invoke(app, ["featurize", "--root", str(words10_tree), "--out", str(copy), "--variant", "mel",
                                "--n-mels", "80", "--hop-length", "200", "--chunk-rows", "16", "--batch-size", "32",
                                "--device", "cpu", "--backend", "torch"])  # fmt: skip
        assert r.exit_code == 1 and "already complete" not in r.output and "--overwrite" in r.output, r.output
        path.write_bytes(original)
    if where == "zarr.json":  # its arrays show it is a store: --overwrite makes it anew
        path.write_bytes(b"{" + original[1:-5])
        assert make(words10_tree, copy, overwrite=True).status == "written"


def test_any_attribute_edited_removed_or_added_fails_and_its_digest_is_required(copy):
    meta = copy / "zarr.json"
    text = meta.read_text()
    doc = json.loads(text)
    attrs = doc["attributes"]
    checked = 0
    for key, value in attrs.items():
        if key in UNDIGESTED:
            continue
        for edited in [*_edits(value), "__removed__"]:
            new = {k: v for k, v in attrs.items() if k != key} if edited == "__removed__" else {**attrs, key: edited}
            meta.write_text(json.dumps({**doc, "attributes": new}))
            problems = " ".join(reader.verify(copy)["problems"])
            assert key in problems or key == "format_version" and "format version" in problems, (key, edited)
            checked += 1
        # its digest removed (the value kept): unproven, so damaged
        digests = {k: v for k, v in attrs["attr_digests"].items() if k != key}
        meta.write_text(json.dumps({**doc, "attributes": {**attrs, "attr_digests": digests}}))
        assert reader.verify(copy)["problems"], key
    assert checked > 40
    meta.write_text(json.dumps({**doc, "attributes": {**attrs, "mine": 1}}))
    with pytest.raises(DamagedStore, match="attributes mine were not written by featurize"):
        reader.open_store(copy)
    # the case: attr_digests deleted and two classes swapped
    classes = attrs["classes"]
    swapped = {k: v for k, v in attrs.items() if k != "attr_digests"} | {
        "classes": [classes[1], classes[0], *classes[2:]]
    }
    meta.write_text(json.dumps({**doc, "attributes": swapped}))
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 1 and "attr_digests are gone" in r.output, r.output
    meta.write_text(text)
    assert reader.verify(copy)["problems"] == []


def test_a_format_4_store_reads_verify_says_unproven_and_featurize_rebuilds_it(copy, original, words10_tree):
    as_format_4(copy)
    group = reader.open_store(copy)  # the same arrays: training, info and evaluate read it
    assert (reader.read_all(group, "label") == reader.read_all(reader.open_store(original), "label")).all()
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 1 and "UNPROVEN" in r.output and "records neither its chunks' places" in r.output, r.output
    assert make(words10_tree, copy).status == "rebuilt"
    assert {k: v for k, v in objects(copy).items() if k != "zarr.json"} == {
        k: v for k, v in objects(original).items() if k != "zarr.json"
    }
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 0
    # format 4's own records still hold: its attribute digests
    copy4 = as_format_4(shutil.copytree(original, copy.with_name("old4.zarr")))
    meta = copy4 / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["classes"] = doc["attributes"]["classes"][::-1]
    meta.write_text(json.dumps(doc))
    with pytest.raises(DamagedStore, match="attributes classes were edited"):
        reader.open_store(copy4)


@pytest.mark.parametrize("inside", ["notes.txt", "features/notes.txt", "label/c/notes", ".DS_Store"])
def test_overwrite_never_deletes_a_file_featurize_did_not_write(copy, words10_tree, inside):
    (copy / inside).write_text("mine")
    before = objects(copy)
    args = ["featurize", "--root", str(words10_tree), "--out", str(copy), "--variant", "mel", "--n-mels", "80",
            "--hop-length", "200", "--chunk-rows", "16", "--batch-size", "32", "--device", "cpu", "--backend",
            "torch", "--overwrite"]  # fmt: skip
    line = one_line(runner.invoke(app, args))
    assert inside in line and "featurize did not write" in line, line
    assert objects(copy) == before
    (copy / inside).unlink()
    assert runner.invoke(app, args).exit_code == 0


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("when", ["before", "while writing"])
def test_featurize_into_a_folder_it_cannot_write_names_the_folder(code, when, words10_tree, tmp_path, monkeypatch):
    """Read-only or forbidden (root writes anywhere, so the system's refusal is stood in for): one line
    saying it cannot write, naming the folder and the system's reason, not "free space"."""
    import os

    out = tmp_path / "ro" / "mel.zarr"
    if when == "before":
        real = Path.mkdir

        def refuse(self, *a, **kw):
            if self == out.parent:
                raise OSError(code, os.strerror(code), str(self))
            return real(self, *a, **kw)

        monkeypatch.setattr(Path, "mkdir", refuse)
    else:
        from zarr.storage import LocalStore

        async def refuse_set(self, key, value):
            raise OSError(code, os.strerror(code), os.path.join(str(self.root), key))

        monkeypatch.setattr(LocalStore, "set", refuse_set)
    args = ["featurize", "--root", str(words10_tree), "--out", str(out), "--variant", "mel", "--n-mels", "80",
            "--hop-length", "200", "--device", "cpu", "--backend", "torch"]  # fmt: skip
    line = one_line(runner.invoke(app, args))
    assert "cannot write" in line and os.strerror(code) in line and "free" not in line.lower(), line
    assert str(out.parent if when == "before" else out) in line, line

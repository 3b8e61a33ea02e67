"""The keywords task (issue 25): --keywords' labels as classes after _silence_ and _unknown_, every other
label _unknown_, the kws12 rule for the counts; kws12 is this task with Speech Commands' ten words and
serves the very same examples; the run records the labels like --task."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from typer.testing import CliRunner

from speechcls import config
from speechcls.cli import app
from speechcls.config import FeatureParams, TrainConfig
from speechcls.data.tasks import make_task, parse_keywords, task_split
from speechcls.data.tree import index_tree
from speechcls.featurize import featurize
from speechcls.loader import FeatureLoader

from helpers import SMALL_MEL

TEN = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def test_kws12_is_the_keywords_task_of_the_ten_words(mini_root):
    index = index_tree(mini_root)
    kws12 = make_task("kws12", index.classes)
    mine = make_task("keywords", index.classes, TEN)
    assert kws12.classes == mine.classes == ("_silence_", "_unknown_", *TEN)
    assert np.array_equal(kws12.mapping, mine.mapping)
    labels, paths = np.array([c.label for c in index.clips]), np.array(index.paths)
    for code, split in enumerate(config.SPLITS):
        rows = np.flatnonzero(index.official == code)
        a = task_split(kws12, rows, labels[rows], paths[rows], split)
        b = task_split(mine, rows, labels[rows], paths[rows], split)
        assert np.array_equal(a.rows, b.rows) and np.array_equal(a.labels, b.labels)
        assert (a.n_silence, a.n_unknown, a.n_known) == (b.n_silence, b.n_unknown, b.n_known)
        # Warden's counts, from the folders: ceil(10 %) of the ten words' clips each
        known = sum(index.classes[labels[r]] in TEN for r in rows)
        assert a.n_known == known and a.n_silence == a.n_unknown == math.ceil(known / 10)


def test_keywords_classes_counts_and_unknowns(mini_root):
    index = index_tree(mini_root)
    task = make_task("keywords", index.classes, ("marvin", "sheila"))
    assert task.classes == ("_silence_", "_unknown_", "marvin", "sheila")
    labels, paths = np.array([c.label for c in index.clips]), np.array(index.paths)
    rows = np.arange(len(index.clips))  # every clip as one split
    view = task_split(task, rows, labels, paths, "train")
    assert view.n_known == 20 and view.n_unknown == 2 and view.n_silence == 2
    chosen = [index.classes[labels[r]] for r, y in zip(view.rows, view.labels) if y == 1]
    assert len(chosen) == 2 and not set(chosen) & {"marvin", "sheila"}
    assert view.counts() == {"_silence_": 2, "_unknown_": 2, "marvin": 10, "sheila": 10}


def test_parse_keywords():
    assert parse_keywords("zero, one,two") == ("zero", "one", "two")
    assert parse_keywords('hey computer,"lights, on",hey computer') == ("hey computer", "lights, on")
    assert parse_keywords("café ☕") == ("café ☕",)
    for bad, why in ((" , ", "names no label"), ("yes,_unknown_", "a class of every keyword task already")):
        with pytest.raises(ValueError, match=why):
            parse_keywords(bad)


def test_a_keyword_that_is_no_class_is_named(mini_root):
    index = index_tree(mini_root)
    with pytest.raises(ValueError, match=r"'Yes', 'hey' are no class of the store; its classes are bed, bird"):
        make_task("keywords", index.classes, ("Yes", "hey", "no"))
    with pytest.raises(ValueError, match="--task words takes none"):
        make_task("words", index.classes, ("yes",))


def test_the_run_config_keeps_the_keywords():
    cfg = TrainConfig(task="keywords", keywords=("hey computer", "lights, on")).validate()
    back = TrainConfig(**json.loads(json.dumps(asdict(cfg))))  # config.json and the checkpoint's config
    assert back == cfg and back.keywords == ("hey computer", "lights, on")
    assert cfg.loader_config("train", "cpu").keywords == cfg.keywords
    for bad in (dict(task="keywords"), dict(task="kws12", keywords=("yes",))):
        with pytest.raises(ValueError, match="--keywords w1,w2 is the keywords task"):
            TrainConfig(**bad).validate()
    assert TrainConfig(**{k: v for k, v in asdict(TrainConfig()).items() if k != "keywords"}).keywords == ()


def test_the_loader_serves_the_same_examples_for_kws12_and_its_words(mini_root, synth_tree, tmp_path):
    store = featurize(
        FeatureParams("mel", **SMALL_MEL), mini_root, out=tmp_path / "m.zarr", backend="torch", device="cpu"
    ).store
    noise = synth_tree / config.BACKGROUND_DIR
    kw = dict(batch_size=16, seed=1, noise_dir=str(noise))
    a = FeatureLoader(store, "validation", task="kws12", **kw)
    b = FeatureLoader(store, "validation", task="keywords", keywords=TEN, **kw)
    assert a.classes == b.classes and np.array_equal(a.example_rows, b.example_rows)
    assert np.array_equal(a.labels, b.labels)
    xa, xb = [x for x, _ in a], [x for x, _ in b]
    assert all(bool((p == q).all()) for p, q in zip(xa, xb))  # silence examples included


def test_train_cli_refuses_two_tasks(tmp_path):
    r = CliRunner().invoke(app, ["train", "--store", str(tmp_path / "x.zarr"), "--task", "kws12", "--keywords", "a"])
    assert r.exit_code != 0 and "--keywords is the keywords task, and --task kws12 is another" in r.output

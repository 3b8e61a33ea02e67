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

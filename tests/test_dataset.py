import numpy as np
import pytest

from speechcls import config
from speechcls.data.tree import index_tree, random_split, speakers_by_split, split_counts


def test_mini_index_counts(mini_root):
    index = index_tree(mini_root)
    assert index.classes == list(config.V001_WORDS)
    assert len(index.clips) == 300
    assert split_counts(index.split("official")) == {"train": 205, "validation": 44, "test": 51}
    # the lists name all 6,798 / 6,835 files of the full release; 44 / 51 of them are here
    assert index.missing == {"validation_list.txt": 6798 - 44, "testing_list.txt": 6835 - 51}
    assert index.name == "speech_commands_v0.01_mini"
    assert len(set(index.speakers)) == 41


def test_mini_labels_and_speakers_from_paths(mini_root):
    index = index_tree(mini_root)
    assert index.paths == sorted(index.paths)
    for clip in index.clips:
        word, name = clip.path.split("/")
        assert index.classes[clip.label] == word
        assert name.startswith(clip.speaker + "_nohash_")
        assert (mini_root / clip.path).is_file()


def test_official_split_is_speaker_disjoint(mini_root):
    index = index_tree(mini_root)
    groups = speakers_by_split(index, index.split("official"))
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]


def test_official_split_follows_the_lists(mini_root):
    index = index_tree(mini_root)
    listed = {line.strip() for line in (mini_root / "validation_list.txt").read_text().splitlines()}
    codes = index.split("official")
    assert {p for p, c in zip(index.paths, codes) if c == 1} == listed & set(index.paths)


def test_random_split_deterministic_and_seeded(mini_root):
    index = index_tree(mini_root)
    a, b, c = index.split("random", 7), index.split("random", 7), index.split("random", 8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert split_counts(a) == {"train": 180, "validation": 60, "test": 60}


def test_random_split_floor_rounding_and_input_order():
    paths = [f"w/{i:03d}_nohash_0.wav" for i in range(7)]
    codes = random_split(paths, seed=1)
    # floor(0.6 * 7) = 4, floor(0.2 * 7) = 1, the remainder (2) to test
    assert split_counts(codes) == {"train": 4, "validation": 1, "test": 2}
    # the same paths in another order get the same split, element for element
    shuffled = list(reversed(paths))
    again = random_split(shuffled, seed=1)
    assert dict(zip(shuffled, again)) == dict(zip(paths, codes))


def test_random_split_matches_its_definition():
    # independent restatement: sorted paths, permuted by default_rng(seed), cut 60/20/20 with floors
    paths = [f"{w}/{s:04x}_nohash_0.wav" for s in range(53) for w in ("go", "no")]
    rng = np.random.default_rng(5)
    sorted_paths = sorted(paths)
    perm = [sorted_paths[i] for i in rng.permutation(len(paths))]
    n = len(paths)
    expected = {p: 0 for p in perm[: int(n * 0.6)]}
    expected |= {p: 1 for p in perm[int(n * 0.6) : int(n * 0.6) + int(n * 0.2)]}
    expected |= {p: 2 for p in perm[int(n * 0.6) + int(n * 0.2) :]}
    assert dict(zip(paths, random_split(paths, 5).tolist())) == expected


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_tree_without_word_folders_is_refused(tmp_path):
    (tmp_path / "_background_noise_").mkdir()
    _touch(tmp_path / "_background_noise_" / "white_noise.wav")
    (tmp_path / "validation_list.txt").write_text("")
    with pytest.raises(ValueError, match="no word folders") as e:
        index_tree(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        index_tree(tmp_path / "absent")


def test_clip_name_without_nohash_names_the_file(tmp_path):
    _touch(tmp_path / "yes" / "abc_nohash_0.wav")
    _touch(tmp_path / "yes" / "recording1.wav")
    with pytest.raises(ValueError, match="_nohash_") as e:
        index_tree(tmp_path)
    assert "recording1.wav" in str(e.value)


def test_background_noise_is_not_a_class_and_lists_are_optional(tmp_path):
    for p in ("yes/a1_nohash_0.wav", "yes/a2_nohash_1.wav", "no/a1_nohash_0.wav", "_background_noise_/pink.wav"):
        _touch(tmp_path / p)
    _touch(tmp_path / "LICENSE")
    index = index_tree(tmp_path)
    assert index.classes == ["no", "yes"]
    assert [c.label for c in index.clips] == [0, 1, 1]
    assert [c.utterance for c in index.clips] == [0, 0, 1]
    assert index.background == ["_background_noise_/pink.wav"]
    assert index.official is None
    with pytest.raises(ValueError, match="random"):
        index.split("official")
    assert split_counts(index.split("random")) == {"train": 1, "validation": 0, "test": 2}


def test_clip_in_both_lists_is_refused(tmp_path):
    _touch(tmp_path / "yes" / "a1_nohash_0.wav")
    (tmp_path / "validation_list.txt").write_text("yes/a1_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("yes/a1_nohash_0.wav\n")
    with pytest.raises(ValueError, match="both"):
        index_tree(tmp_path)


def test_a_list_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    _touch(tmp_path / "yes" / "a1_nohash_0.wav")
    (tmp_path / "validation_list.txt").write_bytes("yes/café_nohash_0.wav\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"validation_list.txt: not UTF-8 text .*save it as UTF-8"):
        index_tree(tmp_path)
    (tmp_path / "validation_list.txt").write_bytes("\ufeffyes/a1_nohash_0.wav\n".encode())  # a BOM is fine
    assert index_tree(tmp_path).official.tolist() == [1]


def test_wav_entries_that_are_no_file_are_listed_as_unusable(tmp_path):
    import os

    _touch(tmp_path / "yes" / "a1_nohash_0.wav")
    (tmp_path / "yes" / "a2_nohash_0.wav").mkdir()
    os.symlink("nowhere_nohash_0.wav", tmp_path / "yes" / "a3_nohash_0.wav")
    os.symlink("a4_nohash_0.wav", tmp_path / "yes" / "a4_nohash_0.wav")  # points at itself
    index = index_tree(tmp_path)
    assert index.paths == ["yes/a1_nohash_0.wav"]
    assert index.unusable == {
        "yes/a2_nohash_0.wav": "a directory, not an audio file",
        "yes/a3_nohash_0.wav": "a broken symbolic link (to nowhere_nohash_0.wav)",
        "yes/a4_nohash_0.wav": "a symbolic link loop",
    }


def test_unreadable_audio_gets_the_system_reason_not_system_error(tmp_path, monkeypatch):
    import os

    from speechcls.audio import decode

    def reason(path):
        with pytest.raises(decode.BadAudio) as e:
            decode.read_audio(path)
        return str(e.value)

    (tmp_path / "x.wav").mkdir()
    assert reason(tmp_path / "x.wav") == "a directory, not an audio file"
    os.symlink("nowhere.wav", tmp_path / "link.wav")
    assert reason(tmp_path / "link.wav") == "cannot read the file: a broken symbolic link (to nowhere.wav)"
    assert reason(tmp_path / "gone.wav") == "cannot read the file: no such file or directory"
    # no read permission: root reads any file, so the refusal is simulated as libsndfile and open() give it
    import soundfile

    def libsndfile(path, *args, **kwargs):
        raise RuntimeError(f"Error opening {path!r}: System error.")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    locked = tmp_path / "locked.wav"
    locked.write_bytes(b"RIFF")
    monkeypatch.setattr(soundfile, "SoundFile", libsndfile)
    monkeypatch.setattr(decode, "open", refuse, raising=False)
    assert reason(locked) == "cannot read the file: permission denied"
    assert decode.survey(tmp_path, ["x.wav"]).unreadable == {"x.wav": "a directory, not an audio file"}

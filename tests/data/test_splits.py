"""splits: deterministic by seed, by subject, sizes, CSV round trip."""
import pytest

from ldseg_suite.data import splits
from ldseg_suite.errors import LDSegError

NAMES = [f"case{i:02d}" for i in range(20)]


def test_split_is_identical_for_a_seed_and_differs_for_another():
    a = splits.split_cases(NAMES, seed=0)
    assert a == splits.split_cases(NAMES, seed=0)
    reordered = splits.split_cases(NAMES[::-1], seed=0)  # by name, not by the order the names come in
    assert {k: sorted(v) for k, v in reordered.items()} == {k: sorted(v) for k, v in a.items()}
    assert a != splits.split_cases(NAMES, seed=1)
    assert [len(a[p]) for p in ("train", "val", "test")] == [14, 2, 4]
    assert sorted(a["train"] + a["val"] + a["test"]) == NAMES


def test_split_keeps_subjects_together():
    names = [f"subj{i:02d}_frame{j}" for i in range(10) for j in range(3)]
    s = splits.split_cases(names, (0.6, 0.2, 0.2), seed=1, subject_of=lambda n: n.split("_")[0])
    subjects = {p: {n.split("_")[0] for n in s[p]} for p in s}
    assert len(subjects["train"]) == 6 and len(subjects["val"]) == 2 and len(subjects["test"]) == 2
    assert not (subjects["train"] & subjects["test"]) and not (subjects["val"] & subjects["test"])
    assert all(len(s[p]) == 3 * len(subjects[p]) for p in s)


def test_small_sets_keep_one_case_in_train_and_test():
    s = splits.split_cases(["a", "b", "c"], seed=0)
    assert [len(s[p]) for p in ("train", "val", "test")] == [1, 1, 1]
    s = splits.split_cases(["a", "b"], (0.8, 0.0, 0.2), seed=0)
    assert [len(s[p]) for p in ("train", "val", "test")] == [1, 0, 1]
    s = splits.split_cases(["a", "b", "c", "d"], (0.1, 0.1, 0.8), seed=0)  # test may not eat the train set
    assert len(s["train"]) == 1 and len(s["val"]) == 1 and len(s["test"]) == 2


def test_too_few_cases_say_how_many_are_needed():
    with pytest.raises(LDSegError, match="2 subject\\(s\\) found but the split .* needs at least 3"):
        splits.split_cases(["a", "b"], (0.7, 0.1, 0.2))
    with pytest.raises(LDSegError, match="expected three fractions"):
        splits.split_cases(NAMES, (0.9, 0.1, 0.0))


def test_split_file_round_trip(tmp_path):
    split = splits.split_cases(NAMES, seed=0)
    splits.write_split(tmp_path / "run" / "split.csv", split)
    text = (tmp_path / "run" / "split.csv").read_text().splitlines()
    assert text[0] == "name,split" and len(text) == 21
    assert splits.read_split(tmp_path / "run" / "split.csv") == split
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LDSegError, match="bad.csv: unreadable split file"):
        splits.read_split(tmp_path / "bad.csv")
    with pytest.raises(LDSegError, match="missing.csv: unreadable split file"):
        splits.read_split(tmp_path / "missing.csv")


def test_subject_pattern_keeps_a_patients_frames_in_one_split():
    names = [f"patient{p:03d}_frame{f:02d}" for p in range(12) for f in (1, 12)]
    split = splits.split_cases(names, (0.6, 0.2, 0.2), seed=3, subject_of=splits.subject_function(r"^patient\d+"))
    part_of = {n: part for part, members in split.items() for n in members}
    assert sorted(part_of) == sorted(names)
    for p in range(12):
        assert part_of[f"patient{p:03d}_frame01"] == part_of[f"patient{p:03d}_frame12"]
    assert len(split["test"]) == 2 * round(0.2 * 12)  # fractions count subjects, not cases
    group = splits.subject_function(r"^(\w+?)_scan")  # with a group: the group is the subject
    assert group("sub7_scan2") == group("sub7_scan9") == "sub7"
    with pytest.raises(LDSegError, match=r"Subject = \^patient\\d\+: does not match the case name 'control_01'"):
        splits.split_cases(names + ["control_01"], (0.6, 0.2, 0.2), subject_of=splits.subject_function(r"^patient\d+"))
    assert splits.subject_function("") is None

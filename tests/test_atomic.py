"""Atomic writes: a finished file or the previous one, never half a file, and no temporary files left."""

import os
import stat

import pandas as pd
import pytest

from finvae._atomic import UMASK, atomic_folder, atomic_path, remove_leftovers, write_csv, write_text


def test_write_text_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    assert write_text("new", target) == target
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~UMASK  # an ordinary file, not mkstemp's private one


def test_an_error_mid_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("date,score\n2020-01-02,1.0\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            temporary.write_text("date,sc")  # half a file...
            raise RuntimeError("disk full")  # ...then the writer dies
    assert target.read_text() == "date,score\n2020-01-02,1.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_the_temporary_file_keeps_the_suffix_for_writers_that_read_it(tmp_path):
    with atomic_path(tmp_path / "figure.png") as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path and temporary.name.startswith(".")
        temporary.write_bytes(b"png")
    assert (tmp_path / "figure.png").read_bytes() == b"png"


def test_write_csv_round_trips(tmp_path):
    frame = pd.DataFrame({"score": [1.5, 2.5]}, index=pd.to_datetime(["2020-01-02", "2020-01-03"]))
    path = write_csv(frame, tmp_path / "t.csv", index_label="Date")
    back = pd.read_csv(path, index_col="Date", parse_dates=True)
    pd.testing.assert_frame_equal(back, frame, check_names=False, check_freq=False)


def test_a_missing_folder_is_an_error_not_a_silent_write(tmp_path):
    with pytest.raises(OSError):
        write_text("x", tmp_path / "no" / "such" / "file.txt")
    assert not os.path.exists(tmp_path / "no")


def test_atomic_folder_replaces_a_folder_whole_or_not_at_all(tmp_path):


    target = tmp_path / "model"
    target.mkdir()
    (target / "old.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "new.json").write_text("half")
            raise RuntimeError("crash while saving")
    assert [p.name for p in target.iterdir()] == ["old.json"]
    with atomic_folder(target) as staging:
        (staging / "new.json").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging or old folder left
    assert target.stat().st_mode & 0o777 == 0o777 & ~UMASK


def test_remove_leftovers_deletes_only_the_temporary_files_of_the_names_given(tmp_path):
    for name in (".scores.csv.ab12cd.tmp.csv", ".scores.csv.ef34gh.tmp.csv", ".flags.csv.ij56kl.tmp.csv",
                 "scores.csv", ".scores.csv.notes"):
        (tmp_path / name).write_text("x")
    assert remove_leftovers(tmp_path, ["scores.csv"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".flags.csv.ij56kl.tmp.csv", ".scores.csv.notes",
                                                         "scores.csv"]


def test_a_link_is_followed_and_the_mode_of_the_replaced_file_kept(tmp_path):
    shared = tmp_path / "dash" / "scores.csv"
    shared.parent.mkdir()
    shared.write_text("yesterday\n")
    os.chmod(shared, 0o640)
    link = tmp_path / "latest.csv"
    link.symlink_to(shared)

    write_text("today\n", link)

    assert link.is_symlink() and shared.read_text() == "today\n"
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o640
    assert sorted(p.name for p in shared.parent.iterdir()) == ["scores.csv"]


def test_a_linked_model_folder_is_replaced_through_the_link(tmp_path):
    real = tmp_path / "models" / "v1"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("old")
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)

    with atomic_folder(link) as staging:
        (staging / "new.txt").write_text("new")

    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v1"]  # nothing left beside it

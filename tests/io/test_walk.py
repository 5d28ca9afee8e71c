"""files_under: every file of an export folder, nothing skipped in silence (links followed,
unreadable folders and broken links refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import voxeldose
from voxeldose.image import Image
from voxeldose.io._walk import files_under
from voxeldose.io.dicom import load_image
from voxeldose.io.series import SeriesHeader, write_pet_series


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.txt").write_text("x")
    (root / "a" / "one.dcm").write_text("x")
    (root / "a" / "b" / "two.dcm").write_text("x")


def test_lists_every_file_sorted_as_rglob_does(tmp_path):
    _tree(tmp_path)
    assert files_under(tmp_path) == sorted(f for f in tmp_path.rglob("*") if f.is_file())


def test_follows_a_link_to_a_folder_once_and_survives_a_loop(tmp_path):
    _tree(tmp_path / "export")
    case = tmp_path / "case"
    case.mkdir()
    (case / "series").symlink_to(tmp_path / "export" / "a", target_is_directory=True)
    (case / "again").symlink_to(tmp_path / "export" / "a", target_is_directory=True)  # the same folder twice
    (tmp_path / "export" / "a" / "b" / "up").symlink_to(tmp_path / "export" / "a", target_is_directory=True)
    names = sorted(f.name for f in files_under(case))
    assert names == ["one.dcm", "two.dcm"]  # rglob lists none of them: it does not enter links


def test_a_broken_link_is_refused_naming_it(tmp_path):
    _tree(tmp_path)
    (tmp_path / "a" / "IM0009.dcm").symlink_to(tmp_path / "gone.dcm")
    with pytest.raises(voxeldose.InputError, match=r"IM0009\.dcm is a link to .*gone\.dcm, which does not exist"):
        files_under(tmp_path)


def test_a_folder_that_cannot_be_listed_is_refused_naming_it(tmp_path, unlistable):
    _tree(tmp_path)
    unlistable(tmp_path / "a" / "b")
    with pytest.raises(voxeldose.DicomError, match=r"cannot list the folder .*a/b \(Permission denied\)"):
        files_under(tmp_path, voxeldose.DicomError)
    # the loader says so, where rglob left the folder's slices out without a word
    with pytest.raises(voxeldose.DicomError, match="cannot list the folder"):
        load_image(tmp_path)


def test_a_series_linked_into_the_case_folder_loads(tmp_path):
    import datetime as dt

    when = dt.datetime(2024, 3, 1, 12, 0)
    image = Image(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) * 100.0, (3.0, 3.0, 3.0), units="BQML")
    write_pet_series(tmp_path / "export" / "PET", image, SeriesHeader(acquisition_datetime=when, series_datetime=when),
                     radiopharmaceutical_start=when - dt.timedelta(hours=20), total_dose_bq=3e9,
                     half_life_s=64.1 * 3600, positron_fraction=31.86e-6, decay_factor=1.0)
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "PET").symlink_to(tmp_path / "export" / "PET", target_is_directory=True)
    loaded = load_image(tmp_path / "case")
    # to the 16-bit slices' quantisation step (the largest value / 32767)
    assert loaded.same_grid(image) and np.allclose(loaded.array, image.array, rtol=0, atol=image.array.max() / 32767)

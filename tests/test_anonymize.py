"""Anonymized outputs: the DICOM Basic Profile for what voxeldose writes (UIDs mapped
consistently, dates shifted with their intervals kept, identifiers and paths withheld), checked on
every output file of a run and a batch of an export carrying a patient's identity."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import shutil

import pydicom
import pytest

from voxeldose import InputError
from voxeldose.anonymize import EPOCH, WITHHELD, Anonymizer, anonymous_uid, identifying_patterns
from voxeldose.cli import main
from voxeldose.phantoms.export import write_liver_case

ADMIN = dt.datetime(2026, 1, 15, 10, 30)


# ---------------------------------------------------------------------------- the mapping


def test_uids_map_consistently_one_way_and_keep_dicoms_own():
    uid = "1.2.840.113619.2.55.3.2831164356.781.1346833458.536"
    new = anonymous_uid(uid)
    assert new == anonymous_uid(uid) and new != anonymous_uid(uid + "1")
    assert re.fullmatch(r"2\.25\.[1-9]\d{0,38}", new) and len(new) <= 64
    assert anonymous_uid("1.2.840.10008.5.1.4.1.1.481.2") == "1.2.840.10008.5.1.4.1.1.481.2"  # RT Dose SOP class


@pytest.mark.parametrize("text, expected", [
    ("administration 2026-01-15T10:30:00 (case file)", "administration 2000-01-01T00:00:00 (case file)"),
    ("scan 2026-01-16T06:30:00.500000", "scan 2000-01-01T20:00:00.500000"),
    ("the scan's date 2026-01-17", "the scan's date 2000-01-03"),
    ("AcquisitionDate 20260116, DT 20260116063000.000", "AcquisitionDate 20000102, DT 20000101200000"),
    ("RadiopharmaceuticalStartTime 10:45:00", "RadiopharmaceuticalStartTime 00:15:00"),
    # an aware time: the interval on the wall clocks of a naive anchor, the offset dropped
    ("start 2026-01-15T12:30:00+01:00", "start 2000-01-01T02:00:00"),
    ("series 1.2.826.0.1.3680043.8.498.123 of /data/exports/Smith_John/PET",
     f"series {anonymous_uid('1.2.826.0.1.3680043.8.498.123')} of {WITHHELD}"),
    # numbers, units, versions and non-dates are left alone
    ("1.04 g/cm3, 3.0 GBq, Bq/mL, 20261399 counts, voxeldose 0.1.0, 64.10 h", None),
])
def test_texts_lose_dates_uids_and_paths_and_keep_the_rest(text, expected):
    assert Anonymizer(ADMIN).text(text) == (text if expected is None else expected)


def test_without_an_anchor_every_date_is_withheld():
    a = Anonymizer(None)
    assert a.text("scan 2026-01-16T06:30:00 on 20260116 at 06:30") == f"scan {WITHHELD} on {WITHHELD} at {WITHHELD}"
    assert a.datetime(ADMIN) is None


def test_intervals_are_kept_exactly():
    a = Anonymizer(ADMIN)
    for hours in (0.0, 0.5, 20.25, 71.9, 240.0):
        t = ADMIN + dt.timedelta(hours=hours)
        assert a.datetime(t) - a.datetime(ADMIN) == t - ADMIN
    assert a.datetime(ADMIN) == EPOCH


def test_the_patients_name_is_withheld_in_any_spelling_but_not_its_words():
    a = Anonymizer(ADMIN, identifying_patterns({"PatientName": "Liver^Anna", "PatientID": "MRN-99812"}, ("Y90 PET",)))
    for spelling in ("Liver^Anna", "LIVER_ANNA", "Anna Liver", "anna.liver.dcm"):
        assert "anna" not in a.text(f"file {spelling}").lower(), spelling
    # a name's parts, and an unquoted description, are words of the messages
    assert a.text("the liver VOI; Y90 PET scan; 'Y90 PET' series; MRN-99812; MRN-998123") == (
        f"the liver VOI; Y90 PET scan; '{WITHHELD}' series; {WITHHELD}; MRN-998123")


# ---------------------------------------------------------------------------- every output


@pytest.fixture(scope="module")
def identified(tmp_path_factory):
    """A liver-phantom export whose headers carry a patient's identity, in a folder named after
    the patient (as exports often are), and what must not appear in anonymized outputs."""
    root = tmp_path_factory.mktemp("export")
    case = root / "cohort" / "Smith_John"
    write_liver_case(case, case_id="tare-017", pet_spacing_xyz_mm=(6.0, 6.0, 6.0), ct_spacing_xyz_mm=(6.0, 6.0, 6.0),
                     write=("PET", "CT", "RTSTRUCT"))
    uids = set()
    for f in (case / "PET").iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Smith^John", "MRN-99812", "ACC-5531"
        ds.StudyDescription, ds.SeriesDescription = "SIRT right lobe", "Y90 PET John Smith"
        ds.ReferringPhysicianName = "Who^Doctor"
        ds.save_as(f)
        uids |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.FrameOfReferenceUID), str(ds.SOPInstanceUID)}
    needles = ["Smith", "John", "MRN-99812", "ACC-5531", "SIRT right lobe", "Who^Doctor", str(root), *sorted(uids)]
    return case, needles, pydicom.dcmread(next((case / "PET").iterdir()))


def _leaks(folder, needles):
    """Needles, and any 2026 date or the administration/scan clock times, in the files of ``folder``."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        # the report's figures are base64 PNGs: "John" turns up in 200 kB of them by chance
        text = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", data.decode("utf-8", "replace"))
        hits = [n for n in needles if n.lower() in text.lower()]
        hits += re.findall(r"2026-\d\d-\d\d|2026[01]\d[0-3]\d|10:30(?::00)?|06:30(?::00)?", text)
        if hits:
            found[str(path.relative_to(folder))] = sorted(set(hits))[:5]
    return found


def test_run_anonymized_leaks_nothing_and_keeps_the_intervals(identified, tmp_path, capsys):
    case, needles, source = identified
    out = tmp_path / "out"
    assert main(["--log-json", "run", str(case / "PET"), "--voi", str(case / "RTSTRUCT.dcm"), "--case",
                 str(case / "case.toml"), "--out", str(out), "--anonymize"]) == 0
    assert _leaks(out, needles) == {}
    logs = capsys.readouterr()
    assert _leaks_in_text(logs.out + logs.err, needles) == []
    records = [json.loads(line) for line in logs.err.splitlines() if line.startswith("{")]
    assert records and all("elapsed_s" in r and "time" not in r for r in records)  # the run's date dates the scan
    metrics = json.loads((out / "metrics.json").read_text())
    times = metrics["provenance"]["calibration"]["times"]
    admin = dt.datetime.fromisoformat(times["administration"]["value"])
    scan = dt.datetime.fromisoformat(times["scan_start"]["value"])
    assert admin == EPOCH and scan - admin == dt.timedelta(hours=20)  # the phantom's 20 h, exactly
    assert metrics["case"]["administration_time"] == EPOCH.isoformat()
    assert metrics["provenance"]["anonymized"]["profile"].startswith("DICOM PS3.15")
    ds = pydicom.dcmread(out / "rtdose.dcm")
    assert ds.PatientName == "tare-017" and ds.PatientIdentityRemoved == "YES"
    assert ds.FrameOfReferenceUID == anonymous_uid(str(source.FrameOfReferenceUID))
    assert ds.StudyInstanceUID == anonymous_uid(str(source.StudyInstanceUID))
    # the doses are those of the plain run: anonymizing changes no number
    plain = tmp_path / "plain"
    assert main(["-q", "run", str(case / "PET"), "--voi", str(case / "RTSTRUCT.dcm"), "--case",
                 str(case / "case.toml"), "--out", str(plain)]) == 0
    assert json.loads((plain / "metrics.json").read_text())["vois"] == metrics["vois"]
    assert (plain / "dvh.csv").read_text() == (out / "dvh.csv").read_text()


def _leaks_in_text(text, needles):
    return [n for n in needles if n.lower() in text.lower()] + re.findall(r"2026-\d\d-\d\d|2026[01]\d[0-3]\d", text)


def test_a_case_id_that_is_the_patients_name_is_refused(identified, tmp_path, capsys):
    case, needles, _ = identified
    out = tmp_path / "out"
    assert main(["-q", "run", str(case / "PET"), "--voi", str(case / "RTSTRUCT.dcm"), "--case", str(case / "case.toml"),
                 "--out", str(out), "--anonymize", "--case-id", "SMITH_JOHN"]) == 2
    err = capsys.readouterr().err
    assert "holds the patient's name" in err and "--case-id" in err and not out.exists()


def test_an_error_of_an_anonymized_run_names_no_path(identified, tmp_path, capsys):
    case, needles, _ = identified
    assert main(["-q", "run", str(case / "PET"), "--voi", str(case / "missing.dcm"), "--out", str(tmp_path / "o"),
                 "--anonymize"]) == 2
    err = capsys.readouterr().err
    assert "withheld: anonymize" in err and str(case) not in err


def test_batch_anonymized_leaks_nothing_in_any_file(identified, tmp_path):
    case, needles, _ = identified
    cohort = tmp_path / "cohort"
    shutil.copytree(case, cohort / case.name)
    broken = cohort / "Doe_Jane"
    broken.mkdir()
    (broken / "case.toml").write_text('case_id = "tare-018"\nadministered_gbq = 2.0\n')
    out = tmp_path / "out"
    assert main(["-q", "batch", str(cohort), "--out", str(out), "--workers", "1", "--anonymize"]) == 3
    assert _leaks(out, [*needles, str(tmp_path), "Doe_Jane"]) == {}
    rows = (out / "cohort.csv").read_text()
    assert EPOCH.isoformat() in rows and "tare-018" in (out / "failures.csv").read_text()


def test_a_result_is_anonymized_once(liver_4x3):
    from voxeldose import Case, compute_case
    from voxeldose.anonymize import anonymize_result

    result = compute_case(liver_4x3.activity, liver_4x3.vois, Case("c1", administration_datetime=ADMIN))
    once = anonymize_result(result)
    assert anonymize_result(once) is once and once.dose.meta.anonymized and not result.dose.meta.anonymized
    assert once.provenance["run_datetime"] == WITHHELD
    with pytest.raises(InputError, match="CaseResult"):
        anonymize_result("not a result")

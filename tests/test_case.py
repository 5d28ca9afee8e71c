"""The case record and its schema: validation messages, overrides (read through the case-file reader)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxeldose.case import CASE_FILE_KEYS, Case
from voxeldose.errors import InputError, VoxelDoseError
from voxeldose.io.case_file import load_case

TOML = """\
# a complete case file
case_id = "tare-017"
administered_gbq = 2.5
administration_time = 2024-03-05T10:30:00
lung_shunt_fraction = 0.06
residual_fraction = 0.02
sphere_type = "glass"
scanner_nuclide = "Y-90"
calibration_voi = "liver"

[vois]
liver = "whole_liver"
"segment 8 lesion" = "tumour"
lungs = "lung"
"""

EXPECTED = Case(
    "tare-017",
    administered_gbq=2.5,
    administration_datetime=dt.datetime(2024, 3, 5, 10, 30),
    lung_shunt_fraction=0.06,
    residual_fraction=0.02,
    sphere_type="glass",
    scanner_nuclide="Y-90",
    calibration_voi="liver",
    voi_roles={"liver": "whole_liver", "segment 8 lesion": "tumour", "lungs": "lung"},
)


def _write(tmp_path, text, name="case.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_toml_case_file(tmp_path):
    case = load_case(_write(tmp_path, TOML))
    assert case == EXPECTED
    assert case.source_path.endswith("case.toml")
    assert case.vois_with_role("tumour") == ("segment 8 lesion",)
    assert case.calibration_voi_name == "liver"


def test_json_case_file_and_round_trip(tmp_path):
    data = EXPECTED.to_dict()
    assert list(data) == list(CASE_FILE_KEYS)
    p = _write(tmp_path, json.dumps(data), "case.json")
    assert load_case(p) == EXPECTED
    # missing values are null in JSON; only case_id is required
    minimal = load_case(_write(tmp_path, '{"case_id": "c1", "lung_shunt_fraction": null}', "min.json"))
    assert minimal == Case("c1")
    assert minimal.voi_roles == {}


def test_administration_time_with_its_utc_offset(tmp_path):
    case = load_case(_write(tmp_path, 'case_id = "c1"\nadministration_time = 2024-03-05T10:30:00+01:00\n'))
    assert case.administration_datetime == dt.datetime(2024, 3, 5, 9, 30, tzinfo=dt.timezone.utc)
    assert case.to_dict()["administration_time"] == "2024-03-05T10:30:00+01:00"


def test_scan_modality_spellings(tmp_path):
    for text, modality in (("PET", "PT"), ("pt", "PT"), ("SPECT", "NM"), ("NM", "NM")):
        assert load_case(_write(tmp_path, f'case_id = "c1"\nscan_modality = "{text}"\n')).scan_modality == modality


def test_time_as_iso_text_and_normalised_spellings(tmp_path):
    text = TOML.replace("2024-03-05T10:30:00", '"2024-03-05 10:30:00"').replace('"Y-90"', '"90Y"').replace(
        '"glass"', '"Glass"')
    assert load_case(_write(tmp_path, text)) == EXPECTED


@pytest.mark.parametrize("text, fragments", [
    ("lsf = 0.1", ["unknown key(s) 'lsf'", "allowed keys: case_id, administered_gbq"]),
    ("lung_shunt_fractoin = 0.1", ["'lung_shunt_fractoin'", "did you mean", "'lung_shunt_fraction'"]),
    ("administration_datetime = 2024-03-05T10:30:00", ["'administration_datetime'", "'administration_time'"]),
])
def test_unknown_keys_are_errors_listing_the_allowed_ones(tmp_path, text, fragments):
    p = _write(tmp_path, 'case_id = "c1"\n' + text + "\n")
    with pytest.raises(InputError) as err:
        load_case(p)
    msg = str(err.value)
    assert str(p) in msg
    for f in fragments:
        assert f in msg


@pytest.mark.parametrize("line, fragments", [
    ("lung_shunt_fraction = 8", ["'lung_shunt_fraction'", "outside [0, 1)", "write 0.08"]),
    ("lung_shunt_fraction = -0.1", ["'lung_shunt_fraction'", "outside [0, 1)"]),
    ("residual_fraction = 1.0", ["'residual_fraction'", "outside [0, 1)"]),
    ("administered_gbq = 0", ["'administered_gbq'", "> 0 GBq"]),
    ("administered_gbq = 2500", ["'administered_gbq'", "MBq"]),
    ('administered_gbq = "2.5"', ["'administered_gbq'", "must be a number", "str"]),
    ("administered_gbq = true", ["'administered_gbq'", "must be a number"]),
    ("administration_time = 2024-03-05", ["'administration_time'", "without a time of day"]),
    ('administration_time = "2024-03-05"', ["'administration_time'", "no time of day"]),
    ('administration_time = "5 March 2024 10:30"', ["'administration_time'", "ISO 8601"]),
    ('sphere_type = "ceramic"', ["'sphere_type'", "'glass', 'resin'"]),
    ('scanner_nuclide = "FDG"', ["'scanner_nuclide'", "'F-18'"]),
    ('scan_modality = "CT"', ["'scan_modality'", "'PT' (Y-90 PET) or 'NM'"]),
    ("[vois]\nliver = \"liver\"", ["'vois'", "role 'liver'", "'whole_liver'"]),
    ("vois = 3", ["'vois'", "table of VOI name -> role"]),
])
def test_bad_values_name_the_key_and_the_file(tmp_path, line, fragments):
    p = _write(tmp_path, 'case_id = "c1"\n' + line + "\n")
    with pytest.raises(InputError) as err:
        load_case(p)
    msg = str(err.value)
    assert f"case file {p}" in msg
    for f in fragments:
        assert f in msg, msg


def test_schema_errors_through_the_file(tmp_path):
    with pytest.raises(InputError, match="'case_id' is missing"):
        load_case(_write(tmp_path, "administered_gbq = 2.0\n"))
    with pytest.raises(InputError, match="case_id must be"):
        load_case(_write(tmp_path, 'case_id = "Doe, John"\n'))
    with pytest.raises(InputError, match="top level"):
        load_case(_write(tmp_path, "[1, 2]", "c.json"))
    with pytest.raises(InputError, match="calibration_voi 'liver' is not one of the VOIs"):
        load_case(_write(tmp_path, 'case_id = "c"\ncalibration_voi = "liver"\n[vois]\nLiver = "whole_liver"\n'))
    # every error is one of the family and a ValueError
    assert issubclass(InputError, VoxelDoseError) and issubclass(InputError, ValueError)


def test_overrides_take_precedence_and_are_recorded(tmp_path):
    case = load_case(_write(tmp_path, TOML))
    new = case.with_overrides(lung_shunt_fraction=0.1, administered_gbq=None, scanner_nuclide="f18",
                              administration_datetime="2024-03-05T11:00:00")
    assert new.lung_shunt_fraction == 0.1  # override wins
    assert new.administered_gbq == 2.5  # None keeps the file's value
    assert new.scanner_nuclide == "F-18"
    assert new.administration_datetime == dt.datetime(2024, 3, 5, 11, 0)
    assert case.lung_shunt_fraction == 0.06  # the original is unchanged (frozen)
    assert new.source_of("lung_shunt_fraction") == "override"
    assert "case file" in new.source_of("administered_gbq") and "'administered_gbq'" in new.source_of("administered_gbq")
    assert "'administration_time'" in case.source_of("administration_datetime")
    assert Case("c").source_of("administered_gbq") == "Case"
    assert case.with_overrides() is case
    with pytest.raises(InputError, match=r"unknown case option\(s\) 'lsf'.*allowed: case_id, administered_gbq"):
        case.with_overrides(lsf=0.1)
    with pytest.raises(InputError, match="override lung_shunt_fraction.*outside"):
        case.with_overrides(lung_shunt_fraction=1.5)


def test_direct_construction_validates():
    with pytest.raises(InputError, match="Case: administered_gbq must be > 0"):
        Case("c", administered_gbq=-1.0)
    # a UTC offset is kept: calibration compares it exactly with scan times whose offset is known
    aware = Case("c", administration_datetime=dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone.utc))
    assert aware.administration_datetime.utcoffset() == dt.timedelta(0)
    with pytest.raises(InputError, match="roles are"):
        Case("c", voi_roles={"t1": "tumor"})
    case = Case("c", voi_roles={"a": "tumour"})
    with pytest.raises(TypeError):
        case.voi_roles["b"] = "lung"  # read-only mapping
    with pytest.raises(AttributeError):
        case.administered_gbq = 3.0  # frozen


def test_default_calibration_voi():
    assert Case("c", voi_roles={"liver": "whole_liver", "t": "tumour"}).calibration_voi_name == "liver"
    # the perfused territory, when given, is preferred to the whole liver
    assert Case("c", voi_roles={"liver": "whole_liver", "right lobe": "perfused"}).calibration_voi_name == "right lobe"
    # explicit wins; ambiguous or none gives None (the calibration then asks for calibration_voi)
    assert Case("c", voi_roles={"liver": "whole_liver", "rl": "perfused"},
                calibration_voi="liver").calibration_voi_name == "liver"
    assert Case("c", voi_roles={"a": "perfused", "b": "perfused"}).calibration_voi_name is None
    assert Case("c").calibration_voi_name is None


_values = {
    "administered_gbq": st.one_of(st.none(), st.floats(0.01, 20.0)),
    "lung_shunt_fraction": st.one_of(st.none(), st.floats(0.0, 0.999)),
    "residual_fraction": st.one_of(st.none(), st.floats(0.0, 0.5)),
    "sphere_type": st.one_of(st.none(), st.sampled_from(["glass", "resin"])),
    "scanner_nuclide": st.one_of(st.none(), st.sampled_from(["Y-90", "F-18", "Ge-68"])),
}


@settings(max_examples=60, deadline=None)
@given(base=st.fixed_dictionaries(_values), over=st.fixed_dictionaries(_values))
def test_property_overrides_replace_exactly_the_non_none_values(base, over):
    case = Case("c", **base).with_overrides(**over)
    for key in _values:
        assert getattr(case, key) == (over[key] if over[key] is not None else base[key])
        assert (case.source_of(key) == "override") == (over[key] is not None)


@settings(max_examples=40, deadline=None)
@given(values=st.fixed_dictionaries(_values),
       when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 1, 1)))
def test_property_json_round_trip(tmp_path_factory, values, when):
    case = Case("c-1", administration_datetime=when, **values)
    p = tmp_path_factory.mktemp("rt") / "case.json"
    p.write_text(json.dumps(case.to_dict()))
    assert load_case(p) == case


@pytest.mark.parametrize("gbq, words", [(1e-12, "less than 0.01 GBq"), (0.005, "is it in TBq"), (60.0, "is it in MBq")])
def test_an_administered_activity_outside_any_vial_is_a_unit_mistake(gbq, words):
    """administered_gbq = 1e-12 was accepted."""
    with pytest.raises(InputError, match=words):
        Case("c", administered_gbq=gbq)
    assert Case("c", administered_gbq=0.01).administered_gbq == 0.01


@pytest.mark.parametrize("text, words", [
    ('{"case_id": "c", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"case_id": "c", "administered_gbq": ' + "9" * 400 + "}", r"integer 9+\.\.\. \(400 digits\) is too large"),
    ('{"case_id": "c", "administered_gbq": NaN}', "NaN is not a number"),
    ('{"case_id": "c", "administered_gbq": 1e400}', "finite number"),
])
def test_hostile_json_case_files_are_clear_errors(tmp_path, text, words):
    """RecursionError on deep nesting and OverflowError on 400-digit integers were internal errors."""
    path = tmp_path / "case.json"
    path.write_text(text)
    with pytest.raises(InputError, match=words):
        load_case(path)


def test_hostile_toml_case_files_are_clear_errors(tmp_path):
    path = tmp_path / "case.toml"
    path.write_text('case_id = "c"\nx = ' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match="nested too deeply"):
        load_case(path)
    path.write_text('case_id = "c"\nadministered_gbq = ' + "9" * 400 + "\n")
    with pytest.raises(InputError, match=r"\(400 digits\) is too large"):
        load_case(path)

"""The nuclide tables against their sources: ICRP-107 decay data and DICOM CID 4020 and CID 18."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxeldose import constants as C
from voxeldose.nuclides import (
    NUCLIDES,
    RADIONUCLIDE_CODES,
    SPECT_NUCLIDES,
    TC99M,
    Y90,
    normalise_nuclide,
    nuclide_of_code,
)


def _icrp107(name: str) -> dict:
    """ICRP-107 decay data of ``name`` from the icrp107-database package (OpenGATE, a test dependency)."""
    icrp107_database = pytest.importorskip("icrp107_database", reason="icrp107-database not installed (pip install '.[test]')")
    folder = Path(icrp107_database.__file__).parent
    found = sorted(folder.rglob(f"{name}.json"))
    assert found, f"no ICRP-107 record for {name} in {folder}"
    return json.loads(json.loads(found[0].read_text()))  # the file holds a JSON string of JSON


_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365.25 * 86400.0}


@pytest.mark.parametrize("name", sorted(NUCLIDES))
def test_half_life_is_icrp107s(name):
    record = _icrp107(name)
    half_life_s = float(record["half_life"]) * _UNIT_S[record["time_unit"]]
    # the table holds the published value, to its printed digits
    assert NUCLIDES[name].half_life_s == pytest.approx(half_life_s, rel=1e-9)


@pytest.mark.parametrize("name, source", [("F-18", "F-18"), ("Ga-68", "Ga-68"), ("Ge-68", "Ga-68")])
def test_positron_fraction_is_icrp107s(name, source):
    # sum of the beta+ branch yields; Ge-68 settings take its daughter Ga-68's (secular
    # equilibrium in the calibration source); ICRP-107 prints 4-6 digits, the table 4
    yields = sum(branch[1] for branch in _icrp107(source)["emissions"]["beta+"])
    assert NUCLIDES[name].positron_fraction == pytest.approx(yields, abs=5e-5)
    assert _icrp107("Ge-68")["emissions"]["beta+"] == []  # Ge-68 itself emits no positron


def test_y90_is_the_constants():
    assert Y90.half_life_s == C.Y90_HALF_LIFE_S
    assert Y90.positron_fraction == C.Y90_POSITRON_YIELD == 31.86e-6  # Selwyn 2007: not in ICRP-107


@pytest.mark.parametrize("name", sorted(NUCLIDES))
def test_codes_name_their_nuclide(name):
    n = NUCLIDES[name]
    # the CID 4020 code meaning spells the nuclide (^90^Yttrium): read independently of the table
    assert normalise_nuclide(n.code_meaning) == name
    assert nuclide_of_code(n.code_value) == nuclide_of_code(n.snomed_ct) == name
    assert n.code_value.startswith("C-") and n.snomed_ct.isdigit()


def test_y86_code_is_not_y90():
    # C-162A3 is ^86^Yttrium (CID 4020), a code once taken for Y-90's
    assert nuclide_of_code("C-162A3") == "Y-86"
    assert nuclide_of_code("C-162A7") == "Y-90"
    assert len(set(RADIONUCLIDE_CODES)) == len(RADIONUCLIDE_CODES)


@pytest.mark.parametrize("text, expected", [
    ("Y-90", "Y-90"), ("y90", "Y-90"), ("90Y", "Y-90"), ("^90^Yttrium", "Y-90"), ("Yttrium-90", "Y-90"),
    ("F-18", "F-18"), ("18F", "F-18"), ("^18^Fluorine", "F-18"), ("Ga68", "Ga-68"), ("^68^Germanium", "Ge-68"),
    ("Tc-99m", "Tc-99m"), ("FDG", None), ("", None), (None, None), ("C-162A7", None),
])
def test_nuclide_names(text, expected):
    assert normalise_nuclide(text) == expected


# ---------------------------------------------------------------------------- SPECT nuclides


@pytest.mark.parametrize("name", sorted(SPECT_NUCLIDES))
def test_spect_half_life_and_photopeak_are_icrp107s(name):
    record = _icrp107(name)
    half_life_s = float(record["half_life"]) * _UNIT_S[record["time_unit"]]
    assert SPECT_NUCLIDES[name].half_life_s == pytest.approx(half_life_s, rel=1e-9)
    # the photopeak is the most intense gamma line (ICRP-107 in MeV); the table prints 4 digits of the yield
    energy_mev, yield_per_decay = max(record["emissions"]["gamma"], key=lambda line: line[1])
    assert SPECT_NUCLIDES[name].photopeak_kev == pytest.approx(energy_mev * 1e3, abs=5e-4)
    assert SPECT_NUCLIDES[name].photopeak_yield == pytest.approx(yield_per_decay, abs=5e-5)
    assert record["emissions"]["beta+"] == []  # a single-photon nuclide: no PET setting


def test_tc99m_is_a_spect_nuclide_not_a_pet_setting():
    assert "Tc-99m" not in NUCLIDES  # calibration's table of PET settings
    assert SPECT_NUCLIDES["Tc-99m"] is TC99M
    assert not set(SPECT_NUCLIDES) & set(NUCLIDES)
    # DICOM CID 18: C-163A8 (SNOMED CT 72454006) is ^99m^Technetium
    assert nuclide_of_code("C-163A8") == nuclide_of_code("72454006") == nuclide_of_code(" C-163A8 ") == "Tc-99m"
    assert normalise_nuclide(TC99M.code_meaning) == "Tc-99m"


@pytest.mark.parametrize("nuclide", [*NUCLIDES.values(), *SPECT_NUCLIDES.values()], ids=lambda n: n.name)
def test_codes_are_pydicoms_snomed_mapping(nuclide):
    # pydicom's tables of DICOM PS3.16 (CID 18, CID 4020, and the SNOMED-RT to SNOMED CT map),
    # an independent copy of the standard: each pair of codes and its meaning
    from pydicom.sr import _snomed_dict
    from pydicom.sr.codedict import codes

    assert _snomed_dict.mapping["SRT"][nuclide.code_value] == nuclide.snomed_ct
    assert _snomed_dict.mapping["SCT"][nuclide.snomed_ct] == nuclide.code_value
    cids = (codes.cid18, codes.cid4020)
    keyword = "_" + "".join(nuclide.code_meaning.split("^")[1:])  # ^99m^Technetium -> _99mTechnetium
    found = [getattr(cid, keyword) for cid in cids if keyword in dir(cid)]
    assert found and all(c.value == nuclide.snomed_ct and c.meaning == nuclide.code_meaning for c in found)

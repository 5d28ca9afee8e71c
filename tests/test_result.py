"""The case result: one object holding a case's images, masks, DVHs, checks, caveats and provenance."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

import voxeldose
from voxeldose.result import ROW_COLUMNS, CaseResult, Caveat, metrics_rows

from .conftest import LIVER_ROLES


@pytest.fixture(scope="module")
def result(liver):
    vois = {n: liver.vois[n] for n in LIVER_ROLES}
    case = voxeldose.Case("phantom-2", administered_gbq=3.0, lung_shunt_fraction=0.1, residual_fraction=0.0,
                          voi_roles=LIVER_ROLES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compute_case records caveats; none escapes as a warning
        return voxeldose.compute_case(liver.activity, vois, case, method="local")


def test_metrics_use_the_lung_density_for_lung_vois(result):
    m = result.metrics
    assert m["lung"]["density_g_per_cm3"] == 0.30 and m["liver"]["density_g_per_cm3"] == 1.04
    assert m["lung"]["mass_g"] == pytest.approx(m["lung"]["volume_ml"] * 0.30)
    assert m["liver"]["mean_gy"] == result.dvhs["liver"].mean_gy


def test_to_dict_is_the_metrics_json_and_the_table_is_pandas_ready(result, tmp_path):
    pandas = pytest.importorskip("pandas")
    doc = result.to_dict()
    assert list(doc) == ["case_id", "case", "vois", "roles", "clinical_references", "model_crosschecks", "warnings",
                         "provenance"]
    voxeldose.write_metrics_json(tmp_path / "metrics.json", doc)
    back = json.loads((tmp_path / "metrics.json").read_text())
    rows = result.table()
    assert metrics_rows(back) == rows  # the same rows from the file as from the result
    frame = pandas.DataFrame(rows)
    assert list(frame.columns[: len(ROW_COLUMNS)]) == list(ROW_COLUMNS)
    assert len(frame) == len(result.vois)
    assert frame.set_index("voi").loc["tumours", "role"] == "derived"
    assert frame["mean_gy"].dtype == float and frame["method"].unique().tolist() == ["local"]
    # the case-level checks travel with every row: the calibrated activity against the
    # administered (the phantom: exact) and how many caveats the case has
    assert frame["activity_vs_administered"].tolist() == pytest.approx([1.0] * len(frame))
    assert frame["n_warnings"].unique().tolist() == [len(result.caveats)]


def test_the_result_holds_one_grid(result):
    other = voxeldose.Image(np.zeros((2, 2, 2)), (4.0, 4.0, 4.0), units="MASK")
    with pytest.raises(voxeldose.VoiError, match="'extra'.*grid"):
        dataclasses.replace(result, vois={**result.vois, "extra": other})
    with pytest.raises(voxeldose.VoiError, match="DVHs without a VOI"):
        dataclasses.replace(result, vois={k: v for k, v in result.vois.items() if k != "lung"})
    with pytest.raises(voxeldose.InputError, match="'activity'"):
        dataclasses.replace(result, images={"dose": result.dose})
    with pytest.raises(voxeldose.InputError, match="Case"):
        CaseResult(case="phantom-2", images=result.images, vois={}, roles={}, dvhs={})  # type: ignore[arg-type]


def test_caveats_keep_their_stage(result):
    extra = dataclasses.replace(result, caveats=[Caveat("dose", "a caveat")])  # a list becomes a tuple
    assert extra.caveats == (Caveat("dose", "a caveat"),) and extra.warnings == ("a caveat",)


def test_clinical_references_are_flagged_with_their_sources(result, tmp_path):
    refs = result.references
    assert set(refs) == {"lung", "normal_liver", *(f"tumour_{i}" for i in range(1, 6))}  # roles with references
    lung = {f["reference"]: f for f in refs["lung"]}
    assert lung["lung limit, one treatment"]["threshold_gy"] == 30.0 and "Ho et al." in lung["lung limit, one treatment"]["source"]
    assert lung["lung limit, one treatment"]["flag"] == (result.dvhs["lung"].mean_gy >= 30.0)
    tumour = {f["reference"]: f for f in refs["tumour_1"]}
    assert tumour["glass HCC: response associated from"]["threshold_gy"] == 205.0
    assert tumour["resin NET: response predicted from"]["flag"] == (result.dvhs["tumour_1"].mean_gy >= 191.3)
    assert tumour["resin NET: no response predicted below"]["flag"] == (result.dvhs["tumour_1"].mean_gy < 72.8)
    normal = {f["reference"]: f for f in refs["normal_liver"]}
    # the phantom's normal liver (local deposition, ~70 Gy) is above both reported levels
    assert all(f["flag"] for f in normal.values()) and result.dvhs["normal_liver"].mean_gy > 59.1
    rows = {r["voi"]: r for r in result.table()}
    assert "normal liver, mean with fibrosis or failure (small series) 59.1 Gy" in rows["normal_liver"]["references_flagged"]
    assert rows["liver"]["references_flagged"] == ""  # the whole liver has no reference of its own
    assert result.to_dict()["clinical_references"] == refs

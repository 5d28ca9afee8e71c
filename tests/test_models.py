"""Clinical models: hand-computed cases, round trips, errors, and the cross-checks of a phantom."""

from __future__ import annotations

import numpy as np
import pytest

import voxeldose
from voxeldose import models, phantoms


def test_mird_by_hand():
    # 49.67 x 3 GBq x (1 - 0.1) / 1.5 kg = 89.406 Gy
    assert models.mird_dose_gy(3.0, 1.5, 0.1) == pytest.approx(89.406, abs=1e-9)
    # 120 Gy x 1.5 kg / (49.67 x 0.9) = 4.02657 GBq
    assert models.mird_activity_gbq(120.0, 1.5, 0.1) == pytest.approx(180 / 44.703, rel=1e-12)
    a = models.mird_activity_gbq(97.0, 1.2, 0.07)
    assert models.mird_dose_gy(a, 1.2, 0.07) == pytest.approx(97.0, rel=1e-12)


def test_bsa_by_hand():
    # Du Bois, 1.75 m, 70 kg: 0.20247 x 1.75^0.725 x 70^0.425 = 0.20247 x 1.5004 x 6.0833 = 1.848 m2
    bsa = models.body_surface_area_m2(1.75, 70.0)
    assert bsa == pytest.approx(0.20247 * 1.75**0.725 * 70**0.425, rel=1e-12)
    assert bsa == pytest.approx(1.848, abs=1e-3)
    # (1.848 - 0.2) + 150 / (150 + 1350) = 1.648 + 0.1 = 1.748 GBq
    assert models.bsa_activity_gbq(bsa, 150.0, 1350.0) == pytest.approx(bsa - 0.2 + 0.1, rel=1e-12)
    with pytest.raises(voxeldose.InputError, match="cm"):
        models.body_surface_area_m2(175, 70)


def test_partition_by_hand():
    # A = 3 GBq, LSF 0.1, T:N 4, tumour 0.12 kg, normal 1.4 kg:
    # D_N = 49.67 x 3 x 0.9 / (4 x 0.12 + 1.4) = 134.109 / 1.88 = 71.3346 Gy; D_T = 285.338 Gy
    d_t, d_n = models.partition_doses_gy(3.0, 4.0, 0.12, 1.4, 0.1)
    assert d_n == pytest.approx(134.109 / 1.88, rel=1e-12)
    assert d_t == pytest.approx(4 * 134.109 / 1.88, rel=1e-12)
    assert models.partition_activity_gbq(d_n, 4.0, 0.12, 1.4, 0.1) == pytest.approx(3.0, rel=1e-12)


def test_lung_by_hand():
    # 49.67 x 3 x 0.1 / 1 kg = 14.901 Gy
    assert models.lung_dose_gy(3.0, 0.1) == pytest.approx(14.901, rel=1e-12)
    assert models.lung_dose_gy(3.0, 0.1, lung_mass_kg=0.9) == pytest.approx(14.901 / 0.9, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: models.mird_dose_gy(3, -1, 0.1), "target_mass_kg"),
        (lambda: models.mird_dose_gy(3, 1, 1.0), "lung_shunt_fraction"),
        (lambda: models.partition_doses_gy(3, 0, 0.1, 1, 0.1), "tumour_to_normal"),
        (lambda: models.bsa_activity_gbq(1.8, -5, 1000), "tumour_volume_ml"),
        (lambda: models.lung_dose_gy(float("nan"), 0.1), "activity_gbq"),
    ],
)
def test_errors_name_the_argument(call, word):
    with pytest.raises(voxeldose.InputError, match=word):
        call()


def _phantom_checks(lsf=0.1):
    ph = phantoms.liver(lung_shunt_fraction=lsf)
    dose = voxeldose.absorbed_dose(ph.activity_mbq, ph.spacing_mm, method="local")
    dvhs = {n: voxeldose.dvh(dose, m, ph.spacing_mm) for n, m in ph.masks.items()}
    roles = {"liver": "whole_liver", "normal_liver": "normal_liver", "lung": "lung",
             **{f"tumour_{i}": "tumour" for i in range(1, 6)}}
    vois = {n: ph.masks[n] for n in roles}
    return ph, models.model_crosschecks(activity_mbq=ph.activity_mbq, spacing_mm=ph.spacing_mm, vois=vois,
                                        roles=roles, dvhs=dvhs, administered_gbq=3.0, lung_shunt_fraction=lsf)


def test_crosschecks_on_the_phantom():
    ph, cc = _phantom_checks()
    p = cc["partition"]
    # the phantom is built at T:N = 4; voxels >= 99.9 % inside each VOI recover it to their
    # mixing (at most 0.1 % of the other compartment)
    assert p["tumour_to_normal_measured"] == pytest.approx(4.0, rel=1e-3)
    truth = ph.truth["models"]
    assert p["tumour_model_gy"] == pytest.approx(truth["partition_tumour_dose_gy"], rel=5e-3)
    assert p["normal_liver_model_gy"] == pytest.approx(truth["partition_normal_liver_dose_gy"], rel=5e-3)
    assert cc["mird"]["model_mean_gy"] == pytest.approx(truth["mird_liver_dose_gy"], rel=5e-3)
    # lung mass from the lung VOI at 0.30 g/cm3 (3.62 L -> 1.086 kg)
    assert cc["lung"]["mass_kg"] == pytest.approx(3.619 * 0.30, rel=1e-3)
    assert not any("lung dose" in w for w in cc["warnings"])


def test_high_shunt_warns():
    # LSF 0.25 at 3 GBq: 49.67 x 3 x 0.25 / 1.086 kg = 34.3 Gy > 30 Gy
    _, cc = _phantom_checks(lsf=0.25)
    assert cc["lung"]["model_mean_gy"] == pytest.approx(49.67 * 0.75 / (3.619 * 0.30), rel=1e-3)
    assert any("exceeds 30 Gy" in w for w in cc["warnings"])


def test_disagreement_warning():
    ph, _ = _phantom_checks()
    dose = voxeldose.absorbed_dose(ph.activity_mbq, ph.spacing_mm, method="local") * 0.8  # 20 % low
    dvhs = {n: voxeldose.dvh(dose, m, ph.spacing_mm) for n, m in ph.masks.items()}
    roles = {"liver": "whole_liver", "normal_liver": "normal_liver", "tumour_1": "tumour"}
    cc = models.model_crosschecks(activity_mbq=ph.activity_mbq, spacing_mm=ph.spacing_mm, vois=ph.masks,
                                  roles=roles, dvhs=dvhs, administered_gbq=3.0, lung_shunt_fraction=0.1)
    assert any("normal liver" in w and "partition model" in w for w in cc["warnings"])
    assert any("no lung VOI" in w for w in cc["warnings"])
    assert np.isfinite(cc["partition"]["normal_liver_relative_difference"])

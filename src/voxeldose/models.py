"""Clinical activity and dose models of Y-90 radioembolization, and their cross-check of a case.

The planning formulas of ../shared/CLINICAL.md (A in GBq, masses in kg, LSF the lung shunt):

- MIRD single compartment: D = 49.67 x A (1 - LSF) / M (Dezarn et al. 2011, AAPM TG-144).
  The planning form "A = D M / (50 (1 - LSF))" rounds 49.67 to 50; both directions here use 49.67
  so that they are inverses.
- BSA (resin): A = (BSA - 0.2) + V_T / (V_T + V_N) (SIR-Spheres instructions for use; Kennedy et
  al. 2007), with BSA from Du Bois & Du Bois (1916): 0.20247 x height^0.725 x weight^0.425.
- Partition: A = D_N (T:N M_T + M_N) / (49.67 (1 - LSF)); D_T = T:N x D_N (Ho et al. 1996).
- Lung: D_L = 49.67 x A x LSF / M_L (1 kg when not measured).

Here ``A`` is the activity that reached the patient (administered x (1 - residual)).

References
----------
Dezarn WA et al. Med Phys 38:4824-45, 2011 (AAPM TG-144). doi:10.1118/1.3608909
Kennedy A et al. Int J Radiat Oncol Biol Phys 68:13-23, 2007. doi:10.1016/j.ijrobp.2006.11.060
Ho S et al. Eur J Nucl Med 23:947-52, 1996. doi:10.1007/BF01084369
Du Bois D, Du Bois EF. Arch Intern Med 17:863-71, 1916.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .constants import MIRD_Y90_GY_KG_PER_GBQ, SOFT_TISSUE_DENSITY_G_PER_CM3
from .dvh import DVH
from .errors import InputError

__all__ = [
    "Thresholds",
    "THRESHOLDS",
    "LUNG_DENSITY_G_PER_CM3",
    "mird_dose_gy",
    "mird_activity_gbq",
    "body_surface_area_m2",
    "bsa_activity_gbq",
    "partition_doses_gy",
    "partition_activity_gbq",
    "lung_dose_gy",
    "tumour_to_normal_ratio",
    "model_crosschecks",
]

#: Density (g/cm3) used for the mass of a lung VOI (inflated lung, ICRU 44: 0.26-0.30).
LUNG_DENSITY_G_PER_CM3 = 0.30


@dataclass(frozen=True)
class Thresholds:
    """Dose limits and response thresholds reported in the literature (../shared/CLINICAL.md)."""

    lung_single_gy: float = 30.0  # one treatment
    lung_cumulative_gy: float = 50.0
    tumour_glass_gy: float = 205.0  # HCC, glass
    normal_liver_glass_gy: float = 120.0
    tumour_resin_response_gy: float = 191.3  # NET metastases, resin
    tumour_resin_no_response_gy: float = 72.8
    model_disagreement: float = 0.10  # voxel mean vs partition model


THRESHOLDS = Thresholds()


def _positive(value: float, name: str, unit: str) -> float:
    x = float(value)
    if not math.isfinite(x) or x <= 0:
        raise InputError(f"{name} must be a positive number ({unit}), got {value!r}")
    return x


def _lsf(value: float, name: str = "lung_shunt_fraction") -> float:
    x = float(value)
    if not 0.0 <= x < 1.0:
        raise InputError(f"{name} must lie in [0, 1) (0.10 for 10 %), got {value!r}")
    return x


def mird_dose_gy(activity_gbq: float, target_mass_kg: float, lung_shunt_fraction: float) -> float:
    """Mean dose (Gy) to the perfused target: 49.67 A (1 - LSF) / M."""
    a = _positive(activity_gbq, "activity_gbq", "GBq")
    m = _positive(target_mass_kg, "target_mass_kg", "kg")
    return MIRD_Y90_GY_KG_PER_GBQ * a * (1.0 - _lsf(lung_shunt_fraction)) / m


def mird_activity_gbq(target_dose_gy: float, target_mass_kg: float, lung_shunt_fraction: float) -> float:
    """Activity (GBq) giving ``target_dose_gy`` to the target: D M / (49.67 (1 - LSF))."""
    d = _positive(target_dose_gy, "target_dose_gy", "Gy")
    m = _positive(target_mass_kg, "target_mass_kg", "kg")
    return d * m / (MIRD_Y90_GY_KG_PER_GBQ * (1.0 - _lsf(lung_shunt_fraction)))


def body_surface_area_m2(height_m: float, weight_kg: float) -> float:
    """Du Bois body surface area (m2): 0.20247 height^0.725 weight^0.425."""
    h = _positive(height_m, "height_m", "m")
    if h > 3:
        raise InputError(f"height_m = {height_m} m: is it in cm? Pass metres")
    w = _positive(weight_kg, "weight_kg", "kg")
    return 0.20247 * h**0.725 * w**0.425


def bsa_activity_gbq(bsa_m2: float, tumour_volume_ml: float, normal_liver_volume_ml: float) -> float:
    """Resin BSA method (GBq): (BSA - 0.2) + V_T / (V_T + V_N)."""
    b = _positive(bsa_m2, "bsa_m2", "m2")
    vt = float(tumour_volume_ml)
    if vt < 0:
        raise InputError(f"tumour_volume_ml must be >= 0, got {tumour_volume_ml!r}")
    vn = _positive(normal_liver_volume_ml, "normal_liver_volume_ml", "mL")
    return (b - 0.2) + vt / (vt + vn)


def partition_doses_gy(activity_gbq: float, tumour_to_normal: float, tumour_mass_kg: float,
                       normal_mass_kg: float, lung_shunt_fraction: float) -> tuple[float, float]:
    """(tumour, normal liver) mean doses (Gy) of the partition model."""
    a = _positive(activity_gbq, "activity_gbq", "GBq")
    tn = _positive(tumour_to_normal, "tumour_to_normal", "ratio")
    mt = float(tumour_mass_kg)
    if mt < 0:
        raise InputError(f"tumour_mass_kg must be >= 0, got {tumour_mass_kg!r}")
    mn = _positive(normal_mass_kg, "normal_mass_kg", "kg")
    d_n = MIRD_Y90_GY_KG_PER_GBQ * a * (1.0 - _lsf(lung_shunt_fraction)) / (tn * mt + mn)
    return tn * d_n, d_n


def partition_activity_gbq(normal_liver_dose_gy: float, tumour_to_normal: float, tumour_mass_kg: float,
                           normal_mass_kg: float, lung_shunt_fraction: float) -> float:
    """Activity (GBq) giving ``normal_liver_dose_gy`` by the partition model."""
    d = _positive(normal_liver_dose_gy, "normal_liver_dose_gy", "Gy")
    tn = _positive(tumour_to_normal, "tumour_to_normal", "ratio")
    mt = float(tumour_mass_kg)
    if mt < 0:
        raise InputError(f"tumour_mass_kg must be >= 0, got {tumour_mass_kg!r}")
    mn = _positive(normal_mass_kg, "normal_mass_kg", "kg")
    return d * (tn * mt + mn) / (MIRD_Y90_GY_KG_PER_GBQ * (1.0 - _lsf(lung_shunt_fraction)))


def lung_dose_gy(activity_gbq: float, lung_shunt_fraction: float, lung_mass_kg: float = 1.0) -> float:
    """Mean lung dose (Gy): 49.67 A LSF / M_lung (1 kg when not measured)."""
    a = _positive(activity_gbq, "activity_gbq", "GBq")
    m = _positive(lung_mass_kg, "lung_mass_kg", "kg")
    return MIRD_Y90_GY_KG_PER_GBQ * a * _lsf(lung_shunt_fraction) / m


def tumour_to_normal_ratio(activity_mbq: ArrayLike, tumour_mask: ArrayLike, normal_mask: ArrayLike) -> float:
    """Ratio of the mean activity concentrations in the tumour and normal-liver VOIs.

    Measured over the voxels wholly inside each VOI (mask >= 0.999): a partly covered voxel
    mixes both compartments and would pull the ratio towards 1. When a VOI has no such voxel
    (e.g. a tumour smaller than two voxels), its partial-volume weighted mean is used.
    """
    a = np.asarray(activity_mbq, float)

    def mean(mask: ArrayLike) -> float:
        m = np.asarray(mask, float)
        core = m >= 0.999
        if core.any():
            return float(a[core].mean())
        if not (m > 0).any():
            raise InputError("tumour_to_normal_ratio: an empty VOI")
        return float((a * m).sum() / m.sum())

    normal = mean(normal_mask)
    if normal <= 0:
        raise InputError("tumour_to_normal_ratio: no activity in the normal liver")
    return mean(tumour_mask) / normal


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b - 1.0


def model_crosschecks(
    *,
    activity_mbq: ArrayLike,
    spacing_mm: Sequence[float],
    vois: Mapping[str, ArrayLike],
    roles: Mapping[str, str],
    dvhs: Mapping[str, DVH],
    administered_gbq: float,
    lung_shunt_fraction: float,
    residual_fraction: float = 0.0,
    lung_mass_kg: float | None = None,
) -> dict[str, Any]:
    """MIRD, partition and lung-model doses of a case beside its voxel mean doses.

    Masses are the VOI volumes at 1.04 g/cm3 (soft tissue, like the engine); a lung VOI's mass
    uses 0.30 g/cm3 (inflated lung), and without a lung VOI the lung is 1 kg. T:N is measured
    from the activity map (:func:`tumour_to_normal_ratio`). Returns a JSON-able dict with the
    model values, the voxel means, their relative differences and ``warnings``.
    """
    rho = SOFT_TISSUE_DENSITY_G_PER_CM3 * 1e-3  # kg per mL
    a_patient = _positive(administered_gbq, "administered_gbq", "GBq") * (1.0 - float(residual_fraction))
    lsf = _lsf(lung_shunt_fraction)
    warnings: list[str] = []
    out: dict[str, Any] = {"activity_in_patient_gbq": a_patient, "lung_shunt_fraction": lsf,
                           "mird_constant_gy_kg_per_gbq": MIRD_Y90_GY_KG_PER_GBQ}

    def by_role(role: str) -> list[str]:
        return [n for n, r in roles.items() if r == role and n in dvhs]

    whole, tumours, normal, lung = by_role("whole_liver"), by_role("tumour"), by_role("normal_liver"), by_role("lung")
    if whole:
        h = dvhs[whole[0]]
        mass = h.volume_ml * rho
        out["mird"] = {"voi": whole[0], "mass_kg": mass, "model_mean_gy": mird_dose_gy(a_patient, mass, lsf),
                       "voxel_mean_gy": h.mean_gy}
        out["mird"]["relative_difference"] = _rel(h.mean_gy, out["mird"]["model_mean_gy"])
    else:
        warnings.append("no whole-liver VOI: no MIRD single-compartment check")
    if tumours and (normal or whole):
        tumour_mask = np.clip(sum(np.asarray(vois[n], float) for n in tumours), 0, 1)
        if normal:
            normal_mask = np.asarray(vois[normal[0]], float)
        else:
            normal_mask = np.clip(np.asarray(vois[whole[0]], float) - tumour_mask, 0, 1)
        tn = tumour_to_normal_ratio(activity_mbq, tumour_mask, normal_mask)
        voxel_ml = float(np.prod(spacing_mm)) * 1e-3
        m_t = float(tumour_mask.sum()) * voxel_ml * rho
        m_n = float(normal_mask.sum()) * voxel_ml * rho
        d_t, d_n = partition_doses_gy(a_patient, tn, m_t, m_n, lsf)
        w = [dvhs[n].volume_ml for n in tumours]
        voxel_t = float(np.average([dvhs[n].mean_gy for n in tumours], weights=w))
        voxel_n = dvhs[normal[0]].mean_gy if normal else None
        out["partition"] = {"tumour_to_normal_measured": tn, "tumour_mass_kg": m_t, "normal_mass_kg": m_n,
                            "tumour_model_gy": d_t, "normal_liver_model_gy": d_n,
                            "tumour_voxel_mean_gy": voxel_t, "normal_liver_voxel_mean_gy": voxel_n,
                            "tumour_relative_difference": _rel(voxel_t, d_t),
                            "normal_liver_relative_difference": _rel(voxel_n, d_n)}
        for key, label in (("tumour_relative_difference", "tumour"),
                           ("normal_liver_relative_difference", "normal liver")):
            diff = out["partition"][key]
            if diff is not None and abs(diff) > THRESHOLDS.model_disagreement:
                warnings.append(f"{label}: voxel mean dose differs from the partition model by {diff:+.0%} "
                                f"(more than {THRESHOLDS.model_disagreement:.0%})")
    else:
        warnings.append("no tumour and liver VOIs by role: no partition-model check")
    if lung:
        h = dvhs[lung[0]]
        m_lung = lung_mass_kg or h.volume_ml * LUNG_DENSITY_G_PER_CM3 * 1e-3
        source = "given" if lung_mass_kg else f"lung VOI {lung[0]!r} at {LUNG_DENSITY_G_PER_CM3} g/cm3"
    else:
        m_lung = lung_mass_kg or 1.0
        source = "given" if lung_mass_kg else "1 kg (no lung VOI)"
        if not lung_mass_kg:
            warnings.append("no lung VOI: the lung dose uses a 1 kg lung")
    d_lung = lung_dose_gy(a_patient, lsf, m_lung) if lsf > 0 else 0.0
    out["lung"] = {"mass_kg": m_lung, "mass_source": source, "model_mean_gy": d_lung}
    if d_lung > THRESHOLDS.lung_single_gy:
        warnings.append(f"lung dose {d_lung:.1f} Gy exceeds {THRESHOLDS.lung_single_gy:g} Gy for one treatment")
    out["warnings"] = warnings
    return out

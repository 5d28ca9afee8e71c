"""Clinical activity and dose models of Y-90 radioembolization, and their cross-check of a case.

The planning formulas of ../shared/CLINICAL.md, as pure functions (activity ``A`` in GBq, masses
in kg, ``LSF`` the lung shunt fraction, 0 <= LSF < 1):

- MIRD single compartment [Dezarn2011]_: ``D = 49.67 A (1 - LSF) / M``. The planning form
  ``A = D M / (50 (1 - LSF))`` rounds 49.67 Gy kg/GBq to 50; both directions here use 49.67
  (:data:`voxeldose.constants.MIRD_Y90_GY_KG_PER_GBQ`) so that they are exact inverses.
- Body surface area (resin) [Kennedy2007]_: ``A = (BSA - 0.2) + V_T / (V_T + V_N)``, with the
  Du Bois body surface area [DuBois1916]_ ``BSA = 0.20247 height[m]^0.725 weight[kg]^0.425``.
- Partition (multi-compartment) [Ho1996]_: ``A = D_N (T:N M_T + M_N) / (49.67 (1 - LSF))`` and
  ``D_T = T:N D_N``.
- Lung [Ho1997]_: ``D_L = 49.67 A LSF / M_L``, with ``M_L = 1 kg`` when not measured.

``A`` is always the activity that reached the patient: the administered activity times
``1 - residual fraction`` (what stayed in the vial, tubing and catheter).

:func:`model_crosschecks` applies the models to one case, with the masses of its VOIs and the
tumour-to-normal ratio measured from its activity map, and sets them beside the voxel mean doses.

References
----------
.. [Dezarn2011] Dezarn WA et al. Recommendations of the AAPM on dosimetry, imaging, and quality
   assurance procedures for 90Y microsphere brachytherapy in the treatment of hepatic
   malignancies (TG-144). Med Phys 38:4824-4845, 2011. doi:10.1118/1.3608909
.. [Kennedy2007] Kennedy A et al. Recommendations for radioembolization of hepatic malignancies
   using yttrium-90 microsphere brachytherapy: a consensus panel report from the
   Radioembolization Brachytherapy Oncology Consortium. Int J Radiat Oncol Biol Phys 68:13-23,
   2007. doi:10.1016/j.ijrobp.2006.11.060 (the BSA method of the SIR-Spheres instructions for use)
.. [DuBois1916] Du Bois D, Du Bois EF. A formula to estimate the approximate surface area if
   height and weight be known. Arch Intern Med 17:863-871, 1916.
   doi:10.1001/archinte.1916.00080130010002
.. [Ho1996] Ho S et al. Partition model for estimating radiation doses from yttrium-90
   microspheres in treating hepatic tumours. Eur J Nucl Med 23:947-952, 1996.
   doi:10.1007/BF01084369
.. [Ho1997] Ho S et al. Clinical evaluation of the partition model for estimating radiation doses
   from yttrium-90 microspheres in the treatment of hepatic cancer. Eur J Nucl Med 24:293-298,
   1997. doi:10.1007/BF01728766 (lung: 30 Gy for one treatment, 50 Gy cumulative)
.. [ICRU44] ICRU Report 44, Tissue substitutes in radiation dosimetry and measurement, 1989
   (inflated lung 0.26 g/cm3; lung densities on CT are typically 0.2-0.35 g/cm3).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import (
    check_choice,
    check_fraction,
    check_nonnegative,
    check_positive,
    check_volume,
)
from .constants import MIRD_Y90_GY_KG_PER_GBQ, SOFT_TISSUE_DENSITY_G_PER_CM3
from .dvh import DVH
from .errors import InputError, VoiError, VoxelDoseWarning
from .image import Image, mask_image
from .voi_sets import difference, union_of

__all__ = [
    "Thresholds",
    "THRESHOLDS",
    "LUNG_DENSITY_G_PER_CM3",
    "CORE_FRACTION",
    "mird_dose_gy",
    "mird_activity_gbq",
    "body_surface_area_m2",
    "bsa_activity_gbq",
    "partition_doses_gy",
    "partition_activity_gbq",
    "lung_dose_gy",
    "tumour_to_normal_ratio",
    "model_crosschecks",
    "REFERENCES",
    "reference_flags",
]

#: Density (g/cm3) for the mass of a lung VOI. Lung is mostly air: ICRU 44 inflated lung is
#: 0.26 g/cm3 and CT-measured lung densities are 0.2-0.35 g/cm3 [ICRU44]_. A 3.6 L lung VOI
#: thus weighs about 1.1 kg, close to the 1 kg of the planning formula, where soft tissue
#: (1.04 g/cm3) would give 3.8 kg and a lung dose 3.5 times too low.
LUNG_DENSITY_G_PER_CM3: float = 0.30

#: Mask value from which a voxel counts as wholly inside a VOI for the measured T:N (a margin
#: for float rounding of rasterised or resampled masks).
CORE_FRACTION: float = 0.999

TnRule = Literal["core", "weighted"]


@dataclass(frozen=True)
class Thresholds:
    """Dose limits and response thresholds reported in the literature (../shared/CLINICAL.md).

    Mean doses in Gy. The clinical values are what the literature reports for particular
    products and diseases; voxeldose reports them beside a case and decides nothing.

    Attributes
    ----------
    lung_single_treatment_gy : 30.0
        Mean lung dose limit for one treatment [Ho1997]_, [Dezarn2011]_.
    lung_cumulative_gy : 50.0
        Mean lung dose limit over all treatments [Ho1997]_, [Dezarn2011]_.
    tumour_glass_response_gy : 205.0
        Glass microspheres, hepatocellular carcinoma: tumour dose associated with response
        (Garin et al., J Nucl Med 53:255-263, 2012. doi:10.2967/jnumed.111.094235).
    glass_120_gy : 120.0
        The "120 Gy" of the glass HCC literature (../shared/CLINICAL.md): the standard
        TheraSphere MIRD dose to the perfused liver (80-150 Gy) and the upper limit for the
        normal perfused liver in personalised dosimetry (Garin et al., DOSISPHERE-01, Lancet
        Gastroenterol Hepatol 6:17-29, 2021). Not a tumour-response threshold.
    tumour_resin_net_response_gy : 191.3
        Resin microspheres, neuroendocrine liver metastases: tumour dose predicting response
        (Chansanti et al., J Vasc Interv Radiol 28:1528-1535, 2017, SPECT/CT-based).
    tumour_resin_net_no_response_gy : 72.8
        Same series: tumour dose below which no response was predicted.
    normal_liver_no_toxicity_gy : 25.4
        Mean normal-liver dose in patients without toxicity (small series).
    normal_liver_toxicity_gy : 59.1
        Mean normal-liver dose in patients with fibrosis or liver failure (same series).
    tumour_burden_max_fraction : 0.70
        Tumour burden above this fraction of the target liver is a common exclusion.
    model_disagreement_fraction : 0.10
        voxeldose's own tolerance: a voxel mean dose that differs from its model value by more
        than this fraction is reported as a warning by :func:`model_crosschecks`.
    """

    lung_single_treatment_gy: float = 30.0
    lung_cumulative_gy: float = 50.0
    tumour_glass_response_gy: float = 205.0
    glass_120_gy: float = 120.0
    tumour_resin_net_response_gy: float = 191.3
    tumour_resin_net_no_response_gy: float = 72.8
    normal_liver_no_toxicity_gy: float = 25.4
    normal_liver_toxicity_gy: float = 59.1
    tumour_burden_max_fraction: float = 0.70
    model_disagreement_fraction: float = 0.10


#: The thresholds of ../shared/CLINICAL.md.
THRESHOLDS = Thresholds()


# --------------------------------------------------------------------------- planning formulas


def mird_dose_gy(activity_gbq: float, target_mass_kg: float, lung_shunt_fraction: float) -> float:
    """Mean absorbed dose (Gy) to the perfused target by the MIRD single-compartment model.

    ``D = 49.67 x A x (1 - LSF) / M``: all the activity that does not shunt to the lungs decays
    in the target and deposits all its energy there [Dezarn2011]_.

    Parameters
    ----------
    activity_gbq : float
        Activity that reached the patient (GBq), > 0.
    target_mass_kg : float
        Mass of the perfused target (kg), > 0 (volume in mL x 1.04 g/mL / 1000).
    lung_shunt_fraction : float
        Fraction of the activity shunted to the lungs, in [0, 1).

    Returns
    -------
    float
        Mean dose (Gy).

    Raises
    ------
    InputError
        If an argument is not a finite number in its range; the message names it.

    References
    ----------
    Dezarn et al. 2011 (AAPM TG-144), Med Phys 38:4824. doi:10.1118/1.3608909

    Example
    -------
    >>> round(mird_dose_gy(3.0, 1.5, 0.1), 3)  # 49.67 x 3 x 0.9 / 1.5
    89.406
    """
    a = check_positive(activity_gbq, "activity_gbq", "GBq")
    m = check_positive(target_mass_kg, "target_mass_kg", "kg")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction", "the fraction of the activity shunted to the lungs")
    return MIRD_Y90_GY_KG_PER_GBQ * a * (1.0 - lsf) / m


def mird_activity_gbq(target_dose_gy: float, target_mass_kg: float, lung_shunt_fraction: float) -> float:
    """Activity (GBq) that gives ``target_dose_gy`` to the target by the MIRD model.

    ``A = D x M / (49.67 x (1 - LSF))``, the inverse of :func:`mird_dose_gy`. Planning sheets
    often write 50 for 49.67 (0.7 % less activity); this function uses 49.67.

    Parameters
    ----------
    target_dose_gy : float
        Prescribed mean dose to the target (Gy), > 0.
    target_mass_kg : float
        Mass of the perfused target (kg), > 0.
    lung_shunt_fraction : float
        Lung shunt fraction, in [0, 1).

    Returns
    -------
    float
        Activity to reach the patient (GBq).

    Raises
    ------
    InputError
        If an argument is not a finite number in its range; the message names it.

    References
    ----------
    Dezarn et al. 2011 (AAPM TG-144), Med Phys 38:4824. doi:10.1118/1.3608909

    Example
    -------
    >>> round(mird_activity_gbq(120.0, 1.5, 0.1), 4)  # 120 x 1.5 / (49.67 x 0.9)
    4.0266
    """
    d = check_positive(target_dose_gy, "target_dose_gy", "Gy")
    m = check_positive(target_mass_kg, "target_mass_kg", "kg")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction", "the fraction of the activity shunted to the lungs")
    return d * m / (MIRD_Y90_GY_KG_PER_GBQ * (1.0 - lsf))


def body_surface_area_m2(height_m: float, weight_kg: float) -> float:
    """Body surface area (m2) by Du Bois & Du Bois: ``0.20247 x height^0.725 x weight^0.425``.

    The original form is ``0.007184 x height[cm]^0.725 x weight[kg]^0.425``; with the height in
    metres the constant becomes 0.007184 x 100^0.725 = 0.20247.

    Parameters
    ----------
    height_m : float
        Height (m), > 0 and at most 3 (a larger value is taken for centimetres and refused).
    weight_kg : float
        Weight (kg), > 0.

    Returns
    -------
    float
        Body surface area (m2).

    Raises
    ------
    InputError
        If an argument is not a positive finite number, or the height looks like centimetres.

    References
    ----------
    Du Bois & Du Bois 1916, Arch Intern Med 17:863. doi:10.1001/archinte.1916.00080130010002

    Example
    -------
    >>> round(body_surface_area_m2(1.75, 70.0), 3)
    1.848
    """
    h = check_positive(height_m, "height_m", "m")
    if h > 3.0:
        raise InputError(f"height_m = {height_m!r} m: is it in cm? Pass the height in metres (1.75 for 175 cm)")
    w = check_positive(weight_kg, "weight_kg", "kg")
    return 0.20247 * h**0.725 * w**0.425


def bsa_activity_gbq(bsa_m2: float, tumour_volume_ml: float, normal_liver_volume_ml: float) -> float:
    """Activity (GBq) of resin microspheres by the body-surface-area method.

    ``A = (BSA - 0.2) + V_T / (V_T + V_N)`` for whole-liver treatment (SIR-Spheres instructions
    for use; [Kennedy2007]_). The reductions of the instructions for use for a high lung shunt
    or a lobar treatment are not applied here.

    Parameters
    ----------
    bsa_m2 : float
        Body surface area (m2), > 0 (see :func:`body_surface_area_m2`).
    tumour_volume_ml : float
        Tumour volume (mL), >= 0.
    normal_liver_volume_ml : float
        Normal (non-tumorous) liver volume (mL), > 0.

    Returns
    -------
    float
        Activity (GBq).

    Raises
    ------
    InputError
        If an argument is not a finite number in its range; the message names it.

    References
    ----------
    Kennedy et al. 2007, Int J Radiat Oncol Biol Phys 68:13. doi:10.1016/j.ijrobp.2006.11.060

    Example
    -------
    >>> round(bsa_activity_gbq(1.8, 150.0, 1350.0), 3)  # (1.8 - 0.2) + 150 / 1500
    1.7
    """
    b = check_positive(bsa_m2, "bsa_m2", "m2")
    vt = check_nonnegative(tumour_volume_ml, "tumour_volume_ml", "mL")
    vn = check_positive(normal_liver_volume_ml, "normal_liver_volume_ml", "mL")
    return (b - 0.2) + vt / (vt + vn)


def partition_doses_gy(activity_gbq: float, tumour_to_normal: float, tumour_mass_kg: float,
                       normal_mass_kg: float, lung_shunt_fraction: float) -> tuple[float, float]:
    """Mean tumour and normal-liver doses (Gy) by the partition model.

    The liver activity ``A (1 - LSF)`` splits between tumour and normal liver in proportion to
    ``T:N x M_T`` and ``M_N``: ``D_N = 49.67 A (1 - LSF) / (T:N M_T + M_N)``, ``D_T = T:N D_N``
    [Ho1996]_.

    Parameters
    ----------
    activity_gbq : float
        Activity that reached the patient (GBq), > 0.
    tumour_to_normal : float
        Ratio of the activity concentrations (per unit mass) of tumour and normal liver, > 0.
    tumour_mass_kg : float
        Tumour mass (kg), >= 0.
    normal_mass_kg : float
        Normal-liver mass (kg), > 0.
    lung_shunt_fraction : float
        Lung shunt fraction, in [0, 1).

    Returns
    -------
    (tumour_gy, normal_gy) : tuple of float
        Mean doses (Gy) to the tumour and to the normal liver.

    Raises
    ------
    InputError
        If an argument is not a finite number in its range; the message names it.

    References
    ----------
    Ho et al. 1996, Eur J Nucl Med 23:947. doi:10.1007/BF01084369

    Example
    -------
    >>> t, n = partition_doses_gy(3.0, 4.0, 0.12, 1.4, 0.1)  # 134.109 / 1.88
    >>> round(t, 2), round(n, 2)
    (285.34, 71.33)
    """
    a = check_positive(activity_gbq, "activity_gbq", "GBq")
    tn = check_positive(tumour_to_normal, "tumour_to_normal", "ratio of concentrations")
    mt = check_nonnegative(tumour_mass_kg, "tumour_mass_kg", "kg")
    mn = check_positive(normal_mass_kg, "normal_mass_kg", "kg")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction", "the fraction of the activity shunted to the lungs")
    d_n = MIRD_Y90_GY_KG_PER_GBQ * a * (1.0 - lsf) / (tn * mt + mn)
    return tn * d_n, d_n


def partition_activity_gbq(normal_liver_dose_gy: float, tumour_to_normal: float, tumour_mass_kg: float,
                           normal_mass_kg: float, lung_shunt_fraction: float) -> float:
    """Activity (GBq) that gives ``normal_liver_dose_gy`` to the normal liver by the partition model.

    ``A = D_N (T:N M_T + M_N) / (49.67 (1 - LSF))``, the inverse of :func:`partition_doses_gy`
    [Ho1996]_. The tumour then receives ``T:N x D_N``.

    Parameters
    ----------
    normal_liver_dose_gy : float
        Mean normal-liver dose (Gy), > 0.
    tumour_to_normal : float
        Tumour-to-normal concentration ratio, > 0.
    tumour_mass_kg : float
        Tumour mass (kg), >= 0.
    normal_mass_kg : float
        Normal-liver mass (kg), > 0.
    lung_shunt_fraction : float
        Lung shunt fraction, in [0, 1).

    Returns
    -------
    float
        Activity to reach the patient (GBq).

    Raises
    ------
    InputError
        If an argument is not a finite number in its range; the message names it.

    References
    ----------
    Ho et al. 1996, Eur J Nucl Med 23:947. doi:10.1007/BF01084369

    Example
    -------
    >>> round(partition_activity_gbq(40.0, 4.0, 0.12, 1.4, 0.1), 4)  # 40 x 1.88 / 44.703
    1.6822
    """
    d = check_positive(normal_liver_dose_gy, "normal_liver_dose_gy", "Gy")
    tn = check_positive(tumour_to_normal, "tumour_to_normal", "ratio of concentrations")
    mt = check_nonnegative(tumour_mass_kg, "tumour_mass_kg", "kg")
    mn = check_positive(normal_mass_kg, "normal_mass_kg", "kg")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction", "the fraction of the activity shunted to the lungs")
    return d * (tn * mt + mn) / (MIRD_Y90_GY_KG_PER_GBQ * (1.0 - lsf))


def lung_dose_gy(activity_gbq: float, lung_shunt_fraction: float, lung_mass_kg: float = 1.0) -> float:
    """Mean lung dose (Gy) from the lung shunt: ``49.67 x A x LSF / M_lung``.

    Parameters
    ----------
    activity_gbq : float
        Activity that reached the patient (GBq), > 0.
    lung_shunt_fraction : float
        Lung shunt fraction, in [0, 1).
    lung_mass_kg : float
        Mass of both lungs (kg), > 0; 1 kg, the planning convention, when not measured.

    Returns
    -------
    float
        Mean lung dose (Gy); compare with 30 Gy for one treatment and 50 Gy cumulative
        (:data:`THRESHOLDS`).

    Raises
    ------
    InputError
        If an argument is not a finite number in its range; the message names it.

    References
    ----------
    Ho et al. 1997, Eur J Nucl Med 24:293. doi:10.1007/BF01728766;
    Dezarn et al. 2011 (AAPM TG-144). doi:10.1118/1.3608909

    Example
    -------
    >>> round(lung_dose_gy(3.0, 0.1), 3)  # 49.67 x 3 x 0.1 / 1 kg
    14.901
    """
    a = check_positive(activity_gbq, "activity_gbq", "GBq")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction", "the fraction of the activity shunted to the lungs")
    m = check_positive(lung_mass_kg, "lung_mass_kg", "kg")
    return MIRD_Y90_GY_KG_PER_GBQ * a * lsf / m


# --------------------------------------------------------------------------- measured T:N


def _mean_concentration(activity: NDArray[np.floating], mask: NDArray[np.floating], rule: TnRule, what: str) -> float:
    """Mean activity per voxel (MBq) in a VOI by ``rule``: the concentration times the voxel volume."""
    if rule == "core":
        core = mask >= CORE_FRACTION
        if core.any():
            return float(activity[core].mean(dtype=np.float64))
    total = float(mask.sum(dtype=np.float64))
    if total <= 0:
        raise VoiError(f"{what} is empty: its mask has no voxel > 0")
    return float(np.dot(activity.ravel().astype(np.float64), mask.ravel())) / total


def tumour_to_normal_ratio(
    activity: Image,
    tumour_mask: "Image | ArrayLike",
    normal_mask: "Image | ArrayLike",
    *,
    rule: TnRule = "core",
) -> float:
    """Tumour-to-normal ratio (T:N) of the mean activity concentrations, measured on an image.

    Two rules for the mean concentration of each VOI:

    - ``"core"`` (default): the mean over the voxels wholly inside the VOI (mask >=
      :data:`CORE_FRACTION`). A partly covered voxel at a tumour's edge holds activity of both
      compartments; leaving the edge out removes that mixing, so on an image without blur the
      ratio is recovered (the liver phantom's 4 to within 1e-6). A VOI with no whole voxel (a tumour
      smaller than about two voxels) falls back to the weighted rule.
    - ``"weighted"``: the partial-volume weighted mean ``sum(a m) / (V sum(m))``, the activity
      the mask holds per mL of VOI. It pulls T:N towards 1 because edge voxels mix the two
      concentrations (on the liver phantom at 4.42 mm: 3.71 instead of 4).

    Neither undoes the blur of a real PET or SPECT: both give the apparent T:N of the image.
    Tumours and normal liver are assumed to share one density, so the ratio of concentrations
    per mL is the ratio per kg that the partition model needs.

    Parameters
    ----------
    activity : Image
        Activity per voxel (MBq); any time reference, the ratio does not depend on it.
    tumour_mask, normal_mask : Image or array [z, y, x]
        The tumour (the union of all tumours) and normal-liver VOIs on the activity's grid.
    rule : {"core", "weighted"}
        How to average each VOI (above).

    Returns
    -------
    float
        Tumour concentration / normal-liver concentration.

    Raises
    ------
    InputError
        If the activity is not an Image of finite values, the rule is unknown, or the normal
        liver holds no (or negative) activity.
    VoiError
        If a mask is not on the activity's grid, has values outside [0, 1], or is empty.

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import Image
    >>> a = np.ones((1, 1, 4)); a[..., :2] = 4.0  # 4 MBq in two voxels, 1 MBq in two
    >>> t = np.array([[[1.0, 1.0, 0.0, 0.0]]])
    >>> tumour_to_normal_ratio(Image(a, (4.0, 4.0, 4.0), units="MBQ"), t, 1 - t)
    4.0
    """
    check_choice(rule, "rule", ("core", "weighted"))
    values = _activity_values(activity)
    tm = mask_image(activity, tumour_mask, name="tumour").array
    nm = mask_image(activity, normal_mask, name="normal liver").array
    c_t = _mean_concentration(values, tm, rule, "the tumour VOI")
    c_n = _mean_concentration(values, nm, rule, "the normal-liver VOI")
    if c_n <= 0:
        raise InputError(
            f"the normal-liver VOI holds no activity (mean {c_n / activity.voxel_volume_ml:.3g} MBq/mL): T:N is "
            "undefined; check the VOI's registration to the activity map"
        )
    return c_t / c_n


def _activity_values(activity: Image) -> NDArray[np.floating]:
    if not isinstance(activity, Image):
        raise InputError(f"the activity must be a voxeldose Image (MBq per voxel), got {type(activity).__name__}")
    return check_volume(activity.array, name="activity_mbq", warn_negative=False)


# --------------------------------------------------------------------------- cross-checks


def _rel(value: float | None, reference: float | None) -> float | None:
    """value / reference - 1, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return float(value) / float(reference) - 1.0


def _caveat(message: str) -> None:
    warnings.warn(message, VoxelDoseWarning, stacklevel=3)


@dataclass(frozen=True)
class _Case:
    """What every model check of :func:`model_crosschecks` reads."""

    activity: Image
    masks: Mapping[str, NDArray[np.floating]]  # checked, on the activity's grid
    boxes: Mapping[str, tuple[slice, ...] | None]  # each mask's bounding box (Image.nonzero_box)
    by_role: Mapping[str, list[str]]
    dvhs: Mapping[str, DVH]
    a_patient_gbq: float
    lsf: float
    limit: float
    density: NDArray[np.floating] | None = None  # g/cm3 from the CT: the masses are its

    def union(self, names: Sequence[str]) -> NDArray[np.float32]:
        """The union of the VOIs ``names`` (:func:`voxeldose.voi_sets.union_of`)."""
        return union_of([self.masks[n] for n in names], self.activity.shape, boxes=[self.boxes[n] for n in names])

    def mass_kg(self, names: Sequence[str], density_g_per_cm3: float = SOFT_TISSUE_DENSITY_G_PER_CM3) -> float:
        """Mass of the union of ``names``: at the CT's densities when the case has them, else at
        ``density_g_per_cm3``."""
        union = self.union(names)
        if self.density is not None:
            return float((union * self.density).sum(dtype=np.float64)) * self.activity.voxel_volume_ml * 1e-3
        return float(union.sum(dtype=np.float64)) * self.activity.voxel_volume_ml * density_g_per_cm3 * 1e-3

    def voxel_mean(self, names: Sequence[str]) -> float:
        """Volume-weighted mean of the DVH mean doses (the mean over the union when disjoint)."""
        volumes = [self.dvhs[n].volume_ml for n in names]
        return float(np.dot([self.dvhs[n].mean_gy for n in names], volumes) / sum(volumes))


def _mird_check(c: _Case) -> dict[str, Any] | None:
    """MIRD single compartment on the whole liver."""
    whole = c.by_role["whole_liver"]
    if not whole:
        _caveat("no whole-liver VOI (role whole_liver): no MIRD single-compartment check")
        return None
    m_liver = c.mass_kg(whole)
    model = mird_dose_gy(c.a_patient_gbq, m_liver, c.lsf)
    voxel = c.voxel_mean(whole)
    diff = _rel(voxel, model)
    if diff is not None and abs(diff) > c.limit:
        _caveat(f"whole liver: voxel mean dose {voxel:.1f} Gy differs from the MIRD model {model:.1f} Gy by "
                f"{diff:+.0%} (more than {c.limit:.0%}): activity outside the liver VOI, or a calibration or "
                "lung-shunt inconsistency?")
    return {"vois": whole, "mass_kg": m_liver, "model_mean_gy": model, "voxel_mean_gy": voxel,
            "relative_difference": diff}


def _partition_check(c: _Case, tn_rule: TnRule, notes: list[str]) -> dict[str, Any] | None:
    """Partition model on the tumours and the normal liver (given, or derived by the VOI set rules)."""
    tumours, normal, whole = (c.by_role[r] for r in ("tumour", "normal_liver", "whole_liver"))
    if not tumours:
        _caveat("no tumour VOI (role tumour): no partition-model check")
        return None
    if not normal and not whole:
        _caveat("no normal-liver or whole-liver VOI: no partition-model check")
        return None
    voxel_ml = c.activity.voxel_volume_ml
    tumour_mask = c.union(tumours)
    voxel_n: float | None
    if normal:
        normal_mask = c.union(normal)
        normal_source = " + ".join(normal)
        voxel_n = c.voxel_mean(normal)
    else:
        liver_mask = c.union(whole)
        normal_mask = difference(liver_mask, tumour_mask)
        normal_source = f"{' + '.join(whole)} - tumours (derived)"
        notes.append(f"normal liver derived as clip({' + '.join(whole)} - tumours, 0, 1)")
        outside = float(difference(tumour_mask, liver_mask).sum(dtype=np.float64))
        v_t = sum(c.dvhs[n].volume_ml for n in tumours)
        v_l = sum(c.dvhs[n].volume_ml for n in whole)
        if outside * voxel_ml <= 0.01 * v_t and v_l > v_t:
            dl = c.voxel_mean(whole)
            voxel_n = (dl * v_l - sum(c.dvhs[n].mean_gy * c.dvhs[n].volume_ml for n in tumours)) / (v_l - v_t)
            notes.append("normal-liver voxel mean derived from the whole-liver and tumour DVHs")
        else:
            voxel_n = None
            _caveat("tumours extend outside the whole-liver VOI: no voxel mean for the derived normal liver")
    rho_kg_per_ml = SOFT_TISSUE_DENSITY_G_PER_CM3 * 1e-3
    m_t = float(tumour_mask.sum(dtype=np.float64)) * voxel_ml * rho_kg_per_ml
    m_n = float(normal_mask.sum(dtype=np.float64)) * voxel_ml * rho_kg_per_ml
    try:
        tn: float | None = tumour_to_normal_ratio(c.activity, tumour_mask, normal_mask, rule=tn_rule)
    except (InputError, VoiError) as err:
        _caveat(f"no partition-model check: {err}")
        return None
    if m_n <= 0:
        _caveat("no partition-model check: the normal liver is empty")
        return None
    assert tn is not None
    if tn <= 0:
        _caveat(f"no partition-model check: measured T:N is {tn:.3g} (no tumour activity)")
        return None
    d_t, d_n = partition_doses_gy(c.a_patient_gbq, tn, m_t, m_n, c.lsf)
    voxel_t = c.voxel_mean(tumours)
    out = {
        "tumour_vois": tumours,
        "normal_liver": normal_source,
        "tumour_to_normal_measured": tn,
        "tumour_to_normal_rule": tn_rule,
        "tumour_mass_kg": m_t,
        "normal_mass_kg": m_n,
        "tumour_model_gy": d_t,
        "normal_liver_model_gy": d_n,
        "tumour_voxel_mean_gy": voxel_t,
        "normal_liver_voxel_mean_gy": voxel_n,
        "tumour_relative_difference": _rel(voxel_t, d_t),
        "normal_liver_relative_difference": _rel(voxel_n, d_n),
    }
    for label, voxel_mean, model_gy in (("tumours", voxel_t, d_t), ("normal liver", voxel_n, d_n)):
        diff = _rel(voxel_mean, model_gy)
        if diff is not None and voxel_mean is not None and abs(diff) > c.limit:
            _caveat(f"{label}: voxel mean dose {voxel_mean:.1f} Gy differs from the partition model "
                    f"{model_gy:.1f} Gy by {diff:+.0%} (more than {c.limit:.0%})")
    return out


def _lung_check(c: _Case, lung_mass_kg: float | None) -> dict[str, Any]:
    """Lung dose from the shunt, with the lung VOI's mass at lung density (or a given mass, or 1 kg)."""
    lung = c.by_role["lung"]
    voxel_lung = c.voxel_mean(lung) if lung else None
    if c.density is not None or not lung:  # with a CT the DVHs are at the voxels' own densities already
        voxel_lung_density = voxel_lung
    else:  # the voxel mean at lung density, whatever density the DVHs were given at (DVH.at_density)
        at_lung = [c.dvhs[n].at_density(LUNG_DENSITY_G_PER_CM3) for n in lung]
        voxel_lung_density = float(np.dot([h.mean_gy for h in at_lung], [h.volume_ml for h in at_lung])
                                   / sum(h.volume_ml for h in at_lung))
    if lung_mass_kg is not None:
        m_lung, source = lung_mass_kg, "given"
    elif lung and c.density is not None:
        m_lung = c.mass_kg(lung)
        source = f"{' + '.join(lung)} at the CT's densities"
    elif lung:
        m_lung = c.mass_kg(lung, LUNG_DENSITY_G_PER_CM3)
        source = f"{' + '.join(lung)} at {LUNG_DENSITY_G_PER_CM3:g} g/mL"
    else:
        m_lung, source = 1.0, "1 kg (no lung VOI)"
        _caveat("no lung VOI: the lung dose uses a 1 kg lung")
    d_lung = lung_dose_gy(c.a_patient_gbq, c.lsf, m_lung)
    if d_lung > THRESHOLDS.lung_single_treatment_gy:
        _caveat(f"lung dose {d_lung:.1f} Gy (model, {source}) exceeds "
                f"{THRESHOLDS.lung_single_treatment_gy:g} Gy for one treatment")
    return {"vois": lung, "mass_kg": m_lung, "mass_source": source, "model_mean_gy": d_lung,
            "voxel_mean_gy": voxel_lung, "voxel_density_g_per_cm3": [c.dvhs[n].density_g_per_cm3 for n in lung],
            "voxel_mean_at_lung_density_gy": voxel_lung_density,
            "voxel_density": "the CT's" if c.density is not None else f"{LUNG_DENSITY_G_PER_CM3:g} g/mL",
            "relative_difference": _rel(voxel_lung_density, d_lung)}


def model_crosschecks(
    activity: Image,
    vois: Mapping[str, "Image | ArrayLike"],
    roles: Mapping[str, str],
    dvhs: Mapping[str, DVH],
    *,
    administered_gbq: float,
    lung_shunt_fraction: float,
    residual_fraction: float = 0.0,
    lung_mass_kg: float | None = None,
    tn_rule: TnRule = "core",
    density: Image | None = None,
) -> dict[str, Any]:
    """The clinical models of a case beside its voxel mean doses; caveats as warnings.

    The models use the activity that reached the patient, ``A = administered x (1 - residual)``,
    and the masses of the case's VOIs:

    - **MIRD** single compartment on the VOI(s) with role ``"whole_liver"``; mass = volume x
      1.04 g/mL (soft tissue, the density of the engine's dose).
    - **Partition** on the union of the ``"tumour"`` VOIs and the ``"normal_liver"`` VOI(s), or,
      without a normal-liver VOI, the whole liver without the tumours (the rules of
      :mod:`voxeldose.voi_sets`); masses at 1.04 g/mL; T:N measured from ``activity`` with
      :func:`tumour_to_normal_ratio` (``tn_rule``).
    - **Lung** from the shunt fraction; lung mass ``lung_mass_kg`` if given, else the ``"lung"``
      VOI(s) at :data:`LUNG_DENSITY_G_PER_CM3` (0.30 g/mL: lung is mostly air), else 1 kg.

    Beside each model value is the voxel mean dose of the same VOIs from ``dvhs`` (VOIs of one
    role are combined by volume-weighted mean, exact when they do not overlap) and the relative
    difference ``voxel / model - 1``. For a derived normal liver, its voxel mean is derived the
    same way: ``(D_liver V_liver - sum D_t V_t) / (V_liver - sum V_t)``, when the tumours lie
    inside the whole liver. The engine's voxel dose is computed in soft tissue; the lung row
    compares the lung voxel mean at lung density (:meth:`DVH.at_density`, x 1.04 / 0.30 for a
    soft-tissue DVH; :func:`voxeldose.compute_case` already gives lung DVHs at lung density),
    which is what the lung model assumes.

    Parameters
    ----------
    activity : Image
        Activity per voxel at administration (MBq).
    vois : mapping name -> mask Image (or array) on the activity's grid
    roles : mapping name -> role
        ``"whole_liver"``, ``"tumour"``, ``"normal_liver"``, ``"lung"``; other roles (e.g.
        ``"perfused"``) are ignored. Several VOIs may share a role.
    dvhs : mapping name -> DVH
        DVHs of the VOIs (Gy); a VOI with a role but without a mask or DVH is left out, with a
        warning.
    administered_gbq : float
        Administered activity (GBq), > 0.
    lung_shunt_fraction : float
        Lung shunt fraction, in [0, 1).
    residual_fraction : float
        Fraction of the administered activity that did not reach the patient, in [0, 1).
    lung_mass_kg : float, optional
        Measured lung mass (kg), > 0; overrides the lung VOI.
    tn_rule : {"core", "weighted"}
        How the T:N is measured (:func:`tumour_to_normal_ratio`).
    density : Image, optional
        The CT's densities (g/cm3) on the activity's grid, when the dose used them: every model
        mass is then the VOI's mass at those densities, and the lung's voxel mean is compared as
        it is (its DVH is at the voxels' own densities), not rescaled to 0.30 g/mL.

    Returns
    -------
    dict
        JSON-able (floats, strings, lists, None). Keys: ``activity_in_patient_gbq``,
        ``administered_gbq``, ``residual_fraction``, ``lung_shunt_fraction``,
        ``mird_constant_gy_kg_per_gbq``, ``tissue_density_g_per_cm3``,
        ``lung_density_g_per_cm3``, ``roles`` (name -> role of the VOIs used),
        ``tumour_burden_fraction`` (tumour / whole-liver volume, or None), ``mird``,
        ``partition`` and ``lung`` (each a dict, or None when the VOIs are missing: see
        ``_mird_check``, ``_partition_check``, ``_lung_check`` for their keys) and ``notes``
        (list of str: how values were obtained, not caveats).

    Warns
    -----
    VoxelDoseWarning
        Lung dose above 30 Gy; tumour burden above 70 %; a voxel mean that differs from its
        model (MIRD, partition tumour, partition normal liver) by more than 10 %; a missing role
        or a VOI left out.

    Raises
    ------
    InputError
        If the activity is not an Image of finite values, or a scalar argument is out of range.
    VoiError
        If a mask is not on the activity's grid or is not a mask.

    References
    ----------
    Dezarn et al. 2011 (AAPM TG-144). doi:10.1118/1.3608909; Ho et al. 1996.
    doi:10.1007/BF01084369; Ho et al. 1997. doi:10.1007/BF01728766

    Example
    -------
    >>> import warnings, voxeldose
    >>> from voxeldose import phantoms
    >>> ph = phantoms.liver(spacing_xyz_mm=(8.84, 8.84, 8.84))
    >>> dose = voxeldose.absorbed_dose(ph.activity, method="local")
    >>> roles = {"liver": "whole_liver", "tumours": "tumour", "normal_liver": "normal_liver"}
    >>> dvhs = {n: voxeldose.dvh(dose, ph.vois[n]) for n in roles}
    >>> with warnings.catch_warnings(record=True):  # no lung VOI: a caveat
    ...     cc = model_crosschecks(ph.activity, ph.vois, roles, dvhs, administered_gbq=3.0,
    ...                            lung_shunt_fraction=0.1)
    >>> round(cc["partition"]["tumour_to_normal_measured"], 3)  # the phantom's T:N
    4.0
    >>> round(cc["lung"]["model_mean_gy"], 3)  # 49.67 x 3 x 0.1 / 1 kg: no lung VOI given
    14.901
    """
    _activity_values(activity)
    administered = check_positive(administered_gbq, "administered_gbq", "GBq")
    residual = check_fraction(residual_fraction, "residual_fraction",
                              "the fraction of the activity that did not reach the patient")
    lsf = check_fraction(lung_shunt_fraction, "lung_shunt_fraction", "the fraction of the activity shunted to the lungs")
    given_lung_kg = None if lung_mass_kg is None else check_positive(lung_mass_kg, "lung_mass_kg", "kg")
    check_choice(tn_rule, "tn_rule", ("core", "weighted"))
    a_patient = administered * (1.0 - residual)

    # the VOIs of each role that have both a mask and a DVH
    by_role: dict[str, list[str]] = {"whole_liver": [], "tumour": [], "normal_liver": [], "lung": []}
    masks: dict[str, NDArray[np.floating]] = {}
    boxes: dict[str, tuple[slice, ...] | None] = {}
    for name, role in roles.items():
        if role not in by_role:
            continue
        if name not in vois or name not in dvhs:
            missing = "mask" if name not in vois else "DVH"
            _caveat(f"VOI {name!r} (role {role}) has no {missing}: left out of the model cross-checks")
            continue
        image = mask_image(activity, vois[name], name=name)
        masks[name], boxes[name] = image.array, image.nonzero_box()  # found when the mask was made
        by_role[role].append(name)
    rho = None
    if density is not None:
        if (density.units or "").upper() != "G/CM3" or not density.same_grid(activity):
            raise InputError("model_crosschecks: density must be a density image (units 'G/CM3') on the activity's grid")
        rho = np.asarray(density.array, dtype=np.float64)
    c = _Case(activity, masks, boxes, by_role, dvhs, a_patient, lsf, THRESHOLDS.model_disagreement_fraction, rho)
    notes: list[str] = []
    out: dict[str, Any] = {
        "activity_in_patient_gbq": a_patient,
        "administered_gbq": administered,
        "residual_fraction": residual,
        "lung_shunt_fraction": lsf,
        "mird_constant_gy_kg_per_gbq": MIRD_Y90_GY_KG_PER_GBQ,
        "tissue_density_g_per_cm3": SOFT_TISSUE_DENSITY_G_PER_CM3,
        "lung_density_g_per_cm3": LUNG_DENSITY_G_PER_CM3,
        "masses": "at the CT's densities" if rho is not None else
                  f"at {SOFT_TISSUE_DENSITY_G_PER_CM3:g} g/mL (lung {LUNG_DENSITY_G_PER_CM3:g} g/mL)",
        "roles": {n: r for r, names in by_role.items() for n in names},
        "tumour_burden_fraction": None,
        "mird": _mird_check(c),
        "partition": _partition_check(c, tn_rule, notes),
        "lung": None,
    }
    if by_role["tumour"] and by_role["whole_liver"]:
        burden = c.mass_kg(by_role["tumour"]) / c.mass_kg(by_role["whole_liver"])
        out["tumour_burden_fraction"] = burden
        if burden > THRESHOLDS.tumour_burden_max_fraction:
            _caveat(f"tumour burden {burden:.0%} of the whole liver exceeds {THRESHOLDS.tumour_burden_max_fraction:.0%}")
    out["lung"] = _lung_check(c, given_lung_kg)
    out["notes"] = notes
    return out


# --------------------------------------------------------------------------- clinical references


#: The references each VOI role is compared with: (reference, threshold in Gy, True when the
#: flag is raised above the threshold, source). Mean doses, as the literature reports them.
REFERENCES: Mapping[str, tuple[tuple[str, float, bool, str], ...]] = {
    "lung": (
        ("lung limit, one treatment", THRESHOLDS.lung_single_treatment_gy, True,
         "Ho et al., Eur J Nucl Med 24:293, 1997; AAPM TG-144 (Dezarn et al. 2011)"),
        ("lung limit, cumulative", THRESHOLDS.lung_cumulative_gy, True,
         "Ho et al., Eur J Nucl Med 24:293, 1997; AAPM TG-144 (Dezarn et al. 2011)"),
    ),
    "normal_liver": (
        ("normal liver, mean without toxicity (small series)", THRESHOLDS.normal_liver_no_toxicity_gy, True,
         "../shared/CLINICAL.md"),
        ("normal liver, mean with fibrosis or failure (small series)", THRESHOLDS.normal_liver_toxicity_gy, True,
         "../shared/CLINICAL.md"),
    ),
    "tumour": (
        ("resin NET: no response predicted below", THRESHOLDS.tumour_resin_net_no_response_gy, False,
         "Chansanti et al., J Vasc Interv Radiol 28:1528, 2017"),
        ("resin NET: response predicted from", THRESHOLDS.tumour_resin_net_response_gy, True,
         "Chansanti et al., J Vasc Interv Radiol 28:1528, 2017"),
        ("glass HCC: response associated from", THRESHOLDS.tumour_glass_response_gy, True,
         "Garin et al., J Nucl Med 53:255, 2012"),
    ),
}


def reference_flags(dvhs: Mapping[str, DVH], roles: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each VOI's mean dose against the clinical references of its role (:data:`REFERENCES`).

    Returns ``{voi: [{"reference", "threshold_gy", "mean_gy", "flag", "source"}, ...]}`` for the
    VOIs with a role that has references (lung, normal liver, tumours; not derived unions).
    ``flag`` is True when the mean dose is at or above a threshold that flags from above (a lung
    limit, a toxicity level, a response threshold reached) or below one that flags from below
    (no response predicted). voxeldose reports them beside the dose; it decides nothing: each
    reference holds for its product and disease.

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import dvh_array
    >>> h = dvh_array(np.full((2, 2, 2), 35.0), np.ones((2, 2, 2)), spacing_xyz_mm=(4, 4, 4))
    >>> [f["reference"] for f in reference_flags({"lung": h}, {"lung": "lung"})["lung"] if f["flag"]]
    ['lung limit, one treatment']
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for name, h in dvhs.items():
        for reference, threshold, above, source in REFERENCES.get(roles.get(name, ""), ()):
            flag = h.mean_gy >= threshold if above else h.mean_gy < threshold
            out.setdefault(name, []).append({"reference": reference, "threshold_gy": threshold, "mean_gy": h.mean_gy,
                                             "flag": bool(flag), "source": source})
    return out

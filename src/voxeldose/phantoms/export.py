"""The liver phantom as a clinic would export it: PET, SPECT, CT, RTSTRUCT, SEG and a case file.

:func:`write_liver_case` writes, into one folder:

- ``PET/``: a Y-90 PET series in Bq/mL (one file per slice, int16 with a slope per slice), with
  the timing and radiopharmaceutical attributes a scanner writes, decay-corrected as asked;
- ``SPECT/spect.dcm``: a bremsstrahlung SPECT, one reconstructed NM multi-frame file, in counts;
- ``MAA/maa.dcm`` (only when asked: ``"MAA"`` in ``write``): the Tc-99m MAA SPECT of the planning,
  in counts, its own study (``maa_delay_h`` after the MAA injection, :data:`MAA_INJECTION`) on the
  same frame of reference, so the VOIs load on it as on the SPECT;
- ``CT/``: a CT of the same patient (body, liver, tumours, lungs in HU);
- ``RTSTRUCT.dcm``: the VOIs contoured on the CT slices (liver, tumours, lung);
- ``SEG.dcm``: the same VOIs as a fractional DICOM SEG on the PET grid;
- ``case.toml``: what the headers lack (administered activity and time, lung shunt, VOI roles);
- ``truth.json``: the phantom's truth (activity at administration per VOI, LDM doses, models),
  the timing and every factor of the scanner models below.

All share one frame of reference, and all but the MAA SPECT one study.

Scanner models (what the stored values are)
-------------------------------------------
With A0 the activity in a voxel at administration, t_s the acquisition start (``delay_h``
after administration), T the frame duration and lambda = ln 2 / T1/2(Y-90):

- PET: the scanner counts positrons at y = 31.86e-6 per Y-90 decay over the frame, so the
  frame-averaged positron rate is y A0 e^(-lambda t_s) (1 - e^(-lambda T)) / (lambda T). It
  converts rate to activity with the positron fraction p_X of the nuclide X it is configured
  for (Y-90 by default) and decay-corrects with X's half-life: START multiplies by
  lambda_X T / (1 - e^(-lambda_X T)) (frame average to frame start), ADMIN also by
  e^(lambda_X t_s), NONE by nothing. The factor applied is written as DecayFactor.
- SPECT: counts = s x integral of A(t) over the frame, with a sensitivity s (counts per MBq·s)
  chosen so the hottest voxel holds about 60 000 counts; rounded (and Poisson-sampled if
  ``spect_noise``). s is in truth.json, not in the DICOM: self-calibration does not need it.
- MAA SPECT: the same liver geometry (:func:`voxeldose.phantoms.liver`) holding the injected
  Tc-99m MAA activity A0 (``maa_activity_mbq``), split by the MAA's lung shunt and tumour-to-normal
  ratio (``maa_cold_tumour`` takes none). counts = s x integral of A(t) over the frame =
  s A0 e^(-lambda t_s) (1 - e^(-lambda T)) / lambda, lambda = ln 2 / T1/2(Tc-99m) (ICRP-107,
  :data:`voxeldose.nuclides.TC99M`), t_s = ``maa_delay_h``, T = ``maa_frame_s``; rounded (or
  Poisson-sampled, ``maa_noise``). s = :data:`MAA_COUNTS_PER_MBQ_S`, a fixed sensitivity (not
  scaled to the image as the bremsstrahlung SPECT's), so that the counts are those of a real
  acquisition; it is in truth.json, not in the DICOM (planning needs ratios of counts only).

Nuclide data: :data:`voxeldose.nuclides.NUCLIDES`, the table calibration reads too, and
:data:`voxeldose.nuclides.SPECT_NUCLIDES` (both checked against ICRP-107 in tests/test_nuclides.py).

References
----------
NEMA NU 1-2018, Performance Measurements of Gamma Cameras (planar sensitivity, cps/MBq).

Berger MJ et al., XCOM: Photon Cross Sections Database, NIST Standard Reference Database 8,
doi:10.18434/T48G6X (water at 140 keV: mu/rho about 0.15 cm2/g).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import constants as C
from .. import phantoms
from .._resources import data_dir
from ..errors import InputError
from ..image import Image
from ..io._dicom_common import new_uid, read_datasets
from ..io.series import SeriesHeader, write_ct_series, write_nm_spect, write_pet_series
from ..nuclides import NUCLIDES, TC99M

__all__ = ["write_liver_case", "write_phantom", "pet_stored_per_activity", "WRITE_DEFAULT", "WRITABLE",
           "MAA_INJECTION", "MAA_COUNTS_PER_MBQ_S"]



ADMINISTRATION = dt.datetime(2026, 1, 15, 10, 30, 0)

#: The Tc-99m MAA injection of the planning (the work-up angiography), ten days before the Y-90
#: administration (:data:`ADMINISTRATION`): one to three weeks is usual.
MAA_INJECTION = dt.datetime(2026, 1, 5, 9, 0, 0)

#: Sensitivity of the MAA SPECT model: counts in the reconstructed image per MBq·s of Tc-99m in the
#: field of view. A dual-head camera with low-energy high-resolution collimators counts some
#: 80-95 cps/MBq per head in a 20 % 140 keV window in air (NEMA NU 1 planar sensitivity, vendors'
#: data sheets). Two heads give about 180 counts/s/MBq with attenuation corrected in the
#: reconstruction, and about 40 without (e^(-0.15/cm x 10 cm) = 0.22 for a liver 10 cm deep, mu of
#: water at 140 keV from NIST XCOM); 100 is taken, between them. A value of the right order, not a
#: measured calibration: planning uses ratios of counts only. 150 MBq then give some 15 million
#: counts in 20 min, and the hottest voxel about 3000.
MAA_COUNTS_PER_MBQ_S = 100.0

#: What :func:`write_liver_case` writes unless told otherwise (the MAA SPECT only when asked).
WRITE_DEFAULT: tuple[str, ...] = ("PET", "SPECT", "CT", "RTSTRUCT", "SEG")

#: Everything :func:`write_liver_case` can write.
WRITABLE: tuple[str, ...] = (*WRITE_DEFAULT, "MAA")


def _frame_average(lam: float, duration_s: float) -> float:
    """Mean of e^(-lam t) over [0, T]."""
    x = lam * duration_s
    return 1.0 if x == 0 else (1.0 - math.exp(-x)) / x


def pet_stored_per_activity(
    *, delay_s: float, frame_s: float, decay_correction: str, nuclide: str = "Y-90"
) -> tuple[float, float]:
    """Stored PET value per unit of activity at administration, and the DecayFactor written.

    Returns ``(factor, decay_factor)``: the scanner stores ``factor x A0`` (same units as A0).
    """
    x = NUCLIDES[nuclide]
    lam = C.Y90_DECAY_CONSTANT_PER_S
    lam_x = math.log(2.0) / x.half_life_s
    rate = C.Y90_POSITRON_YIELD * math.exp(-lam * delay_s) * _frame_average(lam, frame_s)
    uncorrected = rate / x.positron_fraction
    if decay_correction == "NONE":
        decay_factor = 1.0
    elif decay_correction == "START":
        decay_factor = 1.0 / _frame_average(lam_x, frame_s)
    elif decay_correction == "ADMIN":
        decay_factor = math.exp(lam_x * delay_s) / _frame_average(lam_x, frame_s)
    else:
        raise InputError(f"decay_correction must be START, ADMIN or NONE, got {decay_correction!r}")
    return uncorrected * decay_factor, decay_factor


def _geometry() -> dict[str, Any]:
    with (data_dir("phantoms") / "liver.toml").open("rb") as fh:
        return tomllib.load(fh)


def _ct_image(spacing_xyz_mm: Sequence[float], geo: dict[str, Any], lung_interface: bool = False) -> Image:
    ph = phantoms.liver(spacing_xyz_mm=spacing_xyz_mm, lung_interface=lung_interface)
    nz, ny, nx = ph.activity_mbq.shape
    sx, sy, _ = ph.spacing_mm
    ox, oy, _ = ph.origin_mm
    x = ox + np.arange(nx) * sx
    y = oy + np.arange(ny) * sy
    (cx, cy), (ax, ay) = geo["body"]["centre_mm"], geo["body"]["semi_axes_mm"]
    body = (((x[None, :] - cx) / ax) ** 2 + ((y[:, None] - cy) / ay) ** 2) <= 1.0
    hu_table: dict[str, float] = {k: float(v) for k, v in geo["ct_hu"].items()}
    if lung_interface:
        hu_table["lung"] = geo["interface"]["lung_hu"]
    hu = np.where(body, hu_table["body"], hu_table["outside"])[None].repeat(nz, axis=0).astype(np.float64)
    m = ph.masks
    for name, key in (("normal_liver", "liver"), ("tumours", "tumour"), ("lung", "lung")):
        hu += m[name] * (hu_table[key] - hu)
    return Image(hu, ph.spacing_mm, ph.origin_mm, units="HU")


def _contours(geo: dict[str, Any], plane_z_mm: Sequence[float], lung_interface: bool = False
              ) -> dict[str, list[np.ndarray]]:
    from ..io.write_vois import ellipsoid_polygons

    liver_c = np.asarray(geo["liver"]["centre_mm"], float)
    planes = np.asarray(plane_z_mm, float)
    z0 = geo["interface"]["plane_z_mm"] if lung_interface else np.inf
    rois: dict[str, list[np.ndarray]] = {
        "liver": ellipsoid_polygons(liver_c.tolist(), geo["liver"]["semi_axes_mm"], planes[planes < z0])
    }
    for t in geo["tumours"]:
        r = t["diameter_mm"] / 2.0
        centre = (liver_c + np.asarray(t["centre_mm"], float)).tolist()
        rois[t["name"]] = ellipsoid_polygons(centre, (r, r, r), plane_z_mm)
    rois["lung"] = []
    for lu in geo["lungs"]:
        if lung_interface and lu["name"] == "right_lung":  # on the liver: above the plane only
            rois["lung"] += ellipsoid_polygons(geo["interface"]["right_lung_centre_mm"], lu["semi_axes_mm"],
                                               planes[planes > z0])
        else:
            rois["lung"] += ellipsoid_polygons(lu["centre_mm"], lu["semi_axes_mm"], planes)
    return rois


def write_liver_case(
    out_dir: str | Path,
    *,
    administered_gbq: float = 3.0,
    lung_shunt_fraction: float = 0.10,
    tumour_to_normal: float = 4.0,
    delay_h: float = 20.0,
    pet_spacing_xyz_mm: Sequence[float] = (4.0, 4.0, 3.0),
    pet_frame_s: float = 900.0,
    decay_correction: str = "START",
    scanner_nuclide: str = "Y-90",
    spect_spacing_xyz_mm: Sequence[float] = (4.42, 4.42, 4.42),
    spect_frame_s: float = 1800.0,
    spect_noise: bool = False,
    ct_spacing_xyz_mm: Sequence[float] = (2.0, 2.0, 3.0),
    fwhm_mm: float | None = None,
    seed: int = 0,
    case_id: str = "phantom-liver",
    write: Sequence[str] = WRITE_DEFAULT,
    lung_interface: bool = False,
    maa_activity_mbq: float = 150.0,
    maa_delay_h: float = 1.0,
    maa_frame_s: float = 1200.0,
    maa_spacing_xyz_mm: Sequence[float] = (4.42, 4.42, 4.42),
    maa_tumour_to_normal: float | None = None,
    maa_lung_shunt_fraction: float | None = None,
    maa_cold_tumour: str | None = None,
    maa_noise: bool = False,
) -> dict[str, Any]:
    """Write the liver phantom as a DICOM export with a case file and its truth.

    Parameters
    ----------
    out_dir : path
        Folder to fill (created; must be empty if it exists).
    administered_gbq, lung_shunt_fraction, tumour_to_normal
        As in :func:`voxeldose.phantoms.liver`.
    delay_h : float
        Acquisition start after administration (h), for both scans.
    pet_spacing_xyz_mm, pet_frame_s, decay_correction, scanner_nuclide
        PET grid, frame duration (s), DecayCorrection (START, ADMIN, NONE) and the nuclide the
        scanner is configured for (see :data:`voxeldose.nuclides.NUCLIDES`).
    spect_spacing_xyz_mm, spect_frame_s, spect_noise
        SPECT grid, acquisition duration (s), Poisson noise on the counts.
    ct_spacing_xyz_mm : (x, y, z)
        CT grid; the RTSTRUCT is contoured on its slices.
    fwhm_mm : float, optional
        Scanner resolution applied to PET and SPECT activity (Gaussian FWHM, mm).
    case_id : str
        Written to the case file (outputs are named by it).
    seed : int
        Seed of the PET file names and of the SPECT's and MAA SPECT's noise.
    write : sequence of str
        Which objects to write, of :data:`WRITABLE` (default :data:`WRITE_DEFAULT`: all but the MAA
        SPECT).
    lung_interface : bool
        The variant with the right lung resting on the liver (:func:`voxeldose.phantoms.liver`),
        its CT's lung at 0.28 g/cm3.
    maa_activity_mbq : float
        MAA SPECT: Tc-99m MAA activity injected (MBq) at :data:`MAA_INJECTION`.
    maa_delay_h, maa_frame_s
        MAA SPECT: acquisition start after the injection (h) and acquisition duration (s).
    maa_spacing_xyz_mm : (x, y, z)
        MAA SPECT grid (mm), by default the SPECT's.
    maa_tumour_to_normal, maa_lung_shunt_fraction : float, optional
        MAA's tumour-to-normal uptake ratio and lung shunt (default: ``tumour_to_normal`` and
        ``lung_shunt_fraction``, the MAA predicting the microspheres exactly).
    maa_cold_tumour : str, optional
        A tumour (``"tumour_1"`` ... ``"tumour_5"``) that takes up no MAA: a perturbed uptake
        pattern.
    maa_noise : bool
        Poisson noise on the MAA counts.

    Returns
    -------
    dict
        The truth record also written to ``truth.json``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder")
    maa_tumour_to_normal = tumour_to_normal if maa_tumour_to_normal is None else maa_tumour_to_normal
    maa_lung_shunt_fraction = lung_shunt_fraction if maa_lung_shunt_fraction is None else maa_lung_shunt_fraction
    if "MAA" in write:
        _check_maa_options(maa_activity_mbq, maa_delay_h, maa_frame_s, maa_tumour_to_normal, maa_lung_shunt_fraction,
                           maa_cold_tumour)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(write) - set(WRITABLE)
    if unknown:
        raise InputError(f"unknown objects to write: {sorted(unknown)}; choose from {', '.join(WRITABLE)}")
    geo = _geometry()
    scan = ADMINISTRATION + dt.timedelta(hours=delay_h)
    if delay_h <= 0:
        raise InputError(f"delay_h must be > 0 (the scan follows the administration), got {delay_h}")
    study = SeriesHeader(study_datetime=scan, acquisition_datetime=scan, series_datetime=scan)

    def series(number: int, description: str) -> SeriesHeader:
        return replace(study, series_instance_uid=new_uid(), series_number=number, series_description=description)

    truth: dict[str, Any] = {"case_id": case_id, "administration_datetime": ADMINISTRATION.isoformat(),
                             "scan_datetime": scan.isoformat(), "delay_h": delay_h, "lung_interface": lung_interface}

    pet = phantoms.liver(spacing_xyz_mm=pet_spacing_xyz_mm, administered_gbq=administered_gbq,
                         lung_shunt_fraction=lung_shunt_fraction, tumour_to_normal=tumour_to_normal,
                         lung_interface=lung_interface)
    truth["phantom"] = dict(pet.truth)
    pet_datasets: list[Any] = []
    if "PET" in write or "SEG" in write:
        activity = pet.activity_mbq if fwhm_mm is None else phantoms.liver(
            spacing_xyz_mm=pet_spacing_xyz_mm, administered_gbq=administered_gbq, lung_shunt_fraction=lung_shunt_fraction,
            tumour_to_normal=tumour_to_normal, fwhm_mm=fwhm_mm, lung_interface=lung_interface).activity_mbq
        factor, decay_factor = pet_stored_per_activity(delay_s=delay_h * 3600, frame_s=pet_frame_s,
                                                       decay_correction=decay_correction, nuclide=scanner_nuclide)
        nuclide = NUCLIDES[scanner_nuclide]
        bqml = activity * (factor * 1e6 / pet.voxel_ml)
        header = series(2, f"Y90 PET {decay_correction}")
        paths = write_pet_series(
            out / "PET", Image(bqml, pet.spacing_mm, pet.origin_mm, units="BQML"), header,
            radiopharmaceutical_start=ADMINISTRATION, total_dose_bq=administered_gbq * 1e9,
            decay_correction=decay_correction, decay_factor=decay_factor, frame_duration_s=pet_frame_s,
            nuclide=scanner_nuclide, half_life_s=nuclide.half_life_s, positron_fraction=nuclide.positron_fraction,
            seed=seed,
        )
        pet_datasets = read_datasets(paths)
        truth["pet"] = {"series_instance_uid": header.series_instance_uid, "spacing_mm": list(pet.spacing_mm),
                        "stored_per_activity": factor, "decay_factor": decay_factor,
                        "decay_correction": decay_correction, "scanner_nuclide": scanner_nuclide,
                        "frame_s": pet_frame_s, "fwhm_mm": fwhm_mm}
        if "PET" not in write:
            for p in paths:
                p.unlink()
            (out / "PET").rmdir()

    if "SPECT" in write:
        spect = phantoms.liver(spacing_xyz_mm=spect_spacing_xyz_mm, administered_gbq=administered_gbq,
                               lung_shunt_fraction=lung_shunt_fraction, tumour_to_normal=tumour_to_normal,
                               fwhm_mm=fwhm_mm, lung_interface=lung_interface)
        lam = C.Y90_DECAY_CONSTANT_PER_S
        decays_per_mbq = math.exp(-lam * delay_h * 3600) * _frame_average(lam, spect_frame_s) * spect_frame_s
        sensitivity = 60000.0 / (float(spect.activity_mbq.max()) * decays_per_mbq)
        expected = spect.activity_mbq * decays_per_mbq * sensitivity
        counts = np.random.default_rng(seed).poisson(expected).astype(float) if spect_noise else np.round(expected)
        header = series(3, "Y90 bremsstrahlung SPECT")
        write_nm_spect(out / "SPECT" / "spect.dcm", Image(counts, spect.spacing_mm, spect.origin_mm, units="CNTS"),
                       header, radiopharmaceutical_start=ADMINISTRATION, total_dose_bq=administered_gbq * 1e9,
                       frame_duration_s=spect_frame_s)
        truth["spect"] = {"series_instance_uid": header.series_instance_uid, "spacing_mm": list(spect.spacing_mm),
                          "counts_per_mbq_s": sensitivity, "frame_s": spect_frame_s, "noise": spect_noise,
                          "fwhm_mm": fwhm_mm, "total_counts": float(counts.sum()),
                          "vois": spect.truth["vois"]}

    if "MAA" in write:
        truth["maa"] = _write_maa(
            out / "MAA" / "maa.dcm", study, administered_mbq=maa_activity_mbq, delay_h=maa_delay_h,
            frame_s=maa_frame_s, spacing_xyz_mm=maa_spacing_xyz_mm,
            tumour_to_normal=maa_tumour_to_normal, lung_shunt_fraction=maa_lung_shunt_fraction,
            cold_tumour=maa_cold_tumour, noise=maa_noise, fwhm_mm=fwhm_mm, lung_interface=lung_interface, seed=seed)

    ct_datasets: list[Any] = []
    if "CT" in write or "RTSTRUCT" in write:
        ct = _ct_image(ct_spacing_xyz_mm, geo, lung_interface)
        header = series(1, "CT abdomen")
        paths = write_ct_series(out / "CT", ct, header)
        ct_datasets = read_datasets(paths)
        from ..density import SCHNEIDER2000

        hu = dict(geo["ct_hu"], **({"lung": geo["interface"]["lung_hu"]} if lung_interface else {}))
        truth["ct"] = {"series_instance_uid": header.series_instance_uid, "spacing_mm": list(ct.spacing_mm),
                       "hu": hu, "density_g_per_cm3": {k: float(SCHNEIDER2000.density(v)) for k, v in hu.items()},
                       "density_table": SCHNEIDER2000.source}

    if "RTSTRUCT" in write:
        from ..io.write_vois import write_rtstruct

        planes = sorted(float(ds.ImagePositionPatient[2]) for ds in ct_datasets)
        write_rtstruct(out / "RTSTRUCT.dcm", _contours(geo, planes, lung_interface), ct_datasets)
        if "CT" not in write:
            for p in (out / "CT").iterdir():
                p.unlink()
            (out / "CT").rmdir()
    if "SEG" in write:
        from ..io.write_vois import write_seg

        names = ["liver"] + [t["name"] for t in geo["tumours"]] + ["lung"]
        write_seg(out / "SEG.dcm", {n: pet.masks[n] for n in names}, pet_datasets, fractional=True)

    roles = {"liver": "whole_liver", "lung": "lung", **{t["name"]: "tumour" for t in geo["tumours"]}}
    case_lines = [
        "# Case file of the synthetic liver phantom (voxeldose phantom liver).",
        f'case_id = "{case_id}"',
        f"administered_gbq = {administered_gbq!r}",
        f'administration_time = "{ADMINISTRATION.isoformat()}"',
        f"lung_shunt_fraction = {lung_shunt_fraction!r}",
        "residual_fraction = 0.0",
        'sphere_type = "glass"',
        f'scanner_nuclide = "{scanner_nuclide}"',
        "",
        "[vois]",
        *[f'{name} = "{role}"' for name, role in roles.items()],
        "",
    ]
    (out / "case.toml").write_text("\n".join(case_lines), encoding="utf-8")
    (out / "truth.json").write_text(json.dumps(truth, indent=2, default=str), encoding="utf-8")
    return truth


def _check_maa_options(administered_mbq: float, delay_h: float, frame_s: float, tumour_to_normal: float,
                       lung_shunt_fraction: float, cold_tumour: str | None) -> tuple[float, float, float, float, float]:
    """The MAA SPECT's options, checked (before anything is written), by their names."""
    from .._checks import check_fraction, check_positive

    tumours = [t["name"] for t in _geometry()["tumours"]]
    if cold_tumour is not None and cold_tumour not in tumours:
        raise InputError(f"maa_cold_tumour {cold_tumour!r} is not a tumour of the liver phantom; its tumours are "
                         f"{', '.join(tumours)}")
    return (check_positive(administered_mbq, "maa_activity_mbq", "MBq"),
            check_positive(delay_h, "maa_delay_h", "h (injection to acquisition)"),
            check_positive(frame_s, "maa_frame_s", "s"),
            check_positive(tumour_to_normal, "maa_tumour_to_normal", "ratio of concentrations"),
            check_fraction(lung_shunt_fraction, "maa_lung_shunt_fraction", "the MAA's lung shunt"))


def _write_maa(path: Path, study: SeriesHeader, *, administered_mbq: float, delay_h: float, frame_s: float,
               spacing_xyz_mm: Sequence[float], tumour_to_normal: float, lung_shunt_fraction: float,
               cold_tumour: str | None, noise: bool, fwhm_mm: float | None, lung_interface: bool,
               seed: int) -> dict[str, Any]:
    """Write the Tc-99m MAA SPECT (the counting model of the module documentation); its truth record."""
    a0_mbq, delay_h, frame_s, tn, lsf = _check_maa_options(administered_mbq, delay_h, frame_s, tumour_to_normal,
                                                           lung_shunt_fraction, cold_tumour)
    maa = phantoms.liver(spacing_xyz_mm=spacing_xyz_mm, administered_gbq=a0_mbq * 1e-3, lung_shunt_fraction=lsf,
                         tumour_to_normal=tn, fwhm_mm=fwhm_mm, lung_interface=lung_interface,
                         cold_tumours=() if cold_tumour is None else (cold_tumour,))
    lam = math.log(2.0) / TC99M.half_life_s
    mbq_s_per_mbq = math.exp(-lam * delay_h * 3600) * _frame_average(lam, frame_s) * frame_s
    counts_per_mbq = MAA_COUNTS_PER_MBQ_S * mbq_s_per_mbq
    expected = maa.activity_mbq * counts_per_mbq
    counts = (np.random.default_rng((seed, 99)).poisson(expected).astype(float) if noise else np.round(expected))
    scan = MAA_INJECTION + dt.timedelta(hours=delay_h)
    header = replace(study, study_instance_uid=new_uid(), study_datetime=scan, study_id="2",
                     acquisition_datetime=scan, series_datetime=scan, series_instance_uid=new_uid(), series_number=4,
                     series_description="Tc99m MAA SPECT")
    write_nm_spect(path, Image(counts, maa.spacing_mm, maa.origin_mm, units="CNTS"), header,
                   radiopharmaceutical_start=MAA_INJECTION, total_dose_bq=a0_mbq * 1e6, frame_duration_s=frame_s,
                   nuclide="Tc-99m", radiopharmaceutical="Tc-99m MAA")
    vois = {name: {"activity_mbq": v["activity_mbq"], "counts": v["activity_mbq"] * counts_per_mbq,
                   "concentration_mbq_per_ml": v["concentration_mbq_per_ml"], "volume_ml": v["volume_ml"]}
            for name, v in maa.truth["vois"].items()}
    return {
        "folder": path.parent.name,
        "file": path.name,
        "series_instance_uid": header.series_instance_uid,
        "study_instance_uid": header.study_instance_uid,
        "frame_of_reference_uid": header.frame_of_reference_uid,
        "nuclide": TC99M.name,
        "half_life_s": TC99M.half_life_s,
        "radiopharmaceutical": "Tc-99m MAA",
        "injection_datetime": MAA_INJECTION.isoformat(),
        "scan_datetime": scan.isoformat(),
        "delay_h": delay_h,
        "frame_s": frame_s,
        "activity_mbq": a0_mbq,
        "tumour_to_normal": maa.truth["tumour_to_normal"],
        "lung_shunt_fraction": maa.truth["lung_shunt_fraction"],
        "cold_tumour": cold_tumour,
        "noise": noise,
        "fwhm_mm": fwhm_mm,
        "spacing_mm": list(maa.spacing_mm),
        "counts_per_mbq_s": MAA_COUNTS_PER_MBQ_S,
        "counts_per_mbq": counts_per_mbq,
        "total_counts": float(counts.sum()),
        "vois_meaning": "activity_mbq: Tc-99m MAA in the VOI's own compartment at the injection (the liver: normal "
                        "liver and tumours); counts: that activity x counts_per_mbq, before rounding and noise",
        "vois": vois,
    }


def write_phantom(name: str, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Write phantom ``name`` as DICOM into ``out_dir`` (see :func:`write_liver_case`).

    ``liver`` writes the full case (PET, SPECT, CT, RTSTRUCT, SEG, case file). The other
    phantoms (``point_source``, ``uniform``, ``sphere``) write a Y-90 PET series of their
    activity with the PET scanner model above (options ``delay_h``, ``pet_frame_s``,
    ``decay_correction``, ``scanner_nuclide``, ``seed``; their own keyword options, e.g.
    ``spacing_xyz_mm``, are passed to the phantom), a fractional SEG of their masks, a case file and
    ``truth.json``.
    """
    if name == "liver":
        return write_liver_case(out_dir, **options)
    if name not in phantoms.PHANTOMS:
        raise InputError(f"unknown phantom {name!r}; choose one of {', '.join(phantoms.PHANTOMS)}")
    scanner = {k: options.pop(k) for k in ("delay_h", "pet_frame_s", "decay_correction", "scanner_nuclide", "seed",
                                           "case_id") if k in options}
    ph = phantoms.make_phantom(name, **options)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    delay_h = float(scanner.get("delay_h", 20.0))
    frame_s = float(scanner.get("pet_frame_s", 900.0))
    correction = str(scanner.get("decay_correction", "START"))
    nuclide_name = str(scanner.get("scanner_nuclide", "Y-90"))
    case_id = str(scanner.get("case_id", f"phantom-{name}"))
    scan = ADMINISTRATION + dt.timedelta(hours=delay_h)
    factor, decay_factor = pet_stored_per_activity(delay_s=delay_h * 3600, frame_s=frame_s,
                                                   decay_correction=correction, nuclide=nuclide_name)
    nuclide = NUCLIDES[nuclide_name]
    header = SeriesHeader(study_datetime=scan, acquisition_datetime=scan, series_datetime=scan,
                          series_description=f"Y90 PET {name}", patient_name=f"Voxeldose^Phantom {name}")
    total_mbq = float(ph.activity_mbq.sum())
    paths = write_pet_series(
        out / "PET", Image(ph.activity_mbq * (factor * 1e6 / ph.voxel_ml), ph.spacing_mm, ph.origin_mm, units="BQML"),
        header, radiopharmaceutical_start=ADMINISTRATION, total_dose_bq=total_mbq * 1e6, decay_correction=correction,
        decay_factor=decay_factor, frame_duration_s=frame_s, nuclide=nuclide_name, half_life_s=nuclide.half_life_s,
        positron_fraction=nuclide.positron_fraction, seed=int(scanner.get("seed", 0)),
    )
    from ..io.write_vois import write_seg

    write_seg(out / "SEG.dcm", dict(ph.masks), read_datasets(paths), fractional=True)
    (out / "case.toml").write_text(
        "\n".join([
            f"# Case file of the synthetic {name} phantom (voxeldose phantom {name}).",
            f'case_id = "{case_id}"',
            f"administered_gbq = {total_mbq / 1e3!r}",
            f'administration_time = "{ADMINISTRATION.isoformat()}"',
            "lung_shunt_fraction = 0.0",
            "residual_fraction = 0.0",
            f'scanner_nuclide = "{nuclide_name}"',
            "",
        ]),
        encoding="utf-8",
    )
    truth = {"case_id": case_id, "administration_datetime": ADMINISTRATION.isoformat(),
             "scan_datetime": scan.isoformat(), "delay_h": delay_h, "phantom": dict(ph.truth),
             "pet": {"series_instance_uid": header.series_instance_uid, "spacing_mm": list(ph.spacing_mm),
                     "stored_per_activity": factor, "decay_factor": decay_factor, "decay_correction": correction,
                     "scanner_nuclide": nuclide_name, "frame_s": frame_s}}
    (out / "truth.json").write_text(json.dumps(truth, indent=2, default=str), encoding="utf-8")
    return truth

"""The liver phantom as a clinic would export it: PET, SPECT, CT, RTSTRUCT, SEG and a case file.

:func:`write_liver_case` writes, into one folder:

- ``PET/``: a Y-90 PET series in Bq/mL (one file per slice, int16 with a slope per slice), with
  the timing and radiopharmaceutical attributes a scanner writes, decay-corrected as asked;
- ``SPECT/spect.dcm``: a bremsstrahlung SPECT, one reconstructed NM multi-frame file, in counts;
- ``CT/``: a CT of the same patient (body, liver, tumours, lungs in HU);
- ``RTSTRUCT.dcm``: the VOIs contoured on the CT slices (liver, tumours, lung);
- ``SEG.dcm``: the same VOIs as a fractional DICOM SEG on the PET grid;
- ``case.toml``: what the headers lack (administered activity and time, lung shunt, VOI roles);
- ``truth.json``: the phantom's truth (activity at administration per VOI, LDM doses, models),
  the timing and every factor of the scanner models below.

All share one study and one frame of reference.

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

Nuclide data: :data:`voxeldose.nuclides.NUCLIDES`, the table calibration reads too (checked
against ICRP-107 in tests/test_nuclides.py).
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
from ..nuclides import NUCLIDES

__all__ = ["write_liver_case", "write_phantom", "pet_stored_per_activity"]



ADMINISTRATION = dt.datetime(2026, 1, 15, 10, 30, 0)


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
    write: Sequence[str] = ("PET", "SPECT", "CT", "RTSTRUCT", "SEG"),
    lung_interface: bool = False,
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
    write : sequence of str
        Which objects to write.
    lung_interface : bool
        The variant with the right lung resting on the liver (:func:`voxeldose.phantoms.liver`),
        its CT's lung at 0.28 g/cm3.

    Returns
    -------
    dict
        The truth record also written to ``truth.json``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(write) - {"PET", "SPECT", "CT", "RTSTRUCT", "SEG"}
    if unknown:
        raise InputError(f"unknown objects to write: {sorted(unknown)}")
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

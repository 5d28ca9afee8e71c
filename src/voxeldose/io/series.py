"""Write images as DICOM the way scanners export them (for phantoms, tests and round trips).

- :func:`write_pet_series`: a classic PET Image series, one file per slice, Bq/mL stored as
  int16 with a RescaleSlope per slice, timing and radiopharmaceutical attributes.
- :func:`write_nm_spect`: one reconstructed tomographic NM multi-frame file (SPECT) in counts,
  geometry in the Detector Information Sequence: a Y-90 bremsstrahlung SPECT, or a Tc-99m SPECT
  (the MAA scan of the planning) in its 140.5 keV photopeak window.
- :func:`write_ct_series`: a classic CT Image series in HU.

Every writer takes an :class:`~voxeldose.image.Image` that already holds the values the scanner
would store (the physics of what a scanner measures lives in :mod:`voxeldose.phantoms.export`),
and a :class:`SeriesHeader` with the identifiers and times. Optional compression uses pydicom's
encoders (RLE Lossless natively, JPEG-LS through pyjpegls, JPEG 2000 through
pylibjpeg-openjpeg) or deflate.

References
----------
DICOM PS3.3 (2024) A.21 PET Image IOD, A.5 NM Image IOD, A.3 CT Image IOD; C.8.9.1 PET Series
Module; C.8.4.10 NM Detector Module; C.8.4.9 NM Isotope Module (Energy Window Information,
Radiopharmaceutical Information).

Bushberg JT et al., The Essential Physics of Medical Imaging, 3rd ed., 2012, ch. 18: the
Tc-99m photopeak window, 20 % wide (+-10 %) around 140 keV.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..image import Image
from ..nuclides import NUCLIDES, SPECT_NUCLIDES
from ._dicom_common import ds_values, file_meta, new_uid, pixel_module

__all__ = [
    "NM_NUCLIDES",
    "SeriesHeader",
    "write_pet_series",
    "write_nm_spect",
    "write_ct_series",
]

PET_SOP = "1.2.840.10008.5.1.4.1.1.128"
NM_SOP = "1.2.840.10008.5.1.4.1.1.20"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"

#: Half-width of the photopeak window of a single-photon SPECT, relative to its centre (+-10 %: a
#: 20 % window, the usual setting for Tc-99m; Bushberg et al. 2012, ch. 18).
PHOTOPEAK_WINDOW_HALF_WIDTH = 0.10

#: The nuclides :func:`write_nm_spect` writes: Y-90 (bremsstrahlung) and the SPECT nuclides.
NM_NUCLIDES = ("Y-90", *SPECT_NUCLIDES)


#: Stated transfer syntaxes accepted by ``compression``.
COMPRESSIONS = ("none", "rle", "jpeg-ls", "jpeg2000", "deflate")


@dataclass(frozen=True)
class SeriesHeader:
    """Identifiers and times shared by the files of one series (and the series of one study).

    Times are naive, in the scanner's local clock, like DICOM's DA/TM.
    """

    patient_name: str = "Voxeldose^Phantom"
    patient_id: str = "VXD-PHANTOM-001"
    patient_birth_date: str = ""
    patient_sex: str = "O"
    study_instance_uid: str = field(default_factory=new_uid)
    study_datetime: dt.datetime = dt.datetime(2026, 1, 15, 9, 0, 0)
    study_id: str = "1"
    accession_number: str = ""
    frame_of_reference_uid: str = field(default_factory=new_uid)
    series_instance_uid: str = field(default_factory=new_uid)
    series_number: int = 1
    series_description: str = ""
    series_datetime: dt.datetime | None = None
    acquisition_datetime: dt.datetime | None = None
    manufacturer: str = "voxeldose"
    manufacturer_model: str = "synthetic phantom"


def _da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def _base_dataset(header: SeriesHeader, sop_class: str, modality: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.patient_birth_date
    ds.PatientSex = header.patient_sex
    ds.StudyInstanceUID = header.study_instance_uid
    ds.StudyDate = _da(header.study_datetime)
    ds.StudyTime = _tm(header.study_datetime)
    ds.ReferringPhysicianName = ""
    ds.StudyID = header.study_id
    ds.AccessionNumber = header.accession_number
    ds.Modality = modality
    ds.SeriesInstanceUID = header.series_instance_uid
    ds.SeriesNumber = header.series_number
    ds.SeriesDescription = header.series_description
    series_t = header.series_datetime or header.acquisition_datetime or header.study_datetime
    ds.SeriesDate = _da(series_t)
    ds.SeriesTime = _tm(series_t)
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = header.manufacturer
    ds.ManufacturerModelName = header.manufacturer_model
    ds.PatientPosition = "HFS"
    if header.acquisition_datetime is not None:
        ds.AcquisitionDate = _da(header.acquisition_datetime)
        ds.AcquisitionTime = _tm(header.acquisition_datetime)
    ds.ContentDate = ds.SeriesDate
    ds.ContentTime = ds.SeriesTime
    return ds



def _save(ds: Any, path: Path, compression: str) -> None:
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGLSLossless,
        RLELossless,
    )

    file_meta(ds)
    if compression == "none":
        pass
    elif compression == "rle":
        ds.compress(RLELossless)
    elif compression == "jpeg-ls":
        ds.compress(JPEGLSLossless)
    elif compression == "jpeg2000":
        ds.compress(JPEG2000Lossless)
    elif compression == "deflate":
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    else:
        raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    ds.save_as(path, enforce_file_format=True)


def _slice_geometry(image: Image) -> tuple[list[float], NDArray[np.float64], list[float]]:
    d = image.direction_matrix
    iop = ds_values(np.concatenate([d[:, 0], d[:, 1]]))
    sx, sy, _ = image.spacing_mm
    positions = image.index_to_world(np.array([[0, 0, k] for k in range(image.shape[0])], float))
    return iop, positions, ds_values([sy, sx])


def _file_names(n: int, names: str, seed: int) -> list[str]:
    if names == "ordered":
        return [f"IM{k + 1:05d}.dcm" for k in range(n)]
    if names == "shuffled":
        # as many exports do: names unrelated to slice order, no extension
        rng = random.Random(seed)
        labels = [f"{rng.getrandbits(48):012X}" for _ in range(n)]
        return labels
    raise InputError(f"names must be 'ordered' or 'shuffled', got {names!r}")


def _check_image(image: Image, what: str) -> None:
    if not np.isfinite(image.array).all():
        raise InputError(f"{what}: the image has non-finite values")


def write_pet_series(
    folder: str | Path,
    image: Image,
    header: SeriesHeader,
    *,
    radiopharmaceutical_start: dt.datetime | None,
    total_dose_bq: float | None,
    decay_correction: str = "START",
    decay_factor: float | None = None,
    frame_duration_s: float = 900.0,
    nuclide: str = "Y-90",
    half_life_s: float | None = None,
    positron_fraction: float | None = None,
    compression: str = "none",
    names: str = "shuffled",
    seed: int = 0,
) -> list[Path]:
    """Write ``image`` (values in Bq/mL, as the scanner reports them) as a classic PET series.

    Parameters
    ----------
    folder : path
        Created if needed; one file per slice.
    image : Image
        Stored activity concentrations (Bq/mL), [z, y, x], with the geometry to write.
    header : SeriesHeader
        Identifiers and times; ``header.acquisition_datetime`` is the acquisition start.
    radiopharmaceutical_start : datetime or None
        RadiopharmaceuticalStartDateTime (administration); None omits it.
    total_dose_bq : float or None
        RadionuclideTotalDose (Bq).
    decay_correction : {"START", "ADMIN", "NONE"}
        DecayCorrection (0054,1102).
    decay_factor : float, optional
        DecayFactor (0054,1321), the factor the scanner applied.
    frame_duration_s : float
        ActualFrameDuration.
    nuclide, half_life_s, positron_fraction
        The radionuclide the scanner was configured for (one of :data:`voxeldose.nuclides.NUCLIDES`), its
        RadionuclideHalfLife (s) and RadionuclidePositronFraction (None omits them).
    compression : {"none", "rle", "jpeg-ls", "jpeg2000", "deflate"}
    names : {"shuffled", "ordered"}
        File names unrelated to slice order (like many exports), or IM00001.dcm ...

    Returns
    -------
    list of Path, in slice order.
    """
    from pydicom.dataset import Dataset

    _check_image(image, "write_pet_series")
    if decay_correction not in ("START", "ADMIN", "NONE"):
        raise InputError(f"decay_correction must be START, ADMIN or NONE, got {decay_correction!r}")
    if nuclide not in NUCLIDES:
        raise InputError(f"nuclide must be one of {', '.join(NUCLIDES)}, got {nuclide!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    iop, positions, pixel_spacing = _slice_geometry(image)
    nz, ny, nx = image.shape
    paths = []
    for k, name in enumerate(_file_names(nz, names, seed)):
        ds = _base_dataset(header, PET_SOP, "PT")
        ds.SOPInstanceUID = new_uid()
        ds.InstanceNumber = k + 1
        ds.ImageIndex = k + 1
        ds.NumberOfSlices = nz
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.DecayCorrection = decay_correction
        ds.CorrectedImage = (["DECY"] if decay_correction != "NONE" else []) + ["ATTN", "SCAT", "DTIM", "RAN", "NORM"]
        ds.ReconstructionMethod = "OSEM"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "CT"
        ds.ActualFrameDuration = int(round(frame_duration_s * 1000))
        ds.FrameReferenceTime = 0.0
        if decay_factor is not None:
            ds.DecayFactor = f"{decay_factor:.10g}"
        ds.SliceSensitivityFactor = 1.0
        item = Dataset()
        item.Radiopharmaceutical = "Y-90 microspheres"
        if radiopharmaceutical_start is not None:
            item.RadiopharmaceuticalStartDateTime = radiopharmaceutical_start.strftime("%Y%m%d%H%M%S.%f")
            item.RadiopharmaceuticalStartTime = _tm(radiopharmaceutical_start)
        if total_dose_bq is not None:
            item.RadionuclideTotalDose = f"{total_dose_bq:.6g}"
        if half_life_s is not None:
            item.RadionuclideHalfLife = f"{half_life_s:.8g}"
        if positron_fraction is not None:
            item.RadionuclidePositronFraction = f"{positron_fraction:.6g}"
        code = Dataset()
        code.CodeValue, code.CodeMeaning = NUCLIDES[nuclide].code_value, NUCLIDES[nuclide].code_meaning
        code.CodingSchemeDesignator = "SRT"
        item.RadionuclideCodeSequence = [code]
        ds.RadiopharmaceuticalInformationSequence = [item]
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = ds_values(positions[k])
        ds.SliceLocation = ds_values(positions[k][2])
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = image.spacing_mm[2]
        pixel_module(ds, ny, nx, signed=True)
        plane = image.array[k].astype(np.float64)
        peak = float(np.abs(plane).max())
        slope = peak / 32000.0 if peak > 0 else 1.0
        stored = np.round(plane / slope).astype(np.int16)
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = 0
        ds.RescaleType = "BQML"
        ds.PixelData = stored.tobytes()
        path = folder / name
        _save(ds, path, compression)
        paths.append(path)
    return paths


def write_nm_spect(
    path: str | Path,
    image: Image,
    header: SeriesHeader,
    *,
    radiopharmaceutical_start: dt.datetime | None,
    total_dose_bq: float | None = None,
    frame_duration_s: float = 1800.0,
    spacing_between_slices_sign: int = 1,
    compression: str = "none",
    nuclide: str = "Y-90",
    radiopharmaceutical: str | None = None,
) -> Path:
    """Write ``image`` (counts, >= 0) as one reconstructed tomographic NM multi-frame file.

    Counts are stored as uint16 (values are rounded; more than 65535 in a voxel is an error).
    ``spacing_between_slices_sign = -1`` writes the step as a negative SpacingBetweenSlices with
    the frames running against the slice normal, as some systems do.

    ``nuclide`` says what was imaged (one of :data:`NM_NUCLIDES`). ``"Y-90"``: a bremsstrahlung
    SPECT, energy window 90-125 keV ("BREMS"), radiopharmaceutical "Y-90 microspheres", the Y-90
    code (CID 4020) and no RadionuclideHalfLife. A SPECT nuclide
    (:data:`~voxeldose.nuclides.SPECT_NUCLIDES`, ``"Tc-99m"``): its code (CID 18), its
    RadionuclideHalfLife (0018,1075) and a photopeak window of +-10 % around its photopeak
    rounded to 0.1 keV (Tc-99m: 126.45-154.55 keV, named "Tc-99m 140.5 keV").
    ``radiopharmaceutical``: Radiopharmaceutical (0018,0031), e.g. "Tc-99m MAA"; default
    "Y-90 microspheres" for Y-90, the nuclide's name otherwise.

    Raises
    ------
    InputError
        If the counts are outside 0..65535 or ``nuclide`` is not one of :data:`NM_NUCLIDES`.
    """
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    _check_image(image, "write_nm_spect")
    if nuclide not in NM_NUCLIDES:
        raise InputError(f"write_nm_spect: nuclide {nuclide!r} is not one it writes; choose one of "
                         f"{', '.join(NM_NUCLIDES)}")
    counts = np.round(image.array.astype(np.float64))
    if counts.min() < 0 or counts.max() > 65535:
        raise InputError(f"NM counts must lie in 0..65535, got {counts.min()}..{counts.max()}; rescale the image")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = image.shape
    ds = _base_dataset(header, NM_SOP, "NM")
    ds.SOPInstanceUID = new_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = Tag(0x0054, 0x0080)  # SliceVector
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.PixelSpacing = [image.spacing_mm[1], image.spacing_mm[0]]
    ds.SliceThickness = image.spacing_mm[2]
    ds.ActualFrameDuration = int(round(frame_duration_s * 1000))
    d = image.direction_matrix
    first = image.index_to_world([0, 0, 0])
    stack = counts
    if spacing_between_slices_sign < 0:
        # frames run from the last slice to the first: position of the first frame is the last slice
        first = image.index_to_world([0, 0, nz - 1])
        stack = counts[::-1]
        ds.SpacingBetweenSlices = -image.spacing_mm[2]
    else:
        ds.SpacingBetweenSlices = image.spacing_mm[2]
    det = Dataset()
    det.ImagePositionPatient = ds_values(first)
    det.ImageOrientationPatient = ds_values(np.concatenate([d[:, 0], d[:, 1]]))
    ds.DetectorInformationSequence = [det]
    ds.NumberOfDetectors = 1
    window = Dataset()
    rng = Dataset()
    if nuclide == "Y-90":
        rng.EnergyWindowLowerLimit = 90
        rng.EnergyWindowUpperLimit = 125
        window.EnergyWindowRangeSequence = [rng]
        window.EnergyWindowName = "BREMS"
        code_value, code_meaning = NUCLIDES["Y-90"].code_value, NUCLIDES["Y-90"].code_meaning
        half_life_s = None
        agent = radiopharmaceutical or "Y-90 microspheres"
    else:
        single = SPECT_NUCLIDES[nuclide]
        centre_kev = round(single.photopeak_kev, 1)
        rng.EnergyWindowLowerLimit = ds_values(round(centre_kev * (1.0 - PHOTOPEAK_WINDOW_HALF_WIDTH), 6))
        rng.EnergyWindowUpperLimit = ds_values(round(centre_kev * (1.0 + PHOTOPEAK_WINDOW_HALF_WIDTH), 6))
        window.EnergyWindowRangeSequence = [rng]
        window.EnergyWindowName = f"{nuclide} {centre_kev:g} keV"  # SH: 16 characters at most
        code_value, code_meaning = single.code_value, single.code_meaning
        half_life_s = single.half_life_s
        agent = radiopharmaceutical or nuclide
    ds.EnergyWindowInformationSequence = [window]
    ds.NumberOfEnergyWindows = 1
    item = Dataset()
    item.Radiopharmaceutical = agent
    if radiopharmaceutical_start is not None:
        item.RadiopharmaceuticalStartDateTime = radiopharmaceutical_start.strftime("%Y%m%d%H%M%S.%f")
    if total_dose_bq is not None:
        item.RadionuclideTotalDose = f"{total_dose_bq:.6g}"
    if half_life_s is not None:
        item.RadionuclideHalfLife = f"{half_life_s:.10g}"
    code = Dataset()
    code.CodeValue, code.CodeMeaning = code_value, code_meaning
    code.CodingSchemeDesignator = "SRT"
    item.RadionuclideCodeSequence = [code]
    ds.RadiopharmaceuticalInformationSequence = [item]
    pixel_module(ds, ny, nx, signed=False)
    ds.PixelData = stack.astype(np.uint16).tobytes()
    _save(ds, path, compression)
    return path


def write_ct_series(
    folder: str | Path,
    image: Image,
    header: SeriesHeader,
    *,
    compression: str = "none",
    names: str = "ordered",
    seed: int = 0,
) -> list[Path]:
    """Write ``image`` (HU) as a classic CT series (int16 with RescaleIntercept -1024)."""
    _check_image(image, "write_ct_series")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    iop, positions, pixel_spacing = _slice_geometry(image)
    nz, ny, nx = image.shape
    paths = []
    for k, name in enumerate(_file_names(nz, names, seed)):
        ds = _base_dataset(header, CT_SOP, "CT")
        ds.SOPInstanceUID = new_uid()
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = ds_values(positions[k])
        ds.SliceLocation = ds_values(positions[k][2])
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = image.spacing_mm[2]
        pixel_module(ds, ny, nx, signed=True)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        stored = np.clip(np.round(image.array[k].astype(np.float64) + 1024), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        path = folder / name
        _save(ds, path, compression)
        paths.append(path)
    return paths


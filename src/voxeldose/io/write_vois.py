"""Write VOIs as DICOM: RT Structure Sets from planar polygons, Segmentations from masks.

- :func:`write_rtstruct`: an RT Structure Set (closed planar contours in patient mm) that refers
  to an image series, with ROI colours and RT ROI Observations.
- :func:`write_seg`: a DICOM Segmentation (binary or fractional) of masks on the grid of a
  classic one-file-per-slice series, through highdicom.
- :func:`ellipsoid_polygons`: the axial cross-sections of an axis-aligned ellipsoid as polygons,
  to contour analytic phantoms.

The writers serve the phantoms and the tests; :mod:`voxeldose.io.vois` reads what they write.

References
----------
DICOM PS3.3 (2024) A.19 RT Structure Set IOD; C.8.8.5 Structure Set Module; C.8.8.6 ROI Contour
Module; C.8.8.8 RT ROI Observations Module; A.51 Segmentation IOD; C.8.20 Segmentation modules.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._version import __version__
from ..errors import InputError
from ._dicom_common import file_meta, new_uid

__all__ = [
    "RTSTRUCT_SOP",
    "ellipsoid_polygons",
    "interpreted_type",
    "write_rtstruct",
    "write_seg",
]

RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
#: Conventional ReferencedSOPClassUID of the study in RTReferencedStudySequence (retired Detached
#: Study Management SOP Class, still what treatment planning systems write and expect).
_STUDY_SOP = "1.2.840.10008.3.1.2.3.1"

#: A contour lies on a slice of the reference series when all its points are this close (mm)
#: to the slice plane.
ON_SLICE_TOLERANCE_MM = 0.05

#: Names that make an ROI a tumour (RTROIInterpretedType GTV, SEG type Neoplasm); others are ORGAN.
TUMOUR_NAME_PATTERN = re.compile(r"tumou?r|lesion|gtv|neoplasm|metasta|^t[ _-]?\d", re.IGNORECASE)

#: ROIDisplayColor cycle (RGB 0-255).
_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 120, 40), (230, 30, 30), (40, 160, 60), (40, 100, 230), (200, 40, 200),
    (230, 200, 40), (40, 200, 200), (150, 90, 40), (120, 120, 240), (240, 120, 160),
)

# Patient, General Study (and Patient Study) attributes copied from the referenced series; the
# Type 2 ones are written empty when the series lacks them.
_COPIED = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
           "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime",
           "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def interpreted_type(name: str) -> str:
    """RTROIInterpretedType by name: "GTV" for tumour-like names (:data:`TUMOUR_NAME_PATTERN`),
    else "ORGAN".

    Example
    -------
    >>> interpreted_type("tumour_2"), interpreted_type("liver")
    ('GTV', 'ORGAN')
    """
    return "GTV" if TUMOUR_NAME_PATTERN.search(name) else "ORGAN"


# --------------------------------------------------------------------------- polygons


def ellipsoid_polygons(
    centre_mm: Sequence[float],
    semi_axes_mm: Sequence[float],
    plane_z_mm: ArrayLike,
    *,
    n_points: int = 128,
    area_preserving: bool = True,
) -> list[NDArray[np.float64]]:
    """Cross-sections of an axis-aligned ellipsoid with axial planes, as closed polygons.

    Parameters
    ----------
    centre_mm : (x, y, z)
        Centre of the ellipsoid in patient coordinates (mm).
    semi_axes_mm : (a, b, c)
        Semi-axes along x, y and z (mm).
    plane_z_mm : float or array of float
        Patient z (mm) of the axial planes.
    n_points : int
        Vertices per polygon (at least 8).
    area_preserving : bool
        Scale the vertices (by ``sqrt(2 pi / (n sin(2 pi / n)))``, +0.04 % at 128 points) so
        that each polygon's area equals that of the ellipse it stands for; otherwise the
        vertices lie on the ellipse and the polygon is slightly smaller.

    Returns
    -------
    list of ndarray, float64, shape (n_points, 3)
        One counter-clockwise polygon (in x, y) per plane that cuts the ellipsoid, in the order
        of ``plane_z_mm``; planes that miss it, or touch it at a pole, give none.

    Example
    -------
    >>> polys = ellipsoid_polygons((0, 0, 0), (10, 10, 10), [-12, 0, 5], n_points=64)
    >>> len(polys), polys[0].shape, float(polys[0][0, 2])
    (2, (64, 3), 0.0)
    """
    centre = np.asarray(centre_mm, float).reshape(-1)
    axes = np.asarray(semi_axes_mm, float).reshape(-1)
    if centre.size != 3 or not np.isfinite(centre).all():
        raise InputError(f"centre_mm must be three finite coordinates (x, y, z) in mm, got {centre_mm!r}")
    if axes.size != 3 or not np.isfinite(axes).all() or axes.min() <= 0:
        raise InputError(f"semi_axes_mm must be three positive lengths (mm), got {semi_axes_mm!r}")
    if not isinstance(n_points, (int, np.integer)) or n_points < 8:
        raise InputError(f"n_points must be an integer >= 8, got {n_points!r}")
    planes = np.atleast_1d(np.asarray(plane_z_mm, float))
    if not np.isfinite(planes).all():
        raise InputError("plane_z_mm must be finite (mm)")
    t = 2.0 * math.pi * np.arange(n_points) / n_points
    scale = math.sqrt(2.0 * math.pi / (n_points * math.sin(2.0 * math.pi / n_points))) if area_preserving else 1.0
    out = []
    for z in planes:
        s = 1.0 - ((z - centre[2]) / axes[2]) ** 2
        if s <= 0.0:
            continue
        r = math.sqrt(s) * scale
        poly = np.empty((n_points, 3))
        poly[:, 0] = centre[0] + axes[0] * r * np.cos(t)
        poly[:, 1] = centre[1] + axes[1] * r * np.sin(t)
        poly[:, 2] = z
        out.append(poly)
    return out


# --------------------------------------------------------------------------- shared


def _slice_geometry(datasets: Sequence[Any]) -> tuple[list[Any], NDArray[np.float64], NDArray[np.float64]]:
    """The datasets sorted along their slice normal, that normal and their positions on it (mm)."""
    if not datasets:
        raise InputError("reference_datasets is empty: pass the pydicom datasets of the image series")
    first = datasets[0]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID", "SOPClassUID"):
        if key not in first:
            raise InputError(f"reference_datasets[0] has no {key}: pass the datasets of an image series")
    uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(uids) != 1:
        raise InputError(f"reference_datasets hold {len(uids)} series; pass the slices of one series")
    try:
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
        positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    except (AttributeError, TypeError, ValueError):
        raise InputError(
            "reference_datasets need ImageOrientationPatient and ImagePositionPatient on every "
            "slice (a classic one-file-per-slice series)"
        ) from None
    normal = np.cross(iop[:3], iop[3:])
    w = positions @ normal
    order = np.argsort(w, kind="stable")
    return [datasets[i] for i in order], normal, w[order]


def _check_frame_of_reference(datasets: Sequence[Any]) -> str:
    uids = {str(getattr(ds, "FrameOfReferenceUID", "")) for ds in datasets}
    if len(uids) != 1 or "" in uids:
        raise InputError(f"reference_datasets must share one FrameOfReferenceUID, found {sorted(uids)}")
    return uids.pop()


def _ds_string(value: float) -> str:
    """A DS value (at most 16 characters): 0.1 um resolution for coordinates up to +-1e10 mm."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _source_images(datasets: Sequence[Any], slice_w: NDArray[np.float64]) -> list[Any]:
    """Header copies (no pixel data) with the attributes highdicom copies filled where missing:
    Type 2 patient and study attributes empty, SliceThickness the slice step."""
    from pydicom.dataset import Dataset

    step = float(np.median(np.diff(slice_w))) if len(slice_w) > 1 else 1.0
    out = []
    for ds in datasets:
        copy = Dataset()
        for elem in ds:
            if elem.tag != 0x7FE00010:
                copy.add(elem)
        for key in _TYPE2:
            if key not in copy:
                setattr(copy, key, "")
        if "SliceThickness" not in copy:
            copy.SliceThickness = _ds_string(step)
        out.append(copy)
    return out


def _example_series() -> list[Any]:
    """Headers of a 2-slice, 4 x 4 axial CT series (for the examples)."""
    from pydicom.dataset import Dataset

    study, series, frame = new_uid(), new_uid(), new_uid()
    out = []
    for z in (0.0, 2.0):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.2", new_uid(), "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, z]
        ds.Rows, ds.Columns, ds.PixelSpacing = 4, 4, [1.0, 1.0]
        out.append(ds)
    return out



# --------------------------------------------------------------------------- RTSTRUCT


def write_rtstruct(
    path: str | Path,
    rois: Mapping[str, Sequence[ArrayLike]],
    reference_datasets: Sequence[Any],
    *,
    label: str = "voxeldose",
    interpreted_types: Mapping[str, str] | None = None,
    colours: Mapping[str, Sequence[int]] | None = None,
    series_number: int = 901,
) -> Path:
    """Write an RT Structure Set of closed planar contours that refers to an image series.

    Parameters
    ----------
    path : str or Path
        Output file.
    rois : mapping ROI name -> list of polygons
        Each polygon an (N, 3) array (N >= 3) of patient coordinates (x, y, z) in mm, closed
        implicitly (last point joins the first), lying in one plane. Several polygons on one
        plane are read with the even-odd rule (a polygon inside another is a hole). An ROI with
        no polygons is written without contours.
    reference_datasets : list of pydicom.Dataset
        The image series the contours were drawn on (headers suffice), in any order. Patient and
        study attributes and the FrameOfReferenceUID are copied from it; every contour that lies
        on a slice (within :data:`ON_SLICE_TOLERANCE_MM`) references that slice's SOP instance.
    label : str
        StructureSetLabel (first 16 characters) and SeriesDescription.
    interpreted_types : mapping name -> str, optional
        RTROIInterpretedType per ROI ("ORGAN", "GTV", "PTV", "AVOIDANCE", ...); ROIs not listed
        get :func:`interpreted_type` of their name.
    colours : mapping name -> (r, g, b), optional
        ROIDisplayColor (0-255) per ROI; others cycle through a fixed palette.
    series_number : int
        SeriesNumber of the new RTSTRUCT series.

    Returns
    -------
    Path
        The file written (Explicit VR Little Endian, with file meta information).

    Raises
    ------
    InputError
        An empty ``rois``, a polygon that is not (N >= 3, 3) finite coordinates or not planar,
        reference datasets of several series or without geometry.

    Example
    -------
    >>> import pathlib, tempfile
    >>> ct = _example_series()  # two 4 x 4 CT slices at z = 0 and 2 mm (headers)
    >>> balls = {"ball": ellipsoid_polygons((1.5, 1.5, 1.0), (2.0, 2.0, 2.0), [0.0, 2.0])}
    >>> write_rtstruct(pathlib.Path(tempfile.mkdtemp()) / "rs.dcm", balls, ct).name
    'rs.dcm'
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    if not rois:
        raise InputError("rois is empty: pass at least one ROI name -> list of polygons")
    sorted_ds, normal, slice_w = _slice_geometry(reference_datasets)
    for_uid = _check_frame_of_reference(reference_datasets)
    first = sorted_ds[0]
    types = dict(interpreted_types or {})
    unknown = sorted(set(types) - set(rois))
    if unknown:
        raise InputError(f"interpreted_types names ROI(s) {unknown} that are not in rois")

    now = dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = str(getattr(first, "SpecificCharacterSet", "ISO_IR 100") or "ISO_IR 100")
    ds.SOPClassUID = RTSTRUCT_SOP
    ds.SOPInstanceUID = new_uid()
    for key in _COPIED:
        if key in first:
            setattr(ds, key, first[key].value)
        elif key in _TYPE2:
            setattr(ds, key, "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = label[:64]
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.OperatorsName = ""
    ds.Manufacturer = "voxeldose"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    def image_ref(item: Any) -> Any:
        ref = Dataset()
        ref.ReferencedSOPClassUID = item.SOPClassUID
        ref.ReferencedSOPInstanceUID = item.SOPInstanceUID
        return ref

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([image_ref(item) for item in sorted_ds])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = _STUDY_SOP
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = for_uid
    for_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_ref])

    roi_items, contour_items, observation_items = [], [], []
    for number, (name, polygons) in enumerate(rois.items(), start=1):
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"ROI names must be non-empty strings, got {name!r}")
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi_items.append(roi)

        roi_contour = Dataset()
        colour = (colours or {}).get(name, _COLOURS[(number - 1) % len(_COLOURS)])
        roi_contour.ROIDisplayColor = [int(c) for c in colour]
        roi_contour.ReferencedROINumber = number
        contours = []
        for c, polygon in enumerate(polygons, start=1):
            pts = np.asarray(polygon, float)
            if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 3 or not np.isfinite(pts).all():
                raise InputError(
                    f"ROI {name!r}, polygon {c}: expected an (N >= 3, 3) array of finite patient "
                    f"coordinates (mm), got shape {pts.shape}"
                )
            item = Dataset()
            w = pts @ normal
            on = np.nonzero(np.all(np.abs(w[None, :] - slice_w[:, None]) <= ON_SLICE_TOLERANCE_MM, axis=1))[0]
            if on.size:
                item.ContourImageSequence = DicomSequence([image_ref(sorted_ds[int(on[0])])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = pts.shape[0]
            item.ContourNumber = c
            item.ContourData = [_ds_string(v) for v in pts.reshape(-1)]
            contours.append(item)
        if contours:
            roi_contour.ContourSequence = DicomSequence(contours)
        contour_items.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = types.get(name, interpreted_type(name))
        obs.ROIInterpreter = ""
        observation_items.append(obs)

    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)
    file_meta(ds)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


# --------------------------------------------------------------------------- SEG


def write_seg(
    path: str | Path,
    masks: Mapping[str, ArrayLike],
    reference_datasets: Sequence[Any],
    *,
    fractional: bool = False,
    label: str = "voxeldose",
    series_number: int = 902,
) -> Path:
    """Write masks on the grid of a classic image series as a DICOM Segmentation (highdicom).

    Parameters
    ----------
    path : str or Path
        Output file.
    masks : mapping segment label -> ndarray [z, y, x]
        One mask per segment on the series' grid: ``z`` runs along the slice normal
        (ImageOrientationPatient row x column) from the lowest slice position up, as
        :func:`voxeldose.io.dicom.load_image` orders slices; ``y`` is the row, ``x`` the column.
        Binary: boolean or 0/1 values. Fractional: values in [0, 1].
    reference_datasets : list of pydicom.Dataset
        The slices of one classic series (headers suffice), in any order. They are not modified;
        the copies given to highdicom get empty Type 2 patient and study attributes, and a
        SliceThickness of the slice step, where the series lacks them.
    fractional : bool
        Write a FRACTIONAL (PROBABILITY) segmentation with 8-bit values (MaximumFractionalValue
        255: fractions are stored to within 1/510); otherwise BINARY.
    label : str
        SeriesDescription and ContentLabel (uppercased as the Code String requires).
    series_number : int
        SeriesNumber of the new SEG series.

    Returns
    -------
    Path
        The file written. Empty frames are omitted (highdicom's default).

    Raises
    ------
    InputError
        No masks, a mask of the wrong shape or with values outside what ``fractional`` allows,
        an all-zero mask, or datasets highdicom cannot use as source images.

    Example
    -------
    >>> import pathlib, tempfile
    >>> ct = _example_series()  # two 4 x 4 CT slices at z = 0 and 2 mm (headers)
    >>> mask = np.zeros((2, 4, 4), bool); mask[:, 1:3, 1:3] = True
    >>> write_seg(pathlib.Path(tempfile.mkdtemp()) / "seg.dcm", {"ball": mask}, ct).name
    'seg.dcm'
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not masks:
        raise InputError("masks is empty: pass at least one segment label -> mask")
    sorted_ds, _, slice_w = _slice_geometry(reference_datasets)
    _check_frame_of_reference(reference_datasets)
    sorted_ds = _source_images(sorted_ds, slice_w)
    rows, cols = int(sorted_ds[0].Rows), int(sorted_ds[0].Columns)
    shape = (len(sorted_ds), rows, cols)
    stack = np.zeros(shape + (len(masks),), np.float32 if fractional else np.uint8)
    descriptions = []
    for n, (name, mask) in enumerate(masks.items()):
        m = np.asarray(mask)
        if m.shape != shape:
            raise InputError(
                f"mask {name!r}: shape {m.shape} differs from the series grid {shape} [z, y, x] "
                "(slices along the normal, rows, columns)"
            )
        if not (m.dtype == bool or np.issubdtype(m.dtype, np.number)) or not np.isfinite(m).all():
            raise InputError(f"mask {name!r}: must be boolean or finite numbers, got dtype {m.dtype}")
        if fractional:
            if m.min() < 0 or m.max() > 1:
                raise InputError(f"mask {name!r}: fractions must lie in [0, 1], found {m.min():g} to {m.max():g}")
        elif not np.isin(m, (0, 1)).all():
            raise InputError(
                f"mask {name!r}: a binary segmentation needs 0/1 values; pass fractional=True to "
                "store fractions, or threshold the mask"
            )
        if not m.any():
            raise InputError(f"mask {name!r} is empty (all zero): a segment needs at least one voxel")
        stack[..., n] = m
        tumour = interpreted_type(name) == "GTV"
        category = codes.SCT.MorphologicallyAbnormalStructure if tumour else codes.SCT.AnatomicalStructure
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=codes.SCT.Neoplasm if tumour else codes.SCT.Organ,
            algorithm_type="MANUAL",
        ))
    try:
        seg = hd.seg.Segmentation(
            source_images=sorted_ds,
            pixel_array=stack,
            segmentation_type="FRACTIONAL" if fractional else "BINARY",
            segment_descriptions=descriptions,
            series_instance_uid=new_uid(),
            series_number=int(series_number),
            sop_instance_uid=new_uid(),
            instance_number=1,
            manufacturer="voxeldose",
            manufacturer_model_name="voxeldose",
            software_versions=__version__,
            device_serial_number="0",
            max_fractional_value=255,
            content_label=re.sub(r"[^A-Z0-9_ ]", "_", label.upper())[:16] or "VOXELDOSE",
            series_description=label[:64],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(f"highdicom could not build the segmentation: {exc}") from exc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out

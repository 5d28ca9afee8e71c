"""Property-based fuzzing of every reader (issue 14): DICOM image headers, RTSTRUCT, SEG, label
maps and case files.

Hypothesis generates mutations of small valid inputs (seeded: ``derandomize=True``, no example
database, so every run tries the same inputs). For each generated input the reader must end in
one of these outcomes:

- ``error``: a :class:`voxeldose.VoxelDoseError` whose message names the file (or its folder) and,
  for an image header, a DICOM attribute (keyword or tag);
- ``equal``: a result equal to the unmutated one;
- ``warned``: a changed result explained by a :class:`voxeldose.VoxelDoseWarning` raised by the
  same call (a skipped contour, an unnamed label);
- ``valid``: a changed result from a mutation to another *valid* value of the field (a positive
  RescaleSlope for one slice, another well-formed administration time, a renamed ROI): a header
  that says something else, which no reader can tell from the scanner's own. Each field's valid
  domain is stated in :data:`VALID` and friends; a mutation outside it must not change a number.

Never another exception, a hang (:data:`EXAMPLE_TIMEOUT_S`), or an allocation beyond the limit:
the fuzz runs with ``VOXELDOSE_MAX_VOXELS`` = :data:`FUZZ_MAX_VOXELS` and checks the Python
heap's peak (tracemalloc, which numpy reports to) against :data:`FUZZ_MAX_BYTES`.

The default run tries :data:`DEFAULT_EXAMPLES` inputs per reader (about 20 s in all); ``-m slow``
tries :data:`SLOW_EXAMPLES`. ``python -m tests.test_fuzz [N]`` prints the outcome counts that the
README's reliability section states.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import json
import math
import os
import re
import signal
import struct
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxeldose

#: Inputs per reader in the default run and under ``-m slow`` (a PET series takes 0.1 s to
#: read, a valid SEG 0.4 s, most mutated inputs a few ms).
DEFAULT_EXAMPLES = {"dicom": 60, "rtstruct": 120, "seg": 120, "label map": 200, "case file": 200}
SLOW_EXAMPLES = 1500

#: A generated input that takes longer than this is a hang (the slowest valid one takes < 1 s).
EXAMPLE_TIMEOUT_S = 30

#: The allocation limit during the fuzz (voxels; the inputs hold a few thousand) and the largest
#: Python-heap peak an input may cause: a reader that allocates beyond the limit fails the test.
FUZZ_MAX_VOXELS = 2**20
FUZZ_MAX_BYTES = 48 * 2**20

OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()


class Hang(Exception):
    pass


@contextlib.contextmanager
def _bounded(reader: str):
    """Time limit (SIGALRM) and heap limit (tracemalloc) around one generated input."""
    def alarm(signum, frame):
        raise Hang(f"{reader}: a generated input took more than {EXAMPLE_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    # and again every second after: an exception raised inside a gc callback is ignored
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_TIMEOUT_S, 1.0)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak <= FUZZ_MAX_BYTES, f"{reader}: a generated input allocated {peak / 2**20:.0f} MiB"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, old)


def _outcome(reader: str, call: Callable[[], Any], same: Callable[[Any], bool], valid: bool, names: tuple[str, ...],
             tag: re.Pattern[str] | None = None) -> str:
    """Run ``call`` and classify what it did (see the module docstring); fail on anything else.
    An error must name one of ``names`` (the file or its folder) and match ``tag`` if given."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with _bounded(reader):
                result = call()
        except voxeldose.VoxelDoseError as exc:
            text = str(exc)
            assert text, f"{reader}: an error without a message"
            assert any(n in text for n in names), f"{reader}: the message does not name the file: {text}"
            assert tag is None or tag.search(text), f"{reader}: the message names no DICOM attribute: {text}"
            outcome = "error"
        else:
            if same(result):
                outcome = "equal"
            elif any(issubclass(w.category, voxeldose.VoxelDoseWarning) for w in caught):
                outcome = "warned"
            else:
                assert valid, f"{reader}: a mutation outside the valid domain changed the result silently"
                outcome = "valid"
    OUTCOMES[(reader, outcome)] += 1
    return outcome


def _run(strategy, check, n: int) -> None:
    @settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(mutation):
        check(mutation)

    fuzz()


def budgets(reader: str) -> list[Any]:
    return [pytest.param(DEFAULT_EXAMPLES[reader], id="default"),
            pytest.param(SLOW_EXAMPLES, id="slow", marks=pytest.mark.slow)]


@pytest.fixture(autouse=True)
def _limit(monkeypatch):
    monkeypatch.setenv("VOXELDOSE_MAX_VOXELS", str(FUZZ_MAX_VOXELS))


# =========================================================================== values

_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1e-30, 1e30, 1e308, -1e6, 3.0, 4.0, 4.0001]),
)
_INTS = st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, -1, 7, 8, 12, 15, 16, 17, 32, 65535, 2**31]))
_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=16)
_SPECIAL = st.sampled_from(["", "abc", "CT", "PT", "NM", "BQML", "CNTS", "MBQ", "GML", "START", "ADMIN", "NONE", "DECY",
                            "ATTN\\DECY", "1\\2", "1\\2\\3", "20261340", "20260115", "-10000", "103000", "253000",
                            "20260115103000", "20260116063000+0100", "+0100", "-1300", "1.2.3", "99999999999999999999"])


def _ds_text(x: float) -> str:
    """A number as the text a DS field holds (at most 16 characters), as a writer may put it."""
    text = repr(float(x)) if math.isfinite(x) else {True: "inf", False: "-inf"}.get(x > 0, "nan") if x == x else "nan"
    return text[:16]


#: A value for a text or decimal field: None deletes the field.
TEXT_VALUES = st.one_of(st.none(), _SPECIAL, _TEXT, _NUMBERS.map(_ds_text), _INTS.map(str),
                        st.lists(_NUMBERS.map(_ds_text), min_size=2, max_size=7).map("\\".join))

#: A value for an integer (US) field.
INT_VALUES = st.one_of(st.none(), st.integers(0, 65535), st.sampled_from([0, 1, 2, 7, 8, 11, 12, 15, 16, 17, 31, 32]))


def _number(text: Any) -> float | None:
    try:
        if isinstance(text, str) and "\\" in text:
            return None
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _numbers(text: Any, n: int) -> list[float] | None:
    if not isinstance(text, str):
        return None
    parts = text.split("\\")
    values = [_number(p) for p in parts]
    return values if len(values) == n and all(v is not None for v in values) else None  # type: ignore[return-value]


_TM = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?$")


def _is_date(text: Any) -> bool:
    try:
        return isinstance(text, str) and len(text) == 8 and dt.datetime.strptime(text, "%Y%m%d") is not None
    except ValueError:
        return False


def _is_time(text: Any) -> bool:
    return isinstance(text, str) and bool(_TM.match(text))


def _is_datetime(text: Any) -> bool:
    if not isinstance(text, str) or len(text) < 8 or not _is_date(text[:8]):
        return False
    rest = re.sub(r"[+-]\d{4}$", "", text[8:])
    return rest == "" or _is_time(rest)


# =========================================================================== DICOM image headers

import tests.io.test_header_mutations as _pet  # noqa: E402


@pytest.fixture(scope="module")
def pet_series(tmp_path_factory):
    """The header-mutation campaign's PET series (16 slices as a scanner writes them), its case
    and the unmutated activity."""
    return _pet.series.__wrapped__(tmp_path_factory)


TEXT_TAGS = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope",
             "RescaleIntercept", "SeriesInstanceUID", "Modality", "SOPClassUID", "Units", "DecayCorrection", "DecayFactor",
             "ActualFrameDuration", "AcquisitionDate", "AcquisitionTime", "SeriesDate", "SeriesTime",
             "FrameOfReferenceUID", "NumberOfFrames", "TimezoneOffsetFromUTC", "CorrectedImage", "Manufacturer",
             "PhotometricInterpretation", "SpacingBetweenSlices", "item:RadiopharmaceuticalStartDateTime",
             "item:RadiopharmaceuticalStartTime", "item:RadionuclideTotalDose", "item:RadionuclideHalfLife",
             "item:RadionuclidePositronFraction"]
INT_TAGS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel"]


def _positive(v: Any) -> bool:
    x = _number(v)
    return x is not None and x > 0


def _valid_header(tag: str, value: Any, files: str) -> bool:
    """Whether ``value`` is another valid value of ``tag`` in ``files`` ("one" or "all"), whose
    effect on the activity no reader can tell from the scanner's (see the module docstring)."""
    if tag == "RescaleSlope":
        return _positive(value)
    if tag in ("ActualFrameDuration", "item:RadionuclidePositronFraction"):
        return _positive(value)
    if tag == "PixelSpacing":
        v = _numbers(value, 2)
        return files == "all" and v is not None and all(x > 0 for x in v)
    if tag == "ImageOrientationPatient":
        v = _numbers(value, 6)
        return files == "all" and v is not None
    if tag == "ImagePositionPatient":
        return _numbers(value, 3) is not None
    if tag in ("AcquisitionDate", "SeriesDate"):
        return _is_date(value)
    if tag in ("AcquisitionTime", "SeriesTime", "item:RadiopharmaceuticalStartTime"):
        return _is_time(value)
    if tag == "item:RadiopharmaceuticalStartDateTime":
        return _is_datetime(value)
    if tag == "TimezoneOffsetFromUTC":
        return isinstance(value, str) and bool(re.fullmatch(r"[+-](0\d|1[0-4])[0-5]\d", value))
    if tag == "DecayCorrection":
        return files == "all" and value in ("ADMIN", "NONE", "START")
    if tag == "PixelRepresentation":
        return value in (0, 1)
    if tag == "PixelData":  # one byte less is padded back to an even length by pydicom: another last pixel
        return value == -1
    return False


def _mutate_header(ds, tag: str, value: Any) -> None:
    if tag == "PixelData":  # cut by -value bytes, or extended by value
        ds.PixelData = ds.PixelData[: max(0, len(ds.PixelData) + value)] if value < 0 else ds.PixelData + bytes(value)
    else:
        _pet._mutate(ds, tag, value)  # the campaign's: delete on None, "item:" for the radiopharmaceutical item


HEADER_MUTATIONS = st.one_of(
    st.tuples(st.sampled_from(TEXT_TAGS), TEXT_VALUES, st.sampled_from(["one", "all"])),
    st.tuples(st.sampled_from(INT_TAGS), INT_VALUES, st.sampled_from(["one", "all"])),
    st.tuples(st.just("PixelData"), st.integers(-2000, 64).filter(bool), st.sampled_from(["one", "all"])),
)


@functools.lru_cache(maxsize=1)
def _attribute() -> re.Pattern[str]:
    """A DICOM keyword (pydicom's dictionary) or a tag as (gggg,eeee): what a header error names."""
    from pydicom.datadict import keyword_dict

    keywords = sorted((k for k in keyword_dict if len(k) > 3), key=len, reverse=True)
    return re.compile(r"(\b(?:" + "|".join(keywords) + r")\b|\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\))")


def check_header(pet, root: Path, mutation) -> None:
    tag, value, files = mutation
    folder, case, baseline = pet
    mutated = root / "pet"
    if not _pet.mutated_series(folder, mutated, files, lambda ds: _mutate_header(ds, tag, value)):
        OUTCOMES[("dicom", "unwritable")] += 1
        return
    _outcome("dicom", lambda: voxeldose.calibrate(voxeldose.load_image(mutated), case).image,
             lambda result: _pet.same_activity(result, baseline),
             _valid_header(tag, value, files), (str(mutated),), _attribute())


@pytest.mark.parametrize("n", budgets("dicom"))
def test_fuzz_dicom_image_headers(pet_series, tmp_path, n):
    _run(HEADER_MUTATIONS, lambda m: check_header(pet_series, tmp_path, m), n)


# =========================================================================== RTSTRUCT

@pytest.fixture(scope="module")
def rtstruct(tmp_path_factory):
    """An RTSTRUCT of two ROIs (a box of three planes, a smaller one) on a CT, the reference
    grid, and the masks it loads to."""
    from tests.io.test_vois import ct_series, square
    from voxeldose.io.write_vois import write_rtstruct

    folder = tmp_path_factory.mktemp("rtstruct")
    ct = ct_series((6, 20, 20), (1.0, 1.0, 2.0), (-9.5, -9.5, -5.0))
    polys = {"liver": [square(-6, 6, -5, 5, z) for z in (-3.0, -1.0, 1.0, 3.0)],
             "tumour_1": [square(1, 4, 1, 4, z) for z in (-1.0, 1.0)]}
    path = write_rtstruct(folder / "rs.dcm", polys, ct)
    ref = voxeldose.Image(np.zeros((6, 10, 10), np.float32), (2.0, 2.0, 2.0), (-9.0, -9.0, -5.0),
                          meta=voxeldose.ImageMeta(frame_of_reference_uid=str(ct[0].FrameOfReferenceUID)))
    return path, ref, {k: v.array for k, v in voxeldose.load_vois(path, ref).items()}


RT_FIELDS = ["ROINumber", "ROIName", "ReferencedROINumber", "ContourGeometricType", "ContourData",
             "NumberOfContourPoints", "ReferencedFrameOfReferenceUID", "FrameOfReferenceUID", "duplicate-contour",
             "drop-contour", "drop-sequence", "truncate"]

_CONTOUR_DATA = st.one_of(
    _TEXT, st.lists(_NUMBERS, min_size=0, max_size=14).map(lambda v: [_ds_text(x) for x in v]),
    st.lists(st.sampled_from(["nan", "inf", "1e308", "-1e308", "abc", ""]), min_size=3, max_size=12),
)
RT_MUTATIONS = st.tuples(st.sampled_from(RT_FIELDS), st.integers(0, 1), st.integers(0, 3),
                         st.one_of(TEXT_VALUES, INT_VALUES, _CONTOUR_DATA), st.floats(0.0, 1.0))


def _mutate_rtstruct(ds, field: str, roi: int, contour: int, value: Any) -> None:
    structure = ds.StructureSetROISequence[roi]
    item = ds.ROIContourSequence[roi]
    contours = item.ContourSequence
    c = contours[contour % len(contours)]
    if field in ("ROINumber", "ROIName", "ReferencedFrameOfReferenceUID"):
        target, keyword = structure, field
    elif field == "ReferencedROINumber":
        target, keyword = item, field
    elif field in ("ContourGeometricType", "ContourData", "NumberOfContourPoints"):
        target, keyword = c, field
    elif field == "FrameOfReferenceUID":
        target, keyword = ds.ReferencedFrameOfReferenceSequence[0], field
    elif field == "duplicate-contour":
        copy = pydicom.Dataset()
        copy.update(c)
        contours.append(copy)
        return
    elif field == "drop-contour":
        del contours[contour % len(contours)]
        return
    else:  # drop-sequence
        del ds.ROIContourSequence[roi]
        return
    if value is None:
        if keyword in target:
            delattr(target, keyword)
    else:
        setattr(target, keyword, value)


def _valid_rtstruct(field: str, value: Any) -> bool:
    """Another valid structure set: an ROI renamed, a contour dropped, an ROI's contours given
    to the other ROI (a valid ROI number), a valid point count."""
    if field == "ROIName":  # any name, or none (the ROI is then named ROI_<number>)
        return True
    if field in ("drop-contour", "drop-sequence"):
        return True
    if field in ("ReferencedROINumber", "ROINumber"):
        return value in (1, 2, "1", "2")
    if field == "ContourData":
        return isinstance(value, list) and len(value) % 3 == 0 and all(_number(v) is not None for v in value)
    return False


def _write_mutated(path: Path, mutated: Path, reader: str, field: str, fraction: float,
                   mutate: Callable[[Any], None]) -> bool:
    """Write ``path`` mutated to ``mutated``: cut to ``fraction`` of its bytes (field "truncate"),
    or read, changed by ``mutate`` and saved; False (counted) where pydicom refuses the value."""
    if field == "truncate":
        data = path.read_bytes()
        mutated.write_bytes(data[: int(len(data) * fraction)])
        return True
    ds = pydicom.dcmread(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mutate(ds)
            ds.save_as(mutated)
    except Exception:  # noqa: BLE001 - pydicom refuses to write this value: not an input
        OUTCOMES[(reader, "unwritable")] += 1
        return False
    return True


def _same_vois(baseline: dict[str, np.ndarray]) -> Callable[[Any], bool]:
    def same(vois) -> bool:
        return vois.keys() == baseline.keys() and all(np.allclose(vois[k].array, baseline[k], atol=1e-6) for k in vois)

    return same


def check_rtstruct(rtstruct, root: Path, mutation) -> None:
    field, roi, contour, value, fraction = mutation
    path, ref, baseline = rtstruct
    mutated = root / "rs.dcm"
    if _write_mutated(path, mutated, "rtstruct", field, fraction, lambda ds: _mutate_rtstruct(ds, field, roi, contour, value)):
        _outcome("rtstruct", lambda: voxeldose.load_vois(mutated, ref), _same_vois(baseline),
                 _valid_rtstruct(field, value), (str(mutated),))


@pytest.mark.parametrize("n", budgets("rtstruct"))
def test_fuzz_rtstruct(rtstruct, tmp_path, n):
    _run(RT_MUTATIONS, lambda m: check_rtstruct(rtstruct, tmp_path, m), n)


# =========================================================================== SEG

@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """A binary SEG of two segments (liver, tumour_1) on a 6 x 8 x 10 CT grid, and its masks."""
    from tests.io.test_vois import _small_seg

    path, ref = _small_seg(tmp_path_factory.mktemp("seg"))
    return path, ref, {k: v.array for k, v in voxeldose.load_vois(path, ref).items()}


SEG_FIELDS = ["SegmentNumber", "SegmentLabel", "Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SegmentationType",
              "MaximumFractionalValue", "FrameOfReferenceUID", "ReferencedSegmentNumber", "ImagePositionPatient",
              "PixelSpacing", "SliceThickness", "PixelData", "drop-frame-group", "truncate"]
SEG_MUTATIONS = st.tuples(st.sampled_from(SEG_FIELDS), st.integers(0, 1), st.integers(0, 20),
                          st.one_of(TEXT_VALUES, INT_VALUES), st.floats(0.0, 1.0))


def _mutate_seg(ds, field: str, segment: int, frame: int, value: Any) -> None:
    groups = ds.PerFrameFunctionalGroupsSequence
    group = groups[frame % len(groups)]
    if field in ("SegmentNumber", "SegmentLabel"):
        target = ds.SegmentSequence[segment]
    elif field == "ReferencedSegmentNumber":
        target = group.SegmentIdentificationSequence[0]
    elif field == "ImagePositionPatient":
        target = group.PlanePositionSequence[0]
    elif field in ("PixelSpacing", "SliceThickness"):
        target = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    elif field == "PixelData":
        n = value if isinstance(value, int) else 7
        ds.PixelData = ds.PixelData[: max(0, len(ds.PixelData) - n)] if segment else ds.PixelData + bytes(n)
        return
    elif field == "drop-frame-group":
        del groups[frame % len(groups)]
        return
    else:
        target = ds
    if value is None:
        if field in target:
            delattr(target, field)
    else:
        setattr(target, field, value)


def check_seg(seg, root: Path, mutation) -> None:
    field, segment, frame, value, fraction = mutation
    path, ref, baseline = seg
    mutated = root / "seg.dcm"
    if not _write_mutated(path, mutated, "seg", field, fraction, lambda ds: _mutate_seg(ds, field, segment, frame, value)):
        return
    # any label, or none (the segment is then named segment_<number>); another pixel size; a frame
    # given to the other segment (both are valid segmentations)
    valid = (field == "SegmentLabel"
             or field == "PixelSpacing" and all(x > 0 for x in (_numbers(value, 2) or [0]))
             or field == "ReferencedSegmentNumber" and value in (1, 2, "1", "2"))
    _outcome("seg", lambda: voxeldose.load_vois(mutated, ref), _same_vois(baseline), valid, (str(mutated),))


@pytest.mark.parametrize("n", budgets("seg"))
def test_fuzz_seg(seg, tmp_path, n):
    _run(SEG_MUTATIONS, lambda m: check_seg(seg, tmp_path, m), n)


# =========================================================================== label maps

@pytest.fixture(scope="module")
def label_map(tmp_path_factory):
    """A NIfTI-1 label map (liver 1, tumour 2) on the reference grid, uncompressed (the fuzz
    edits its header bytes; each input is then written as .nii or .nii.gz)."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("labels")
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:5, 2:7, 2:9] = 1
    labels[2:4, 3:5, 4:6] = 2
    img = sitk.GetImageFromArray(labels)
    img.SetSpacing((2.0, 2.0, 2.0))
    path = folder / "labels.nii"
    sitk.WriteImage(img, str(path))
    ref = voxeldose.Image(np.zeros((6, 8, 10), np.float32), (2.0, 2.0, 2.0))
    names = {1: "liver", 2: "tumour_1"}
    return path.read_bytes(), ref, names, {k: v.array for k, v in voxeldose.load_vois(path, ref, label_names=names).items()}


#: NIfTI-1 header fields the fuzz edits: name -> (byte offset, struct format).
NIFTI_FIELDS = {"dim0": (40, "<h"), "dim1": (42, "<h"), "dim2": (44, "<h"), "dim3": (46, "<h"), "dim4": (48, "<h"),
                "datatype": (70, "<h"), "bitpix": (72, "<h"), "pixdim0": (76, "<f"), "pixdim1": (80, "<f"),
                "pixdim2": (84, "<f"), "pixdim3": (88, "<f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"),
                "scl_inter": (116, "<f"), "qform_code": (252, "<h"), "sform_code": (254, "<h"), "sizeof_hdr": (0, "<i"),
                **{f"quatern_{c}": (256 + 4 * i, "<f") for i, c in enumerate("bcd")},
                **{f"qoffset_{c}": (268 + 4 * i, "<f") for i, c in enumerate("xyz")},
                **{f"srow_{c}{j}": (280 + 16 * i + 4 * j, "<f") for i, c in enumerate("xyz") for j in range(4)}}

#: The fields that place the voxels in space: another finite value is another valid geometry.
GEOMETRY_FIELDS = {"pixdim0", *(f for f in NIFTI_FIELDS if f.startswith(("quatern", "qoffset", "srow"))),
                   "qform_code", "sform_code"}
LABEL_MUTATIONS = st.one_of(
    st.tuples(st.sampled_from(sorted(NIFTI_FIELDS)), st.one_of(_NUMBERS, _INTS), st.booleans()),
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0), st.booleans()),
    st.tuples(st.just("flip-byte"), st.integers(0, 2000), st.booleans()),
)


def _valid_label_map(field: str, value: Any) -> bool:
    """Another valid geometry: a positive voxel size, a finite orientation or offset, pixdim[0]
    (the qform's handedness, +-1 by the standard and taken as 1 otherwise)."""
    if field in ("pixdim1", "pixdim2", "pixdim3"):
        return isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if field in GEOMETRY_FIELDS:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return False


def _header_fields(raw: bytes) -> dict[str, Any]:
    return {name: struct.unpack_from(fmt, raw, offset)[0] for name, (offset, fmt) in NIFTI_FIELDS.items()}


def _valid_flip(original: bytes, raw: bytes, offset: int) -> bool:
    """A flipped byte is another valid file when it lies in the voxels (another label: an
    unnamed one is skipped with a warning) or changes only fields of the valid geometry."""
    if offset >= 352:
        return True
    before, after = _header_fields(original), _header_fields(raw)
    changed = [name for name in NIFTI_FIELDS if not (before[name] == after[name] or before[name] != before[name]
                                                     and after[name] != after[name])]
    return bool(changed) and all(_valid_label_map(name, after[name]) for name in changed)


def check_label_map(label_map, root: Path, mutation) -> None:
    field, value, gz = mutation
    data, ref, names, baseline = label_map
    raw = bytearray(data)
    if field == "truncate":
        raw = raw[: int(len(raw) * value)]
    elif field == "flip-byte":
        raw[value % len(raw)] ^= 0xFF
    else:
        offset, fmt = NIFTI_FIELDS[field]
        try:
            struct.pack_into(fmt, raw, offset, value)
        except (struct.error, OverflowError):
            OUTCOMES[("label map", "unwritable")] += 1
            return
    mutated = root / ("labels.nii.gz" if gz else "labels.nii")
    for old in root.glob("labels.nii*"):
        old.unlink()
    if gz:
        import gzip

        mutated.write_bytes(gzip.compress(bytes(raw)))
    else:
        mutated.write_bytes(bytes(raw))

    valid = _valid_flip(data, bytes(raw), value % len(raw)) if field == "flip-byte" else _valid_label_map(field, value)
    _outcome("label map", lambda: voxeldose.load_vois(mutated, ref, label_names=names), _same_vois(baseline), valid,
             (str(mutated),))


@pytest.mark.parametrize("n", budgets("label map"))
def test_fuzz_label_maps(label_map, tmp_path, n):
    _run(LABEL_MUTATIONS, lambda m: check_label_map(label_map, tmp_path, m), n)


# =========================================================================== case files

from voxeldose.case import CASE_FILE_KEYS  # noqa: E402

_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBERS, _INTS, st.integers(-(10**30), 10**30), _TEXT, _SPECIAL,
              st.sampled_from(["2026-01-15T10:30:00", "2026-01-15 10:30", "2026-13-01T00:00:00", "15/01/2026",
                               "2026-01-15T10:30:00+01:00", "whole_liver", "tumour", "lung", "glass", "resin"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=6,
)
CASE_MUTATIONS = st.tuples(
    st.dictionaries(st.one_of(st.sampled_from(sorted(CASE_FILE_KEYS)), _TEXT), _JSON_VALUES, max_size=6),
    st.one_of(st.just("c1"), _TEXT, st.none(), _INTS),
    st.sampled_from(["json", "toml"]),
)


def _toml_value(value: Any) -> str | None:
    """``value`` as TOML, or None where TOML has no form for it (null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        items = [_toml_value(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    items = [(json.dumps(str(k)), _toml_value(v)) for k, v in value.items()]
    return None if any(i is None for _, i in items) else "{" + ", ".join(f"{k} = {v}" for k, v in items) + "}"


def check_case_file(root: Path, mutation) -> None:
    values, case_id, kind = mutation
    data = dict(values)
    if case_id is not None:
        data["case_id"] = case_id
    path = root / f"case.{kind}"
    if kind == "json":
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        lines = [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in data.items()]
        if any(line.endswith(" = None") for line in lines):
            OUTCOMES[("case file", "unwritable")] += 1
            return
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def same(case) -> bool:
        # what was loaded is what was written: every number as given, no text read as a number
        for key, value in data.items():
            field = CASE_FILE_KEYS.get(key)
            if field is None or key == "case_id":
                continue
            loaded = getattr(case, field, None)
            if isinstance(value, bool) or isinstance(value, str) and isinstance(loaded, float):
                return False
            if isinstance(value, (int, float)) and isinstance(loaded, float) and loaded != float(value):
                return False
        return True

    outcome = _outcome("case file", lambda: voxeldose.load_case(path), same, False, (str(path),))
    assert outcome in ("error", "equal"), f"case file {data!r}: read as something else than written"


@pytest.mark.parametrize("n", budgets("case file"))
def test_fuzz_case_files(tmp_path, n):
    _run(CASE_MUTATIONS, lambda m: check_case_file(tmp_path, m), n)


# =========================================================================== the tally


def main(n: int) -> None:  # pragma: no cover - run by hand for the README's counts
    """Run every reader's fuzz with ``n`` inputs and print the outcome counts."""
    class Factory:
        def mktemp(self, name):
            return Path(tempfile.mkdtemp(prefix=name))

    os.environ["VOXELDOSE_MAX_VOXELS"] = str(FUZZ_MAX_VOXELS)
    work = Path(tempfile.mkdtemp(prefix="fuzz"))
    pet = pet_series.__wrapped__(Factory())
    _run(HEADER_MUTATIONS, lambda m: check_header(pet, work, m), n)
    rs = rtstruct.__wrapped__(Factory())
    _run(RT_MUTATIONS, lambda m: check_rtstruct(rs, work, m), n)
    sg = seg.__wrapped__(Factory())
    _run(SEG_MUTATIONS, lambda m: check_seg(sg, work, m), n)
    lm = label_map.__wrapped__(Factory())
    _run(LABEL_MUTATIONS, lambda m: check_label_map(lm, work, m), n)
    _run(CASE_MUTATIONS, lambda m: check_case_file(work, m), n)
    readers = sorted({r for r, _ in OUTCOMES})
    kinds = ["error", "equal", "warned", "valid", "unwritable"]
    print(f"{'reader':<12}" + "".join(f"{k:>12}" for k in kinds) + f"{'tried':>10}")
    for r in readers:
        counts = [OUTCOMES[(r, k)] for k in kinds]
        print(f"{r:<12}" + "".join(f"{c:>12}" for c in counts) + f"{sum(counts):>10}")
    total = [sum(OUTCOMES[(r, k)] for r in readers) for k in kinds]
    print(f"{'all':<12}" + "".join(f"{c:>12}" for c in total) + f"{sum(total):>10}")


if __name__ == "__main__":  # pragma: no cover
    main(int(sys.argv[1]) if len(sys.argv) > 1 else SLOW_EXAMPLES)

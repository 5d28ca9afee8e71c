"""Derived VOIs from fractional masks: normal liver, the union of tumours, perfused normal liver.

Pure functions on arrays of the fraction (0-1) of each voxel inside a VOI, all on one grid.

Rules (stated, because fractional masks need one)
-------------------------------------------------
- **Union** of tumours: ``clip(sum, 0, 1)``. Tumours are distinct lesions, so two tumours that
  share a boundary voxel (each holding part of it) fill it by the sum of their parts; ``max``
  would lose one part. Where tumour masks overlap (a contouring conflict), the sum exceeds what
  the voxel can hold in places; the excess is reported, and the clip counts it once.
- **Difference** ``normal_liver = clip(liver - tumours, 0, 1)``: the tumour part of a voxel is
  taken out of its liver part. Tumour parts outside the liver (more tumour than liver in a
  voxel) are kept in ``tumours`` as drawn, take nothing from ``normal_liver``, and are reported.
- **Intersection** ``perfused_normal_liver = min(normal_liver, perfused)``: in a voxel on the
  edge of both, the perfused territory is taken to hold the normal liver part (the territory is
  drawn on the liver), which the minimum expresses; a product would assume the two fractions
  are independent and halve boundary voxels that both regions fill from the same side.

:func:`union_of`, :func:`difference` and :func:`intersection` are these rules, on arrays; they are
the only place the rules are written (:func:`derive_vois` and the clinical cross-checks use them).
Every conflict :func:`derive_vois` finds is a :class:`~voxeldose.VoxelDoseWarning` (a caveat of
the case), with its size in voxels (summed fractions).
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ._checks import nonzero_box
from .errors import InputError, VoiError, VoxelDoseWarning
from .image import Image, mask_image

__all__ = ["derive_vois", "union_of", "difference", "intersection", "REPORT_THRESHOLD_VOXELS"]


#: Conflicts smaller than this (voxels, summed fractions) are float rounding and not reported.
REPORT_THRESHOLD_VOXELS = 1e-3


def union_of(masks: Sequence[NDArray[np.floating]], shape: tuple[int, ...], *,
             boxes: Sequence[tuple[slice, ...] | None] | None = None) -> NDArray[np.float32]:
    """Union of distinct VOIs (e.g. tumours): ``clip(sum, 0, 1)`` of the fractions (module rules).
    Each mask is added on its bounding box (``boxes``, found when not given: the same sums voxel
    by voxel as on the whole grid)."""
    found = list(boxes) if boxes is not None else [_bbox(m) for m in masks]
    total = np.zeros(shape, np.float64)
    for m, box in zip(masks, found):
        if box is not None:
            total[box] += m[box]
    out = np.zeros(shape, np.float32)
    hull = _hull(found)
    if hull is not None:
        out[hull] = np.clip(total[hull], 0.0, 1.0)
    return out


def difference(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float32]:
    """``a`` without ``b`` (e.g. the liver without its tumours): ``clip(a - b, 0, 1)``."""
    return np.clip(np.asarray(a, np.float64) - b, 0.0, 1.0).astype(np.float32)


def intersection(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float32]:
    """What ``a`` and ``b`` share (e.g. normal liver in the perfused territory): ``min(a, b)``."""
    return np.minimum(a, b).astype(np.float32)


def _mask(vois: Mapping[str, Image], name: str, reference: Image | None) -> Image:
    if name not in vois:
        raise VoiError(
            f"no VOI named {name!r}; the VOIs are: {', '.join(repr(k) for k in vois) or 'none'}. "
            "Check the spelling (names are case-sensitive)"
        )
    mask = vois[name]
    if not isinstance(mask, Image):
        raise InputError(
            f"VOI {name!r} is a {type(mask).__name__}, not a mask Image; derive_vois needs masks with their "
            "grid (load_vois returns them; voxeldose.mask_image(image, array, name=...) makes one)"
        )
    return mask_image(reference if reference is not None else mask, mask, name=name)


def _bbox(m: NDArray[np.floating]) -> tuple[slice, ...] | None:
    """The bounding box of the non-zero voxels of ``m`` [z, y, x] (None when there are none)."""
    return nonzero_box(m != 0)


def _hull(boxes: Sequence[tuple[slice, ...] | None]) -> tuple[slice, ...] | None:
    """The smallest box holding every box given (None when none is)."""
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    return tuple(slice(min(b[k].start for b in real), max(b[k].stop for b in real)) for k in range(3))


def _intersect(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...] | None:
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.start >= s.stop for s in out) else out


def _caveat(message: str) -> None:
    warnings.warn(message, VoxelDoseWarning, stacklevel=3)


def derive_vois(
    vois: Mapping[str, Image],
    *,
    whole_liver: str,
    tumours: Sequence[str],
    perfused: str | None = None,
) -> dict[str, Image]:
    """Normal liver, tumour union and perfused normal liver from VOI masks.

    Parameters
    ----------
    vois : mapping name -> mask Image
        The VOIs on one grid (e.g. from :func:`voxeldose.load_vois`). Not modified.
    whole_liver : str
        Name of the whole-liver VOI (tumours included).
    tumours : sequence of str
        Names of the tumour VOIs (may be empty; a single name as a str is taken as one tumour).
    perfused : str, optional
        Name of the perfused-territory VOI (e.g. from the 99mTc-MAA SPECT or a cone-beam CT).

    Returns
    -------
    dict str -> Image (units "MASK", on the whole liver's grid)
        ``"tumours"`` (union), ``"normal_liver"``, and with ``perfused``
        ``"perfused_normal_liver"``; fractions 0-1 by the rules of the module documentation.

    Raises
    ------
    VoiError
        An unknown name (the message lists the known ones), masks on different grids, values
        outside [0, 1], the liver named among the tumours or twice as a tumour.
    InputError
        ``tumours`` is not a sequence of names, or a VOI is not an Image.

    Warns
    -----
    VoxelDoseWarning
        One per conflict resolved: tumours that overlap (summed ``min`` of the two fractions, in
        voxels), tumour parts outside the liver, perfused territory outside the liver.

    Example
    -------
    >>> import numpy as np
    >>> from voxeldose import Image
    >>> def voi(values): return Image(np.array([[values]], float), (4.0, 4.0, 4.0), units="MASK")
    >>> vois = {"liver": voi([1, 1, 1, 0]), "t1": voi([0.5, 0, 0, 0]), "t2": voi([0.5, 0.5, 0, 0])}
    >>> derive_vois(vois, whole_liver="liver", tumours=["t1", "t2"])["normal_liver"].array.tolist()
    [[[0.0, 0.5, 1.0, 0.0]]]
    """
    if isinstance(tumours, str):
        tumours = [tumours]
    try:
        tumour_names = list(tumours)
    except TypeError:
        raise InputError(f"tumours must be a sequence of VOI names, got {tumours!r}") from None
    if not all(isinstance(t, str) for t in tumour_names):
        raise InputError(f"tumours must be a sequence of VOI names (str), got {tumours!r}")
    if whole_liver in tumour_names:
        raise VoiError(f"{whole_liver!r} is given as the whole liver and as a tumour; name each VOI once")
    dupes = sorted({t for t in tumour_names if tumour_names.count(t) > 1})
    if dupes:
        raise VoiError(f"tumour(s) {dupes} are listed more than once; name each tumour once")
    if perfused is not None and (perfused == whole_liver or perfused in tumour_names):
        raise VoiError(f"{perfused!r} is given as the perfused territory and as another VOI; name each VOI once")

    liver_image = _mask(vois, whole_liver, None)
    liver = liver_image.array
    images = {t: _mask(vois, t, liver_image) for t in tumour_names}
    masks = {t: image.array for t, image in images.items()}
    boxes = {t: image.nonzero_box() for t, image in images.items()}  # found when the mask was made
    union = union_of(list(masks.values()), liver.shape, boxes=list(boxes.values()))

    # pairwise overlaps, on the intersection of bounding boxes
    for a in range(len(tumour_names)):
        for b in range(a + 1, len(tumour_names)):
            ta, tb = tumour_names[a], tumour_names[b]
            box_a, box_b = boxes[ta], boxes[tb]
            if box_a is None or box_b is None:
                continue
            box = _intersect(box_a, box_b)
            if box is None:
                continue
            # two tumours may share a voxel (each a part of it); only fractions summing to more
            # than the whole voxel are claimed by both
            excess = np.clip(masks[ta][box].astype(np.float64) + masks[tb][box] - 1.0, 0.0, None)
            amount = float(excess.sum())
            if amount > REPORT_THRESHOLD_VOXELS:
                _caveat(
                    f"tumours {ta!r} and {tb!r} overlap by {amount:.2f} voxel(s) (their fractions sum to "
                    f"more than 1 in {int(np.count_nonzero(excess))} voxel(s)); the overlap is counted once "
                    "in 'tumours'"
                )
    excess_all = float(sum(float(m.sum(dtype=np.float64)) for m in masks.values()) - union.sum(dtype=np.float64))
    if excess_all > REPORT_THRESHOLD_VOXELS and len(tumour_names) > 2:
        _caveat(f"tumour overlaps in all: {excess_all:.2f} voxel(s) counted once in 'tumours'")

    for t, m in masks.items():
        box = boxes[t]  # m - liver is 0 or negative outside the tumour's box
        out_of_liver = 0.0 if box is None else float(difference(m[box], liver[box]).sum(dtype=np.float64))
        if out_of_liver > REPORT_THRESHOLD_VOXELS:
            size = float(m.sum(dtype=np.float64))
            _caveat(
                f"tumour {t!r}: {out_of_liver:.2f} voxel(s) ({100.0 * out_of_liver / size:.1f} % of it) lie "
                f"outside {whole_liver!r}; kept in 'tumours', not taken from 'normal_liver'"
            )

    normal = difference(liver, union)
    derived = {"tumours": union, "normal_liver": normal}
    if perfused is not None:
        territory = _mask(vois, perfused, liver_image).array
        outside = float(difference(territory, liver).sum(dtype=np.float64))
        if outside > REPORT_THRESHOLD_VOXELS:
            _caveat(
                f"perfused territory {perfused!r}: {outside:.2f} voxel(s) "
                f"({100.0 * outside / max(float(territory.sum(dtype=np.float64)), 1e-12):.1f} % of it) lie outside "
                f"{whole_liver!r}; not part of 'perfused_normal_liver'"
            )
        derived["perfused_normal_liver"] = intersection(normal, territory)
    return {name: liver_image.with_array(m, units="MASK") for name, m in derived.items()}

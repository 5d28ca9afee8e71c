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

Every conflict found goes into the returned list of messages, with its size in voxels (summed
fractions), for the report.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import MASK_TOLERANCE, check_mask
from .errors import InputError, VoiError

__all__ = ["derive_vois", "MASK_TOLERANCE", "REPORT_THRESHOLD_VOXELS"]


#: Conflicts smaller than this (voxels, summed fractions) are float rounding and not reported.
REPORT_THRESHOLD_VOXELS = 1e-3


def _mask(vois: Mapping[str, ArrayLike], name: str, shape: tuple[int, ...] | None) -> NDArray[np.float64]:
    if name not in vois:
        raise VoiError(
            f"no VOI named {name!r}; the VOIs are: {', '.join(repr(k) for k in vois) or 'none'}. "
            "Check the spelling (names are case-sensitive)"
        )
    return check_mask(vois[name], shape, what=f"VOI {name!r}",
                      fix_shape="put all VOIs on one grid first (load_vois with the same reference image)")


def _bbox(m: NDArray[np.float64]) -> tuple[slice, ...] | None:
    idx = np.nonzero(m)
    if idx[0].size == 0:
        return None
    return tuple(slice(int(a.min()), int(a.max()) + 1) for a in idx)


def _intersect(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...] | None:
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.start >= s.stop for s in out) else out


def derive_vois(
    vois: Mapping[str, ArrayLike],
    *,
    whole_liver: str,
    tumours: Sequence[str],
    perfused: str | None = None,
) -> tuple[dict[str, NDArray[np.float32]], list[str]]:
    """Normal liver, tumour union and perfused normal liver from fractional VOI masks.

    Parameters
    ----------
    vois : mapping name -> ndarray [z, y, x]
        Fraction (0-1) of each voxel inside each VOI (boolean masks are accepted), all of one
        shape. Not modified.
    whole_liver : str
        Name of the whole-liver VOI (tumours included).
    tumours : sequence of str
        Names of the tumour VOIs (may be empty; a single name as a str is taken as one tumour).
    perfused : str, optional
        Name of the perfused-territory VOI (e.g. from the 99mTc-MAA SPECT or a cone-beam CT).

    Returns
    -------
    derived : dict str -> ndarray, float32, [z, y, x]
        ``"tumours"`` (union), ``"normal_liver"``, and with ``perfused`` ``"perfused_normal_liver"``;
        fractions 0-1 by the rules of the module documentation.
    messages : list of str
        One sentence per conflict resolved: tumours that overlap (summed ``min`` of the two
        fractions, in voxels), tumour parts outside the liver, perfused territory outside the
        liver. Empty when the VOIs are consistent.

    Raises
    ------
    VoiError
        An unknown name (the message lists the known ones), masks of different shapes, values
        outside [0, 1], the liver named among the tumours or twice as a tumour.
    InputError
        ``tumours`` is not a sequence of names.

    Example
    -------
    >>> import numpy as np
    >>> liver = np.zeros((1, 1, 4)); liver[0, 0, :3] = 1
    >>> t1 = np.array([[[0.5, 0.0, 0.0, 0.0]]]); t2 = np.array([[[0.5, 0.5, 0.0, 0.0]]])
    >>> derived, messages = derive_vois({"liver": liver, "t1": t1, "t2": t2},
    ...                                 whole_liver="liver", tumours=["t1", "t2"])
    >>> derived["normal_liver"].tolist()
    [[[0.0, 0.5, 1.0, 0.0]]]
    >>> messages
    []
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

    liver = _mask(vois, whole_liver, None)
    shape = liver.shape
    masks = {t: _mask(vois, t, shape) for t in tumour_names}
    messages: list[str] = []

    total = np.zeros(shape)
    for m in masks.values():
        total += m
    union = np.clip(total, 0.0, 1.0)

    # pairwise overlaps, on the intersection of bounding boxes
    boxes = {t: _bbox(m) for t, m in masks.items()}
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
            excess = np.clip(masks[ta][box] + masks[tb][box] - 1.0, 0.0, None)
            amount = float(excess.sum())
            if amount > REPORT_THRESHOLD_VOXELS:
                messages.append(
                    f"tumours {ta!r} and {tb!r} overlap by {amount:.2f} voxel(s) (their fractions sum to "
                    f"more than 1 in {int(np.count_nonzero(excess))} voxel(s)); the overlap is counted once "
                    "in 'tumours'"
                )
    excess_all = float((total - union).sum())
    if excess_all > REPORT_THRESHOLD_VOXELS and len(tumour_names) > 2:
        messages.append(f"tumour overlaps in all: {excess_all:.2f} voxel(s) counted once in 'tumours'")

    for t, m in masks.items():
        out_of_liver = float(np.clip(m - liver, 0.0, None).sum())
        if out_of_liver > REPORT_THRESHOLD_VOXELS:
            size = float(m.sum())
            messages.append(
                f"tumour {t!r}: {out_of_liver:.2f} voxel(s) ({100.0 * out_of_liver / size:.1f} % of it) lie "
                f"outside {whole_liver!r}; kept in 'tumours', not taken from 'normal_liver'"
            )

    normal = np.clip(liver - union, 0.0, 1.0)
    derived: dict[str, NDArray[np.float32]] = {
        "tumours": union.astype(np.float32),
        "normal_liver": normal.astype(np.float32),
    }
    if perfused is not None:
        territory = _mask(vois, perfused, shape)
        outside = float(np.clip(territory - liver, 0.0, None).sum())
        if outside > REPORT_THRESHOLD_VOXELS:
            messages.append(
                f"perfused territory {perfused!r}: {outside:.2f} voxel(s) "
                f"({100.0 * outside / max(float(territory.sum()), 1e-12):.1f} % of it) lie outside "
                f"{whole_liver!r}; not part of 'perfused_normal_liver'"
            )
        derived["perfused_normal_liver"] = np.minimum(normal, territory).astype(np.float32)
    return derived, messages

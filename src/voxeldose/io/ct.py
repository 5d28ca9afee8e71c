"""The CT of a case, on the scan's grid: what the report draws the dose over.

:func:`load_ct` reads a CT (a DICOM series, or a NIfTI/NRRD/MetaImage file in HU), checks that it
is a CT in the scan's frame of reference and covers the scan, and resamples it onto the scan's
grid by world coordinates (trilinear, SimpleITK; air, -1000 HU, outside the CT). The CT enters no
number of the dose: it is the anatomy under the dose in the report.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from ..errors import GeometryError, InputError
from ..image import Image
from ._sitk import to_sitk
from .dicom import load_image

__all__ = ["load_ct", "resample_ct"]

#: HU outside the CT's field of view (air).
AIR_HU = -1000.0

#: Less of the scan's grid than this inside the CT is an error: the CT is of another region.
MIN_COVERAGE = 0.10


def load_ct(path: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]", reference: Image, *,
            series_uid: str | None = None, registered: bool = False) -> Image:
    """The CT at ``path`` on ``reference``'s grid (units "HU"), with its coverage of the grid in
    ``meta.extra["coverage"]``.

    Raises
    ------
    InputError
        The image is not a CT in HU.
    GeometryError
        The CT is in another frame of reference (unless ``registered``) or covers less than 10 %
        of the scan's grid.
    """
    ct = load_image(path, series_uid)
    return resample_ct(ct, reference, registered=registered, where=str(path))


def resample_ct(ct: Image, reference: Image, *, registered: bool = False, where: str = "the CT") -> Image:
    """``ct`` resampled onto ``reference``'s grid, checked as :func:`load_ct` says."""
    import SimpleITK as sitk

    modality = (ct.meta.modality or "").upper()
    if (ct.units or "").upper() != "HU" or modality not in ("CT", ""):
        raise InputError(f"{where}: expected a CT in HU, got modality {ct.meta.modality!r} in units {ct.units!r}; "
                         "give the CT series (--ct)")
    ours, theirs = ct.meta.frame_of_reference_uid, reference.meta.frame_of_reference_uid
    if ours and theirs and ours != theirs and not registered:
        raise GeometryError(
            f"{where}: the CT's FrameOfReferenceUID {ours} differs from the scan's {theirs}: another patient coordinate "
            "system, so the dose would be drawn on the wrong anatomy. Give the CT of the PET/CT or SPECT/CT, or pass "
            "--registered if you know the coordinates match")
    grid = to_sitk(Image(np.zeros(reference.shape, np.float32), reference.spacing_mm, reference.origin_mm,
                         reference.direction))
    source = to_sitk(ct)
    out = sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    inside = sitk.Resample(sitk.Cast(source * 0 + 1, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                           sitk.sitkFloat32)
    coverage = float(np.mean(sitk.GetArrayViewFromImage(inside) > 0.5))
    if coverage < MIN_COVERAGE:
        raise GeometryError(f"{where}: the CT covers {coverage:.0%} of the scan's grid: it is not a CT of this scan; "
                            "give the CT of the PET/CT or SPECT/CT")
    meta = dataclasses.replace(ct.meta, extra={**dict(ct.meta.extra), "coverage": coverage})
    # the reference's geometry itself (not its round trip through SimpleITK): the same grid exactly
    return Image(sitk.GetArrayFromImage(out), reference.spacing_mm, reference.origin_mm, reference.direction, "HU", meta)

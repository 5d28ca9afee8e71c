"""The one place that converts between voxeldose images and SimpleITK images.

SimpleITK's spacing, origin and direction are (x, y, z), as :class:`~voxeldose.Image`'s; its
``GetArrayFromImage`` is indexed [z, y, x], as ``Image.array``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..image import Image, ImageMeta

__all__ = ["to_sitk", "from_sitk"]


def to_sitk(image: Image) -> Any:
    """``image`` as a ``SimpleITK.Image`` (float32, same geometry)."""
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.ascontiguousarray(image.array, dtype=np.float32))
    out.SetSpacing(image.spacing_mm)
    out.SetOrigin(image.origin_mm)
    out.SetDirection(image.direction)
    return out


def from_sitk(image: Any, *, units: str = "", meta: ImageMeta | None = None, dtype: Any = np.float32) -> Image:
    """An :class:`Image` from a ``SimpleITK.Image`` (3-D, scalar)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    arr = sitk.GetArrayFromImage(image).astype(dtype, copy=False)
    return Image(arr, tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()),
                 units, meta or ImageMeta())

"""The one place that converts between voxeldose images and SimpleITK images.

SimpleITK's spacing, origin and direction are (x, y, z), as :class:`~voxeldose.Image`'s; its
``GetArrayFromImage`` is indexed [z, y, x], as ``Image.array``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, VoxelDoseError
from ..image import Image, ImageMeta

__all__ = ["to_sitk", "from_sitk", "read_image_file", "filter_threads", "set_filter_threads"]


def filter_threads() -> int:
    """SimpleITK's default number of threads for a filter in this process."""
    import SimpleITK as sitk

    return int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())


def set_filter_threads(n: int) -> None:
    """Let SimpleITK's filters (resampling among them) use ``n`` threads in this process."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))


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


def read_image_file(path: Path, error: type[VoxelDoseError], what: str) -> Any:
    """Read a NIfTI, NRRD or MetaImage file with SimpleITK, checked before and after reading.

    ITK reads a NIfTI file cut short without a word (the missing voxels are zeros: a label map
    truncated to half lost 89 % of the lung) and replaces a voxel size of 0 or NaN by 1 mm. So,
    before the pixels are read: the header's voxel sizes must be positive and finite, the size
    within the allocation limit, and a NIfTI file must hold every byte its header describes
    (a ``.nii.gz`` is decompressed once to check its length and CRC). Any failure is ``error``
    naming the file, ``what`` it was read as and the fix.

    Returns
    -------
    SimpleITK.Image
    """
    import SimpleITK as sitk

    from .._checks import check_allocation

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise error(f"{path}: cannot read the {what} ({_itk_reason(exc)}); is it a complete NIfTI, NRRD or "
                    "MetaImage file?") from None
    size = [int(n) for n in reader.GetSize()]
    spacing = [float(v) for v in reader.GetSpacing()]
    keys = set(reader.GetMetaDataKeys())
    nifti = "vox_offset" in keys and "bitpix" in keys
    # ITK reports a NIfTI pixdim of 0 or NaN as 1 mm (in GetSpacing and in its metadata): read the header's own
    header = _nifti_header(path, error, what) if nifti else None
    declared = header["pixdim"] if header else spacing
    if header and not path.name.lower().endswith((".hdr", ".img", ".hdr.gz", ".img.gz")):
        offset, smallest = header["vox_offset"]
        if not math.isfinite(offset) or offset < smallest:
            raise error(f"{path}: the {what}'s NIfTI header puts the voxels at byte {offset:g} (vox_offset), inside the "
                        f"header (a single-file NIfTI's voxels start at byte {smallest:g} or later): the header is damaged, "
                        "re-export the file")
    for axis, value in zip("xyz", declared):
        if not math.isfinite(value) or value <= 0:
            where = " (pixdim in the NIfTI header)" if nifti else ""
            raise error(f"{path}: the {what}'s voxel size along {axis} is {value:g}{where}; it must be a positive "
                        "number of mm: the header is damaged, re-export the file")
    from .._checks import check_direction, check_origin, check_spacing
    from ..errors import GeometryError

    try:
        check_spacing(spacing[:3])
        check_origin([float(v) for v in reader.GetOrigin()][:3])
        check_direction([float(v) for v in reader.GetDirection()] if len(size) == 3 else [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
    except GeometryError as exc:
        raise error(f"{path}: the {what}'s geometry is not usable: {exc}; re-export the file") from None
    check_allocation(math.prod(size) * reader.GetNumberOfComponents(),
                     f"{path}: a {what} of {' x '.join(map(str, size))} voxels")
    if nifti and path.name.lower().endswith((".nii", ".nii.gz")):  # single-file NIfTI: header and voxels
        _check_nifti_length(path, reader, size, error, what)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise error(f"{path}: cannot read the {what}'s data ({_itk_reason(exc)}); the file may be truncated: "
                    "re-export it") from None


def _itk_reason(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _check_nifti_length(path: Path, reader: Any, size: list[int], error: type[VoxelDoseError], what: str) -> None:
    """A NIfTI file must hold vox_offset + voxels x bitpix / 8 bytes (decompressed for .nii.gz)."""
    import gzip
    import zlib

    try:
        needed = int(float(reader.GetMetaData("vox_offset"))) + math.prod(size) * reader.GetNumberOfComponents() * (
            int(reader.GetMetaData("bitpix")) // 8)
    except ValueError:
        raise error(f"{path}: the NIfTI header's vox_offset or bitpix is not a number; re-export the file") from None
    if path.name.lower().endswith(".gz"):
        length = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    length += len(chunk)
        except (EOFError, OSError, zlib.error) as exc:
            raise error(f"{path}: the compressed {what} is cut short or damaged ({exc}); copy or re-export "
                        "it") from None
    else:
        length = path.stat().st_size
    if length != needed:  # more bytes than described: a wrong dim or datatype, read sheared
        raise error(f"{path}: the {what} holds {length:,} bytes but its header describes {needed:,} (vox_offset + "
                    f"voxels x bitpix / 8): {'the file is truncated' if length < needed else 'a wrong dim or datatype'}; "
                    "copy or re-export it")


def _nifti_header(path: Path, error: type[VoxelDoseError], what: str) -> dict[str, list[float]]:
    """pixdim[1..3] and scl_slope, scl_inter as written in a NIfTI-1 (348-byte header: float32
    at bytes 80 and 112) or NIfTI-2 file (540-byte header: float64 at bytes 112 and 176), in
    either byte order. ITK reports what it substitutes, not what the file says."""
    import gzip
    import struct

    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
    except (EOFError, OSError) as exc:
        raise error(f"{path}: cannot read the {what}'s NIfTI header ({exc}); copy or re-export it") from None
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(f"{order}i", head, 0)[0] == 348:
            return {"pixdim": list(struct.unpack_from(f"{order}3f", head, 80)),
                    "scaling": list(struct.unpack_from(f"{order}2f", head, 112)),
                    "vox_offset": [struct.unpack_from(f"{order}f", head, 108)[0], 352.0]}
        if len(head) >= 540 and struct.unpack_from(f"{order}i", head, 0)[0] == 540:
            return {"pixdim": list(struct.unpack_from(f"{order}3d", head, 112)),
                    "scaling": list(struct.unpack_from(f"{order}2d", head, 176)),
                    "vox_offset": [float(struct.unpack_from(f"{order}q", head, 168)[0]), 544.0]}
    raise error(f"{path}: the {what}'s NIfTI header does not start with its size (348 or 540 bytes); the file is damaged")


def nifti_scaling(path: Path, error: type[VoxelDoseError], what: str) -> tuple[float, float] | None:
    """(scl_slope, scl_inter) of a NIfTI file, or None for other formats."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    slope, inter = _nifti_header(path, error, what)["scaling"]
    return float(slope), float(inter)

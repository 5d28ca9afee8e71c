"""The CT of a case, on the scan's grid: the anatomy under the dose, and the tissue densities.

:func:`load_ct` reads a CT (a DICOM series, or a NIfTI/NRRD/MetaImage file in HU), checks that it
is a CT in the scan's frame of reference and covers the scan, and resamples it onto the scan's
grid by world coordinates (trilinear, SimpleITK; air, -1000 HU, outside the CT): what the report
draws the dose over. :func:`load_ct_density` reads it once and gives that and the mass density on
the scan's grid (:mod:`voxeldose.density`: the HU-to-density table at the CT's resolution, then
the mass-conserving average over each scan voxel). :func:`load_hu_table` reads a scanner's own
HU-to-density calibration.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

import warnings

from ..density import AIR_DENSITY_G_PER_CM3 as AIR_DENSITY
from ..density import MIN_VOXEL_COVERAGE, SCHNEIDER2000, HuDensityTable, density_on_grid
from ..errors import GeometryError, InputError, VoxelDoseWarning
from ..image import Image
from ._sitk import to_sitk
from .dicom import load_image

__all__ = ["load_ct", "resample_ct", "load_ct_density", "ct_density", "load_hu_table"]

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


def _check_ct(ct: Image, reference: Image, registered: bool, where: str) -> None:
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


def resample_ct(ct: Image, reference: Image, *, registered: bool = False, where: str = "the CT") -> Image:
    """``ct`` resampled onto ``reference``'s grid, checked as :func:`load_ct` says."""
    import SimpleITK as sitk

    _check_ct(ct, reference, registered, where)
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


def load_ct_density(path: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]", reference: Image, *,
                    table: HuDensityTable = SCHNEIDER2000, series_uid: str | None = None,
                    registered: bool = False) -> tuple[Image, Image]:
    """The CT at ``path`` on ``reference``'s grid (as :func:`load_ct`) and its mass density there
    (:func:`ct_density`), from one reading of the CT."""
    ct = load_image(path, series_uid)
    display = resample_ct(ct, reference, registered=registered, where=str(path))
    return display, ct_density(ct, reference, table=table, registered=registered, where=str(path))


def ct_density(ct: Image, reference: Image, *, table: HuDensityTable = SCHNEIDER2000, registered: bool = False,
               where: str = "the CT") -> Image:
    """Mass density (g/cm3, units "G/CM3") on ``reference``'s grid from ``ct`` (HU, its own grid).

    Each CT voxel's HU becomes a density by ``table``; each scan voxel gets the volume-weighted
    mean density of the CT voxels inside it (:func:`voxeldose.density.density_on_grid`). A CT
    whose axes differ from the scan's is first resampled (nearest neighbour, at its own voxel
    size) onto the scan's axes. ``meta.extra`` records the table, the CT's coverage of the grid
    and the voxels outside the CT (air; ``meta.extra["outside_ct"]``, a boolean [z, y, x] array)
    or above the table's last point (metal?).
    """
    import SimpleITK as sitk

    _check_ct(ct, reference, registered, where)
    hu = np.asarray(ct.array)
    above = int(np.count_nonzero(hu > table.hu[-1]))
    if above:
        warnings.warn(f"{where}: {above} CT voxel(s) above {table.hu[-1]:g} HU, the last point of the HU-to-density "
                      f"table (metal, or contrast?), get its density {table.density_g_per_cm3[-1]:g} g/cm3",
                      VoxelDoseWarning, stacklevel=2)
    native = ct.with_array(table.density(hu), units="G/CM3")
    if not np.allclose(np.reshape(ct.direction, (3, 3)), np.reshape(reference.direction, (3, 3)), atol=1e-4):
        # onto the scan's axes at the CT's own resolution, then the exact average below
        source = to_sitk(native)
        lo, hi = _world_bounds(ct)
        d = np.reshape(reference.direction, (3, 3))
        corners = d.T @ (np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                   for z in (lo[2], hi[2])]).T - np.reshape(reference.origin_mm, (3, 1)))
        step = min(ct.spacing_mm)
        start = corners.min(axis=1)
        size = [max(1, int(np.ceil((corners[a].max() - start[a]) / step - 1e-6))) for a in range(3)]
        origin = np.reshape(reference.origin_mm, 3) + d @ (start + 0.5 * step)  # the first voxel's centre
        grid = sitk.Image(size, sitk.sitkFloat32)
        grid.SetSpacing((step, step, step))
        grid.SetOrigin(tuple(float(v) for v in origin))
        grid.SetDirection(tuple(float(v) for v in reference.direction))
        out = sitk.Resample(source, grid, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0, sitk.sitkFloat32)
        arr = sitk.GetArrayFromImage(out)
        arr[arr < 0] = AIR_DENSITY  # outside the CT
        ox, oy, oz = (float(v) for v in origin)
        native = Image(arr, (step, step, step), (ox, oy, oz), reference.direction, "G/CM3", ct.meta)
    density, cover = density_on_grid(native, reference)
    outside = int(np.count_nonzero(cover < MIN_VOXEL_COVERAGE))
    extra = {"hu_table": table.source,
             "hu_table_points": [[h, r] for h, r in zip(table.hu, table.density_g_per_cm3)],
             "voxels_outside_ct": outside, "ct_voxels_above_table": above,
             # which voxels those are: their density is not known (the body outline leaves them out)
             "outside_ct": _read_only(cover < MIN_VOXEL_COVERAGE),
             "rule": "HU to density at the CT's resolution, then the volume-weighted mean over each scan voxel; "
                     f"voxels less than {MIN_VOXEL_COVERAGE:.0%} inside the CT are air ({AIR_DENSITY:g} g/cm3)"}
    meta = dataclasses.replace(reference.meta, extra=extra, series_instance_uid=ct.meta.series_instance_uid,
                               modality="CT")
    return Image(density.array, reference.spacing_mm, reference.origin_mm, reference.direction, "G/CM3", meta)


def _world_bounds(image: Image) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The smallest and largest world coordinates (mm) of ``image``'s voxel corners."""
    d = np.reshape(image.direction, (3, 3))
    n = np.array(image.shape[::-1], float)
    h = np.asarray(image.spacing_mm, float)
    pts = [np.reshape(image.origin_mm, 3) + d @ (h * (np.array(c) - 0.5))
           for c in [(x, y, z) for x in (0, n[0]) for y in (0, n[1]) for z in (0, n[2])]]
    arr = np.array(pts)
    return arr.min(axis=0), arr.max(axis=0)


def load_hu_table(path: "str | os.PathLike[str]") -> HuDensityTable:
    """A HU-to-density calibration from a text file: two columns, HU and density in g/cm3,
    separated by a comma, tab or spaces, one point per line; lines starting with ``#`` and a
    header line (``hu,density_g_per_cm3``) are skipped.

    Raises
    ------
    InputError
        The file cannot be read, a line is not two numbers, or the table is not a CT calibration
        (:class:`voxeldose.density.HuDensityTable` says why).
    """
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the HU-to-density table {p}: {exc}") from exc
    hu: list[float] = []
    rho: list[float] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.replace(",", " ").replace(";", " ").split()
        if len(fields) != 2:
            raise InputError(f"{p}, line {number}: expected two values (HU, density in g/cm3), got {text!r}")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not hu:  # a header line
                continue
            raise InputError(f"{p}, line {number}: {text!r} is not two numbers (HU, density in g/cm3)") from None
        hu.append(values[0])
        rho.append(values[1])
    return HuDensityTable(tuple(hu), tuple(rho), source=f"user table {os.path.basename(p)}")


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a

"""Tissue density from CT: the HU-to-density calibration, the density on the scan's grid, the body.

The dose methods that use the tissue (:func:`voxeldose.absorbed_dose` with ``density=``) need the
mass density of every voxel of the emission scan. It comes from the CT of the PET/CT or SPECT/CT:

1. :class:`HuDensityTable` turns CT numbers into mass density by linear interpolation between
   calibration points. The default, :data:`SCHNEIDER2000`, is the calibration of Schneider,
   Bortfeld and Schlegel (2000), as tabulated for Monte Carlo dose engines (GATE's
   ``Schneider2000DensitiesTable.txt``, the Geant4 DICOM example's ``CT2Density.dat``): air at
   -1000 HU, lung and adipose to -98 HU, soft tissue to 100 HU, then bone to 2.8 g/cm3 at 3000 HU.
   A scanner's own calibration (CT numbers of a density phantom) replaces it:
   :func:`voxeldose.io.load_hu_table`.
2. :func:`density_on_grid` averages the CT's densities over each emission voxel, weighted by the
   volume of each CT voxel inside it: the emission voxel's mass is the mass of the CT it covers.
   The CT is converted to density first, at its own resolution, because the calibration is not
   linear (averaging HU would give lung-soft tissue boundary voxels the wrong mass).
3. :func:`body_mask` is the patient: the largest connected region denser than 0.5 g/cm3
   (about -500 HU), with the holes inside each axial slice (lungs, bowel gas) filled.

References
----------
.. [Schneider2000] Schneider W, Bortfeld T, Schlegel W. "Correlation between CT numbers and
   tissue parameters needed for Monte Carlo simulations of clinical dose distributions." Phys
   Med Biol 45:459-478, 2000. doi:10.1088/0031-9155/45/2/314
.. [GATE] Sarrut D et al. "A review of the use and potential of the GATE Monte Carlo simulation
   code for radiation therapy and dosimetry applications." Med Phys 41:064301, 2014
   (``Schneider2000DensitiesTable.txt`` ships with GATE's examples).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import check_number
from .errors import GeometryError, InputError
from .image import Image

__all__ = [
    "HuDensityTable",
    "SCHNEIDER2000",
    "AIR_DENSITY_G_PER_CM3",
    "BODY_THRESHOLD_G_PER_CM3",
    "MIN_VOXEL_COVERAGE",
    "density_on_grid",
    "body_mask",
]

#: Density of air (g/cm3) at -1000 HU in :data:`SCHNEIDER2000`; also given to the voxels of the
#: scan that the CT does not cover (outside the CT is outside the patient: :func:`body_mask`).
AIR_DENSITY_G_PER_CM3 = 1.21e-3

#: A voxel denser than this (g/cm3; about -500 HU) is tissue when the body outline is drawn;
#: a voxel half tissue and half air is ~0.52.
BODY_THRESHOLD_G_PER_CM3 = 0.5

#: An emission voxel less than this fraction inside the CT has no density from it (air).
MIN_VOXEL_COVERAGE = 0.5


@dataclass(frozen=True)
class HuDensityTable:
    """A CT calibration: mass density (g/cm3) at CT numbers (HU), interpolated linearly between
    the points and held constant beyond the first and the last.

    Attributes
    ----------
    hu : tuple of float
        CT numbers, strictly increasing.
    density_g_per_cm3 : tuple of float
        Mass density at each, positive.
    source : str
        Where the table comes from (for the provenance).
    """

    hu: tuple[float, ...]
    density_g_per_cm3: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        where = f"HU-to-density table ({self.source})"
        hu = tuple(check_number(v, f"{where}: HU") for v in self.hu)
        rho = tuple(check_number(v, f"{where}: density", "g/cm3") for v in self.density_g_per_cm3)
        if len(hu) != len(rho) or len(hu) < 2:
            raise InputError(f"{where}: needs at least two (HU, density) points with one density per HU value, got "
                             f"{len(hu)} HU values and {len(rho)} densities")
        steps = np.diff(hu)
        if np.any(steps <= 0):
            i = int(np.flatnonzero(steps <= 0)[0])
            raise InputError(f"{where}: the HU values must increase strictly, but {hu[i]:g} is followed by "
                             f"{hu[i + 1]:g}; sort the points and remove duplicates")
        if min(rho) <= 0 or max(rho) > 25:
            raise InputError(f"{where}: densities must be in g/cm3 (water 1.0): got {min(rho):g} to {max(rho):g}")
        if not (hu[0] <= 0 <= hu[-1]):
            raise InputError(f"{where}: the table covers {hu[0]:g} to {hu[-1]:g} HU, not water (0 HU): is it in HU?")
        water = float(np.interp(0.0, hu, rho))
        if not 0.9 <= water <= 1.1:
            raise InputError(f"{where}: water (0 HU) gets {water:.3g} g/cm3; a CT calibration gives it ~1.0. Are the "
                             "columns swapped, or the density in other units?")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "density_g_per_cm3", rho)

    def density(self, hu: ArrayLike) -> NDArray[np.float32]:
        """Mass density (g/cm3, float32) of CT numbers ``hu``."""
        arr = np.asarray(hu, dtype=np.float64)
        return np.interp(arr, self.hu, self.density_g_per_cm3).astype(np.float32)


#: Schneider et al. 2000 [Schneider2000]_, the points of GATE's ``Schneider2000DensitiesTable.txt``
#: [GATE]_: -1000 HU air, -98 adipose, 14-23 soft tissue, 100/101 the step from soft tissue to the
#: bone line, 1600 cortical bone, 3000 the end of the bone line.
SCHNEIDER2000 = HuDensityTable(
    hu=(-1000.0, -98.0, -97.0, 14.0, 23.0, 100.0, 101.0, 1600.0, 3000.0),
    density_g_per_cm3=(1.21e-3, 0.93, 0.930486, 1.03, 1.031, 1.1199, 1.0762, 1.9642, 2.8),
    source="Schneider et al. 2000, Phys Med Biol 45:459 (GATE Schneider2000DensitiesTable.txt)",
)


def _overlap(n_ref: int, ref_lo: float, ref_step: float, n_ct: int, ct_lo: float, ct_step: float) -> "np.ndarray":
    """``W[i, j]``: the fraction of reference voxel ``i`` (along one axis) inside CT voxel ``j``.

    ``*_lo`` is the position of the first voxel's centre and ``*_step`` the (positive) spacing,
    both along the reference's axis, in mm.
    """
    from scipy import sparse

    r0 = ref_lo - 0.5 * ref_step + ref_step * np.arange(n_ref)
    c0 = ct_lo - 0.5 * ct_step + ct_step * np.arange(n_ct)
    rows, cols, vals = [], [], []
    for i in range(n_ref):
        a, b = r0[i], r0[i] + ref_step
        j_lo = max(0, int(np.floor((a - c0[0]) / ct_step)))
        j_hi = min(n_ct, int(np.ceil((b - c0[0]) / ct_step)) + 1)
        for j in range(j_lo, j_hi):
            w = min(b, c0[j] + ct_step) - max(a, c0[j])
            if w > 0:
                rows.append(i)
                cols.append(j)
                vals.append(w / ref_step)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_ref, n_ct))


def density_on_grid(ct_density: Image, reference: Image) -> tuple[Image, NDArray[np.float32]]:
    """The density of ``ct_density`` (g/cm3, the CT's own grid) averaged over each voxel of
    ``reference``, weighted by the volume of each CT voxel inside it (mass-conserving).

    The two grids must share their axes (the same direction matrix, as a PET/CT's or SPECT/CT's
    do); :func:`voxeldose.io.load_ct_density` first resamples a CT whose axes differ. The average
    over the part of a voxel the CT covers is its density; a voxel less than
    :data:`MIN_VOXEL_COVERAGE` inside the CT gets :data:`AIR_DENSITY_G_PER_CM3`.

    Returns
    -------
    density : Image
        g/cm3 (units "G/CM3", float32) on ``reference``'s grid.
    coverage : ndarray, float32, [z, y, x]
        The fraction of each voxel inside the CT.

    Raises
    ------
    GeometryError
        The grids' directions differ.
    """
    if (ct_density.units or "").upper() != "G/CM3":
        raise InputError(f"density_on_grid needs a density image (units 'G/CM3'), got units {ct_density.units!r}")
    d_ct = np.asarray(ct_density.direction, float).reshape(3, 3)
    d_ref = np.asarray(reference.direction, float).reshape(3, 3)
    if not np.allclose(d_ct, d_ref, atol=1e-4):
        raise GeometryError("density_on_grid: the CT's axes differ from the scan's (direction matrices "
                            f"{tuple(np.round(d_ct.ravel(), 4))} and {tuple(np.round(d_ref.ravel(), 4))}); resample the "
                            "CT onto the scan's axes first (voxeldose.io.load_ct_density does)")
    # positions of both grids' first voxels along the reference's axes (mm)
    shift = d_ref.T @ (np.asarray(ct_density.origin_mm, float) - np.asarray(reference.origin_mm, float))
    weights = []
    coverage_axis = []
    for axis in range(3):  # x, y, z
        w = _overlap(reference.shape[2 - axis], 0.0, reference.spacing_mm[axis],
                     ct_density.shape[2 - axis], float(shift[axis]), ct_density.spacing_mm[axis])
        weights.append(w)
        coverage_axis.append(np.asarray(w.sum(axis=1)).ravel())
    wx, wy, wz = weights
    a = np.asarray(ct_density.array, dtype=np.float32)  # [z, y, x]
    a = _apply(wz, _apply(wy, _apply(wx, a, 2), 1), 0).astype(np.float64)
    cover = (coverage_axis[2][:, None, None] * coverage_axis[1][None, :, None]
             * coverage_axis[0][None, None, :]).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(cover >= MIN_VOXEL_COVERAGE, a / np.maximum(cover, 1e-12), AIR_DENSITY_G_PER_CM3)
    meta = reference.meta
    return Image(rho.astype(np.float32), reference.spacing_mm, reference.origin_mm, reference.direction, "G/CM3",
                 meta), cover


def _apply(w: "np.ndarray", a: NDArray[np.floating], axis: int) -> NDArray[np.floating]:
    """``w`` (sparse, [n_out, n_in]) applied along ``axis`` of ``a``."""
    moved = np.moveaxis(a, axis, 0)
    shape = moved.shape
    out = w @ moved.reshape(shape[0], -1)
    return np.moveaxis(np.asarray(out).reshape((w.shape[0], *shape[1:])), 0, axis)


def body_mask(density: Image, *, threshold_g_per_cm3: float = BODY_THRESHOLD_G_PER_CM3) -> Image:
    """The body outline (units "MASK", 0/1) of a density map: the largest connected region
    denser than ``threshold_g_per_cm3``, with the holes of each axial slice (lungs, gas) filled.

    Raises
    ------
    InputError
        No voxel is denser than the threshold (not a density map of a patient).
    """
    from scipy import ndimage

    rho = np.asarray(density.array)
    tissue = rho > threshold_g_per_cm3
    labels, n = ndimage.label(tissue)
    if n == 0:
        raise InputError(f"no voxel of the density map is denser than {threshold_g_per_cm3:g} g/cm3: there is no body "
                         "in it (is the CT of this patient, in HU?)")
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == (int(np.argmax(sizes)) + 1)
    body = _fill_holes(body, per_slice=True)
    body = _fill_holes(body, per_slice=False)
    return density.with_array(body.astype(np.float32), units="MASK")


def _fill_holes(mask: NDArray[np.bool_], *, per_slice: bool) -> NDArray[np.bool_]:
    """``scipy.ndimage.binary_fill_holes`` of ``mask`` [z, y, x] (of each axial slice with
    ``per_slice``), the same voxels: the background is the part of the complement connected to
    the array's border through face neighbours (in-plane with ``per_slice``); everything else
    is filled. One labelling of the complement instead of binary_fill_holes's iterated
    dilations (one per axial slice: ~0.3 s on a 148-slice grid)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 1)
    if per_slice:
        structure[0] = structure[2] = False  # no neighbour across slices
    labels, n = ndimage.label(~mask, structure=structure)
    if n == 0:
        return mask.copy()
    faces = [labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]]
    if not per_slice:
        faces += [labels[0], labels[-1]]
    outside = np.zeros(n + 1, np.bool_)
    for face in faces:
        outside[face] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[labels]

"""Absorbed dose from a permanent Y-90 implant: local deposition or voxel S-value convolution.

The activity map holds the activity in each voxel at the time of administration (MBq). Y-90
microspheres do not wash out, so the number of decays in a voxel is A0 x T1/2 / ln 2 and the
dose is that number times the dose per decay.

* ``method="local"``: every decay's energy (0.9331 MeV, ICRP-107) stays in its voxel, soft tissue
  1.04 g/cm^3: D = A0 x T1/2/ln2 x E / (rho V) (47.86 Gy per MBq/mL: :func:`local_deposition_gy_per_mbq`).
* ``method="kernel"``: D = (A0 * S) x T1/2/ln2, the 3-D convolution with the voxel S-value
  kernel of :func:`voxeldose.y90_kernel` at the image spacing (MIRD Pamphlet 17 [Bolch1999]).
  Two implementations, chosen automatically by their estimated cost or forced with ``engine``:
  ``"direct"``, a numba-parallel sum over the voxels that hold activity (exact, float64
  accumulation; fast for sparse activity and small kernels), and ``"fft"``, a float32 FFT
  convolution (scipy.fft, all cores, fast lengths, cached kernel transform). Both work only on
  the bounding box of the activity plus the kernel's reach; they agree to float32 rounding
  (tests: max difference below 1e-5 of the maximum dose).
* ``method="scaled_kernel"``: the kernel between each source and target voxel is that of a uniform
  medium at the mean density along the path between them, by the scaling theorem
  [OConnor1957]: ``S_rho(h) = (rho/rho0)^2 S_rho0(h rho/rho0)``. Needs a density map
  (:mod:`voxeldose._scaled_kernel` has the algorithm and its brute-force reference).

With a density map (``density=``, g/cm^3, e.g. :func:`voxeldose.io.load_ct_density`), every
method uses each voxel's own density: ``local`` deposits E / (rho V) per decay, ``kernel`` is the
soft-tissue kernel's dose times rho_soft / rho (the "soft-tissue kernel with density correction"
of Mikell et al. 2015: the same energy over the voxel's real mass), ``scaled_kernel`` scales the
kernel by the density along each path. With a body mask (``body=``), voxels outside the body
get no dose (air is not tissue) and the scaled kernel's paths end there.

References
----------
.. [Bolch1999] Bolch WE et al. MIRD Pamphlet No. 17. J Nucl Med 40:11S-36S, 1999.
.. [ICRP107] ICRP Publication 107, Ann ICRP 38(3), 2008. doi:10.1016/j.icrp.2008.10.004
.. [OConnor1957] O'Connor JE. Phys Med Biol 1:352-369, 1957. doi:10.1088/0031-9155/1/4/305
.. [Mikell2015] Mikell JK, Mahvash A, Siman W, Mourtada F, Kappadath SC. "Comparing voxel-based
   absorbed dosimetry methods in tumors, liver, lung, and at the liver-lung interface for 90Y
   microsphere selective internal radiation therapy." EJNMMI Phys 2:16, 2015.
   doi:10.1186/s40658-015-0119-y
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal, Sequence

import numpy as np
from numpy.typing import NDArray

from . import constants as C
from ._checks import check_positive, check_spacing, inspect_volume
from .errors import InputError
from .image import Image
from .kernels import TISSUES, Tissue, VsvTables, y90_kernel

__all__ = ["absorbed_dose", "absorbed_dose_array", "local_deposition_gy_per_mbq", "convolve_direct", "convolve_fft",
           "METHODS", "MIN_DENSITY_G_PER_CM3", "MAX_DENSITY_G_PER_CM3"]

logger = logging.getLogger(__name__)

Method = Literal["kernel", "local", "scaled_kernel"]
Engine = Literal["auto", "direct", "fft"]

#: The dose methods, with what each one is (for outputs and provenance).
METHODS: dict[str, str] = {
    "local": "local deposition: each decay's energy in its own voxel",
    "kernel": "soft-tissue voxel S-value kernel (with a density map: times 1.04 / density, the same energy over "
              "each voxel's mass)",
    "scaled_kernel": "density-scaled kernel: the kernel of the mean density along each source-target path "
                     "(scaling theorem)",
}

#: Densities outside these bounds (g/cm3) are refused: below, not matter (air is 0.0012); above,
#: a unit mistake (kg/m3 or mg/cm3 given as g/cm3; the densest tissue, tooth enamel, is ~3).
MIN_DENSITY_G_PER_CM3 = 1e-4
MAX_DENSITY_G_PER_CM3 = 25.0

# Cost model for the automatic engine choice, in seconds per unit of work, measured on the
# 2-core development machine (benchmarks/bench_dose.py prints the figures behind them): the
# direct sum costs per (active voxel x kernel element), the FFT per padded element and log2.
_DIRECT_S_PER_MAC = 1.0e-9
_FFT_S_PER_ELEMENT_LOG = 1.5e-10


def local_deposition_gy_per_mbq(mass_g: float) -> float:
    """Dose (Gy) in ``mass_g`` grams of tissue that keep all the energy of 1 MBq of Y-90
    administered into them, over the whole decay (permanent implant).

    ``E x T1/2/ln2 x 1 MBq / m`` with the ICRP-107 mean energy and half-life
    (:data:`voxeldose.constants.Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ`, 49.77 Gy kg/GBq). The one
    local-deposition factor of voxeldose: the ``local`` dose method, the phantoms' truth and the
    tests use it.

    Example
    -------
    >>> round(local_deposition_gy_per_mbq(1.04), 2)  # 1 MBq in 1 mL of soft tissue
    47.86
    """
    return C.Y90_DOSE_PER_ACTIVITY_GY_KG_PER_GBQ / check_positive(mass_g, "mass_g", "g")


def absorbed_dose(
    activity: Image,
    *,
    method: Method = "kernel",
    tissue: Tissue = "soft",
    engine: Engine = "auto",
    kernel_tables: VsvTables | None = None,
    density: Image | None = None,
    body: Image | None = None,
) -> Image:
    """Total absorbed dose of a permanent Y-90 implant, as an image on the activity's grid.

    Parameters
    ----------
    activity : Image
        Activity in each voxel at the time of administration (``units="MBQ"``, e.g. from
        :func:`voxeldose.calibrate`). Negative voxels (noise in a reconstruction) are kept and
        reported with a ``VoxelDoseWarning``.
    method : {"kernel", "local", "scaled_kernel"}
        Voxel S-value convolution, local energy deposition, or the density-scaled kernel (needs
        ``density``); module docstring.
    tissue : {"soft", "bone"}
        Medium of the kernel / of the local-deposition mass, without a density map.
    engine : {"auto", "direct", "fft"}
        Convolution implementation for ``method="kernel"``.
    kernel_tables : VsvTables, optional
        Published voxel S-value tables to use at their sizes (:func:`voxeldose.y90_kernel`).
    density : Image, optional
        Mass density (g/cm^3, units "G/CM3") on the activity's grid, e.g. from a CT
        (:func:`voxeldose.io.load_ct_density`).
    body : Image, optional
        Body mask (units "MASK") on the activity's grid: no dose outside it.

    Returns
    -------
    Image
        Absorbed dose (Gy, float32) from administration to complete decay, ``units="GY"``, on the
        activity's grid and with its metadata (frame of reference, identifiers).

    Raises
    ------
    InputError
        ``activity`` is not an Image in MBq (a bare array: use :func:`absorbed_dose_array`), NaN
        or infinite activity, unknown method or engine, a density map that is not one (units,
        grid, values), ``scaled_kernel`` without a density map.

    Examples
    --------
    >>> import numpy as np, voxeldose
    >>> a = np.zeros((9, 9, 9)); a[4, 4, 4] = 1.0
    >>> d = voxeldose.absorbed_dose(voxeldose.Image(a, (4.42, 4.42, 4.42), units="MBQ"))
    >>> d.units, round(float(d.array[4, 4, 4]), 1)  # 0.688 mGy/(MBq s) x 332 900 s
    ('GY', 229.2)
    """
    if not isinstance(activity, Image):
        raise InputError(
            f"absorbed_dose takes the activity as a voxeldose Image (MBq per voxel, with its geometry), got "
            f"{type(activity).__name__}; for a bare array use absorbed_dose_array(activity_mbq, spacing_xyz_mm=...)"
        )
    if activity.units.upper() != "MBQ":
        raise InputError(
            f"absorbed_dose needs activity in MBq per voxel at administration (units 'MBQ'), got an image in "
            f"{activity.units or 'no units'!r}; calibrate it first (voxeldose.calibrate), or build the Image "
            "with units='MBQ' if its values already are that"
        )
    rho = body_mask = None
    if density is not None:
        if not isinstance(density, Image) or density.units.upper() != "G/CM3" or not density.same_grid(activity):
            raise InputError("absorbed_dose: density must be an Image in g/cm3 (units 'G/CM3') on the activity's grid; "
                             "make it with voxeldose.io.load_ct_density(path, activity)")
        rho = density.array
    if body is not None:
        if not isinstance(body, Image) or body.units != "MASK" or not body.same_grid(activity):
            raise InputError("absorbed_dose: body must be a mask Image (units 'MASK') on the activity's grid; "
                             "make it with voxeldose.density.body_mask(density)")
        body_mask = body.array > 0.5
    dose = absorbed_dose_array(activity.array, spacing_xyz_mm=activity.spacing_mm, method=method, tissue=tissue,
                               engine=engine, kernel_tables=kernel_tables, density=rho, body=body_mask)
    return activity.with_array(dose, units="GY")


def absorbed_dose_array(
    activity_mbq: NDArray[np.floating],
    *,
    spacing_xyz_mm: Sequence[float],
    method: Method = "kernel",
    tissue: Tissue = "soft",
    engine: Engine = "auto",
    kernel_tables: VsvTables | None = None,
    density: "NDArray[np.floating] | None" = None,
    body: "NDArray[np.bool_] | None" = None,
) -> NDArray[np.float32]:
    """:func:`absorbed_dose` for a bare array: the dose (Gy, float32) on the same grid.

    Parameters
    ----------
    activity_mbq : ndarray, [z, y, x]
        Activity in each voxel at the time of administration, MBq.
    spacing_xyz_mm : (x, y, z), keyword-only
        Voxel size in mm, in ITK/DICOM order: the reverse of the array's axes. Keyword-only and
        named so that a spacing written in array order cannot pass unnoticed.
    method, tissue, engine, kernel_tables
        As in :func:`absorbed_dose`.
    density : ndarray, [z, y, x], optional
        Mass density in g/cm^3, same shape as ``activity_mbq``.
    body : ndarray of bool, [z, y, x], optional
        True inside the body; the dose outside is 0.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((9, 9, 9)); a[4, 4, 4] = 1.0
    >>> round(float(absorbed_dose_array(a, spacing_xyz_mm=(4.42, 4.42, 4.42))[4, 4, 4]), 1)
    229.2
    """
    info = inspect_volume(activity_mbq, name="activity_mbq")
    activity = info.array
    spacing = check_spacing(spacing_xyz_mm, name="spacing_xyz_mm")
    if tissue not in TISSUES:
        raise InputError(f"tissue must be one of {sorted(TISSUES)}, got {tissue!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if engine not in ("auto", "direct", "fft"):
        raise InputError(f"engine must be 'auto', 'direct' or 'fft', got {engine!r}")
    rho = None if density is None else _check_density(density, activity.shape)
    inside = None if body is None else _check_body(body, activity.shape)
    if rho is not None and tissue != "soft":
        raise InputError(f"tissue={tissue!r} names a uniform medium; with a density map each voxel's medium is its "
                         "density: leave tissue at 'soft' (the kernel's reference medium)")
    if method == "scaled_kernel":
        if rho is None:
            raise InputError("method 'scaled_kernel' scales the kernel by the density along each path and needs a "
                             "density map: pass density= (g/cm3, e.g. voxeldose.io.load_ct_density), or use "
                             "method 'kernel' or 'local'")
        if engine == "fft":
            raise InputError("method 'scaled_kernel' has no FFT engine (the kernel differs per path); use engine "
                             "'auto' or 'direct'")
        if kernel_tables is not None:
            raise InputError("method 'scaled_kernel' is built from the fitted point kernel at every density; "
                             "published tables (kernel_tables) apply to 'kernel' only")
        from ._scaled_kernel import scaled_kernel_dose

        if info.nonzero_lo is None:
            out = np.zeros(activity.shape, np.float32)
        else:
            out = scaled_kernel_dose(activity, rho, spacing[::-1], scale=C.Y90_MEAN_LIFE_S * 1e-3,
                                     ends=None if inside is None else ~inside)
        return _outside_body(out, inside)
    if method == "local":
        voxel_ml = spacing[0] * spacing[1] * spacing[2] * 1e-3
        if rho is None:
            out = (activity * local_deposition_gy_per_mbq(TISSUES[tissue][2] * voxel_ml)).astype(np.float32)
        else:
            out = (activity * local_deposition_gy_per_mbq(voxel_ml) / rho).astype(np.float32)
        return _outside_body(out, inside)
    kernel = y90_kernel(spacing, tissue, tables=kernel_tables)
    out = np.zeros(activity.shape, np.float32)
    if info.nonzero_lo is None or info.nonzero_hi is None:
        return out
    # mGy/s per MBq -> Gy for A0 in MBq: folded into the convolution (no extra pass)
    scale = C.Y90_MEAN_LIFE_S * 1e-3
    _convolve_into(
        out, activity, info.nonzero_lo, info.nonzero_hi, kernel,
        engine=engine, scale=scale, nonnegative=info.n_negative == 0, n_active=info.n_nonzero,
    )
    if rho is not None:  # the soft-tissue kernel's energy over each voxel's own mass
        out *= (C.SOFT_TISSUE_DENSITY_G_PER_CM3 / rho).astype(np.float32)
    return _outside_body(out, inside)


def _check_density(density: object, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """The density map as float64, checked: same shape, finite, within the bounds of matter."""
    arr = np.asarray(density)
    if arr.shape != shape:
        raise InputError(f"density must have the activity's shape {shape} ([z, y, x]), got {arr.shape}; resample it "
                         "onto the activity's grid (voxeldose.io.load_ct_density)")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"density must be numbers (g/cm3), got an array of {arr.dtype}")
    rho = arr.astype(np.float64)
    bad = ~np.isfinite(rho)
    if bad.any():
        raise InputError(f"density has {int(bad.sum())} NaN or infinite voxel(s), the first at [z, y, x] "
                         f"{tuple(int(i) for i in np.argwhere(bad)[0])}; every voxel needs a density")
    lo, hi = float(rho.min()), float(rho.max())
    if lo < MIN_DENSITY_G_PER_CM3 or hi > MAX_DENSITY_G_PER_CM3:
        raise InputError(
            f"density ranges from {lo:.4g} to {hi:.4g} g/cm3, outside [{MIN_DENSITY_G_PER_CM3:g}, "
            f"{MAX_DENSITY_G_PER_CM3:g}]: not g/cm3 (kg/m3, where water is 1000, or HU?). Give the density in "
            "g/cm3 (water 1.0, air 0.0012), e.g. from a CT by voxeldose.io.load_ct_density")
    return rho


def _check_body(body: object, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    arr = np.asarray(body)
    if arr.shape != shape:
        raise InputError(f"body must have the activity's shape {shape} ([z, y, x]), got {arr.shape}")
    if arr.dtype != np.bool_:
        raise InputError(f"body must be a boolean mask (True inside the body), got an array of {arr.dtype}")
    return arr


def _outside_body(dose: NDArray[np.float32], inside: NDArray[np.bool_] | None) -> NDArray[np.float32]:
    if inside is not None:
        dose[~inside] = 0.0
    return dose


def choose_engine(n_active: int, kernel_shape: Sequence[int], fft_shape: Sequence[int]) -> str:
    """The cheaper convolution engine by the cost model above."""
    direct = n_active * math.prod(kernel_shape) * _DIRECT_S_PER_MAC
    n = math.prod(fft_shape)
    fft = n * math.log2(max(n, 2)) * _FFT_S_PER_ELEMENT_LOG
    return "direct" if direct < fft else "fft"


def _convolve_into(
    out: NDArray[np.float32],
    activity: NDArray[np.floating],
    lo: Sequence[int],
    hi: Sequence[int],
    kernel: NDArray[np.float64],
    *,
    engine: str,
    scale: float,
    nonnegative: bool,
    n_active: int,
) -> None:
    """Write ``scale x (activity * kernel)`` on the activity's grid (the 'same' part of the full
    convolution) into ``out`` (zeros), computing over the activity's bounding box ``lo:hi`` only.
    ``n_active`` is the number of non-zero voxels (for the engine's cost model).
    """
    box = activity[tuple(slice(a, b) for a, b in zip(lo, hi))]
    half = [k // 2 for k in kernel.shape]
    full_shape = [b + k - 1 for b, k in zip(box.shape, kernel.shape)]
    if engine == "auto":
        engine = choose_engine(n_active, kernel.shape, _fft_shape(full_shape))
        logger.debug("convolution engine %s (%d active voxels, box %s)", engine, n_active, box.shape)
    if engine == "direct":
        full: NDArray[np.floating] = convolve_direct(box, kernel, scale=scale)
    else:
        full = convolve_fft(box, kernel, scale=scale)
    # full[i] corresponds to activity index lo - half + i; keep what lies inside the volume
    src, dst = [], []
    for axis, n in enumerate(activity.shape):
        start = lo[axis] - half[axis]
        a0, a1 = max(start, 0), min(start + full_shape[axis], n)
        dst.append(slice(a0, a1))
        src.append(slice(a0 - start, a1 - start))
    if engine == "fft" and nonnegative:
        # The exact convolution of a non-negative activity with the non-negative kernel is
        # non-negative; float32 FFT round-off (~1e-7 of the maximum) leaves small negative
        # values where there is no dose. Zeroing them can only reduce the error.
        np.maximum(full[tuple(src)], np.float32(0.0), out=out[tuple(dst)])
    else:
        out[tuple(dst)] = full[tuple(src)]  # float32 (direct path: rounded from float64)


def _bounding_box(mask: NDArray[np.bool_]) -> tuple[list[int], list[int]]:
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]) + 1)
    return lo, hi


def convolve_direct(
    activity: NDArray[np.floating], kernel: NDArray[np.floating], *, scale: float = 1.0
) -> NDArray[np.float64]:
    """Full linear convolution, times ``scale``, by a sum over the non-zero voxels (numba, float64).

    Returns an array of shape ``activity.shape + kernel.shape - 1``.
    """
    from ._loops import scatter_convolve

    z, y, x = np.nonzero(activity)  # C order: sorted by z
    a = np.ascontiguousarray(activity[z, y, x], dtype=np.float64)
    plane_start = np.searchsorted(z, np.arange(activity.shape[0] + 1)).astype(np.int64)
    out = np.zeros([n + k - 1 for n, k in zip(activity.shape, kernel.shape)])
    scatter_convolve(
        z.astype(np.int64), y.astype(np.int64), x.astype(np.int64), a, plane_start,
        np.ascontiguousarray(kernel, dtype=np.float64) * scale, out,
    )
    return out


def _threads() -> int:
    """Threads for the FFT: numba's thread count for the calling thread (all cores by default;
    ``numba.set_num_threads`` lowers it, e.g. one batch worker per core)."""
    import numba

    return int(numba.get_num_threads())


def _fft_shape(full_shape: Sequence[int]) -> tuple[int, ...]:
    from scipy import fft

    return tuple(fft.next_fast_len(int(n), real=True) for n in full_shape)


class _ByIdentity:
    """Cache key for an array: equal only to itself. The cache keeps the array alive, so its id
    cannot be reused while the entry exists."""

    __slots__ = ("array",)

    def __init__(self, array: NDArray[np.floating]) -> None:
        self.array = array

    def __hash__(self) -> int:
        return id(self.array)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.array is self.array


@functools.lru_cache(maxsize=4)
def _kernel_spectrum(kernel: _ByIdentity, fft_shape: tuple[int, ...], scale: float) -> NDArray[np.complex64]:
    from scipy import fft

    return fft.rfftn((kernel.array * scale).astype(np.float32), s=fft_shape, workers=_threads())


def convolve_fft(
    activity: NDArray[np.floating], kernel: NDArray[np.floating], *, scale: float = 1.0
) -> NDArray[np.float32]:
    """Full linear convolution, times ``scale``, by float32 real FFTs (scipy.fft, all cores).

    Returns an array of shape ``activity.shape + kernel.shape - 1``. The (scaled) kernel's
    transform is cached for repeated calls with the same read-only kernel and padded shape.
    """
    from scipy import fft

    full_shape = [n + k - 1 for n, k in zip(activity.shape, kernel.shape)]
    shape = _fft_shape(full_shape)
    spectrum = fft.rfftn(activity.astype(np.float32, copy=False), s=shape, workers=_threads())
    if kernel.flags.writeable:  # a mutable kernel could change under the cache
        spectrum *= fft.rfftn((kernel * scale).astype(np.float32), s=shape, workers=_threads())
    else:
        spectrum *= _kernel_spectrum(_ByIdentity(kernel), shape, float(scale))
    # Inverse in two steps: complex transforms along z and y in place, then the complex-to-real
    # transform along x of only the rows that hold the full convolution. Same result as
    # irfftn(spectrum, s=shape) to float32 rounding, about 1.5x faster (no copy of the spectrum;
    # benchmarks/bench_dose.py).
    spectrum = fft.ifftn(spectrum, axes=(0, 1), overwrite_x=True, workers=_threads())
    rows = spectrum[: full_shape[0], : full_shape[1]]
    result = fft.irfft(rows, n=shape[2], axis=2, workers=_threads())
    del spectrum, rows
    return result[:, :, : full_shape[2]]

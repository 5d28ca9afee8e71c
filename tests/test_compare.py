"""Predicted against delivered dose: common grid, transform, per-VOI differences, isodose overlap,
gamma (analytic cases and pymedphys), the writer and ``voxeldose compare``."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest

from voxeldose import Case, Image, ImageMeta, compare_doses, compute_case, phantoms
from voxeldose.cli import main
from voxeldose.compare import check_rigid, gamma_index, isodose_overlap, to_common_grid
from voxeldose.errors import GeometryError, InputError
from voxeldose.io import load_transform, write_comparison, write_nifti, write_result
from voxeldose.io.comparison import COMPARISON_FILES
from voxeldose.phantoms import ellipsoid_fraction


def _gaussian(shape_zyx, spacing_xyz, origin_xyz, centre_xyz, sigma_mm, peak_gy=100.0):
    """A Gaussian dose blob sampled at the voxel centres of an axis-aligned grid."""
    z, y, x = np.meshgrid(*[origin_xyz[a] + np.arange(shape_zyx[2 - a]) * spacing_xyz[a] for a in (2, 1, 0)],
                          indexing="ij")
    r2 = (x - centre_xyz[0]) ** 2 + (y - centre_xyz[1]) ** 2 + (z - centre_xyz[2]) ** 2
    return peak_gy * np.exp(-r2 / (2 * sigma_mm**2))


def _rotation_z(deg, t=(0.0, 0.0, 0.0)):
    a = math.radians(deg)
    m = np.eye(4)
    m[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    m[:3, 3] = t
    return m


# --------------------------------------------------------------------------- identical maps


def test_identical_maps_give_zero_differences_dice_one_and_full_gamma():
    blob = _gaussian((20, 22, 24), (3.0, 3.0, 3.0), (0, 0, 0), (35, 32, 30), 10.0).astype(np.float32)
    dose = Image(blob, (3.0, 3.0, 3.0), units="GY")  # float32, as a dose map is read
    core = np.zeros(dose.shape)
    core[5:15, 5:17, 6:18] = 1.0
    c = compare_doses(dose, dose, {"core": core, "all": np.ones(dose.shape)}, gamma=(3, 3))
    # same grid: the index map is the identity, so every voxel is read back exactly (float32 -> float64 -> float32)
    assert np.array_equal(c.predicted.array, dose.array)
    assert not c.difference.array.any() and not c.outside_fov.any()
    for v in c.vois.values():
        assert all(d == 0 for d in v.difference.values())
        assert all(r in (0.0, None) for r in v.relative_difference.values())
    assert [o.dice for o in c.isodose] == [1.0] * 9
    assert c.gamma is not None and c.gamma.pass_rate_pct == 100.0
    assert np.nanmax(c.gamma.gamma.array) == 0.0
    for name in ("core", "all"):
        np.testing.assert_array_equal(c.dvh_overlay.predicted[name], c.dvh_overlay.delivered[name])
    assert c.caveats == ()
    json.dumps(c.to_dict())  # JSON-able as it stands (no numpy scalars left)


# --------------------------------------------------------------------------- isodose overlap of shifted spheres


def _lens_dice(r, d):
    """Dice of two spheres of radius r whose centres are d apart: the lens volume over the sphere volume."""
    return 1 - 3 * d / (4 * r) + d**3 / (16 * r**3)


@pytest.mark.parametrize(("axis", "shift_mm"), [(0, 6.0), (2, 6.5)])
def test_shifted_uniform_spheres_overlap_as_the_lens_formula(axis, shift_mm):
    # two uniform-dose spheres (a step from 0 to 60 Gy, partial-volume voxels at the surface) of radius 12 mm
    # shifted by d along x (a whole number of voxels) or z (6.5 voxels: the voxel patterns differ)
    r, h = 12.0, 1.0
    shape = (40, 34, 34) if axis == 2 else (34, 34, 40)
    origin = (-16.5, -16.5, -16.5)
    c0 = np.zeros(3)
    c1 = np.zeros(3)
    c1[axis] = shift_mm
    frac = [ellipsoid_fraction(shape, (h, h, h), origin, c, (r, r, r)) for c in (c0, c1)]
    pred, deliv = (Image(60.0 * f, (h, h, h), origin, units="GY") for f in frac)
    overlaps = isodose_overlap(pred, deliv)
    for o in overlaps:
        # The region at level L is {voxel fraction >= L}: a voxelised sphere whose radius differs from r by up to
        # about (0.5 - L) voxels (measured: -0.37 to +0.37 mm). The truth is the lens of two spheres of the regions'
        # own mean volume (the two voxel patterns differ when the shift is not whole voxels: their volumes agree
        # within 1.2 %, measured); what remains is the staircase of the voxels along the lens' rim and the sphere's
        # surface, at 1/12 of r per voxel: measured within 0.0043 of that Dice at every level (of x, y and z
        # shifts); allowed 0.006.
        assert o.predicted_ml == pytest.approx(o.delivered_ml, rel=0.015)
        r_level = (3 * 0.5 * (o.predicted_ml + o.delivered_ml) * 1e3 / (4 * math.pi)) ** (1 / 3)
        assert o.dice == pytest.approx(_lens_dice(r_level, shift_mm), abs=0.006), o.level_pct
        # and the fixed-radius formula within the radius error: dDice/dr = 0.03 per mm, |r_L - r| < 0.4 mm, plus
        # the staircase: 0.02
        assert o.dice == pytest.approx(_lens_dice(r, shift_mm), abs=0.02)
    # 50 %: the surface itself (r_L - r = 0.07 mm): within the staircase's 0.006
    assert overlaps[4].dice == pytest.approx(_lens_dice(r, shift_mm), abs=0.006)


def test_isodose_reference_and_region():
    # a linear ramp 1..40 Gy along x in 1 mL voxels; the predicted dose is half of it: relative isodoses are the
    # same regions, a common reference (the delivered maximum) is not
    ramp = np.broadcast_to(np.arange(1.0, 41.0), (2, 3, 40))
    deliv = Image(ramp, (10.0, 10.0, 10.0), units="GY")
    pred = deliv.with_array(ramp * 0.5)
    assert all(o.dice == 1.0 for o in isodose_overlap(pred, deliv))
    common = isodose_overlap(pred, deliv, levels_pct=[25], reference="delivered")[0]
    # threshold 10 Gy for both: delivered >= 10 Gy at x = 10..40 (31 columns of 6 voxels); predicted at x = 20..40 (21)
    assert (common.predicted_ml, common.delivered_ml, common.overlap_ml) == (126.0, 186.0, 126.0)
    assert common.dice == pytest.approx(2 * 126 / (126 + 186))
    # a region: the maxima and the volumes within the first 20 columns (max 20 Gy, 10 Gy)
    region = np.zeros((2, 3, 40))
    region[:, :, :20] = 1.0
    o = isodose_overlap(pred, deliv, levels_pct=[50], region=region)[0]
    assert (o.delivered_threshold_gy, o.predicted_threshold_gy) == (10.0, 5.0)
    assert o.delivered_ml == o.predicted_ml == 66.0  # x = 10..20 of 20 columns: 11 columns x 6 voxels
    with pytest.raises(InputError, match="'own', 'delivered' or 'predicted'"):
        isodose_overlap(pred, deliv, reference="max")


# --------------------------------------------------------------------------- the transform


def test_a_rotated_and_shifted_dose_is_recovered_with_its_transform():
    # the planning map: a Gaussian blob (sigma 12 mm) on a 2.5 mm grid; the patient then moved by M (20 degrees
    # about z, and 15, -10, 5 mm): the post-treatment map is the same blob at M c, sampled on another grid (3 mm)
    m = _rotation_z(20.0, (15.0, -10.0, 5.0))
    centre = np.array([40.0, 45.0, 35.0])
    sigma = 12.0
    plan = Image(_gaussian((32, 40, 40), (2.5, 2.5, 2.5), (0, 0, 0), centre, sigma), (2.5, 2.5, 2.5), units="GY")
    moved = (m @ np.append(centre, 1.0))[:3]
    post = Image(_gaussian((30, 36, 36), (3.0, 3.0, 3.0), (-5, -5, 0), moved, sigma), (3.0, 3.0, 3.0),
                 (-5.0, -5.0, 0.0), units="GY")
    on_grid, outside = to_common_grid(plan, post, transform=m)
    err = np.abs(on_grid.array - post.array)[~outside]
    # trilinear interpolation error of a smooth field: at most h^2/8 x the sum of |d2f/dx_i^2| over the axes;
    # for a Gaussian, |d2f/dx^2| <= peak / sigma^2: 3 x 2.5^2 / 8 / 144 = 1.6 % of the peak
    assert err.max() < 0.016 * 100.0
    assert outside.any() and not outside[post.array > 1.0].any()  # the post grid reaches beyond, the blob not
    c = compare_doses(plan, post, {"blob": post.array > 50.0}, transform=m)
    # the same bound: trilinear interpolation lowers a peak by up to 1.6 % (measured 0.8 % on the mean above 50 %)
    assert abs(c.vois["blob"].relative_difference["mean_gy"]) < 0.016
    # the other direction (M^-1 instead of M) puts the blob 40 mm off: the documented direction is the one used
    wrong, _ = to_common_grid(plan, post, transform=np.linalg.inv(m))
    assert np.abs(wrong.array - post.array).max() > 50.0


def test_a_shift_of_whole_voxels_is_exact_and_outside_is_reported():
    blob = _gaussian((10, 10, 10), (2.0, 2.0, 2.0), (0, 0, 0), (9, 9, 9), 4.0).astype(np.float32)
    plan = Image(blob, (2.0, 2.0, 2.0), units="GY")
    m = np.eye(4)
    m[0, 3] = 4.0  # the patient moved 4 mm along x: plan voxel x is post voxel x + 2
    on_grid, outside = to_common_grid(plan, plan, transform=m)
    np.testing.assert_array_equal(on_grid.array[:, :, 2:], plan.array[:, :, :-2])
    # post voxels x = 0 and 1 (0 and 2 mm) are the plan's -4 and -2 mm: beyond its field (which ends at -1 mm)
    assert outside[:, :, :2].all() and not outside[:, :, 2:].any() and not on_grid.array[:, :, :2].any()
    # half a voxel (1 mm): post voxel 0 is the plan's -1 mm, its field's edge: inside, with the edge value
    m[0, 3] = 1.0
    on_grid, outside = to_common_grid(plan, plan, transform=m)
    assert not outside.any()
    np.testing.assert_array_equal(on_grid.array[:, :, 0], plan.array[:, :, 0])
    np.testing.assert_allclose(on_grid.array[:, :, 1], 0.5 * (plan.array[:, :, 0] + plan.array[:, :, 1]), rtol=1e-6)
    m[0, 3] = 4.0
    c = compare_doses(plan, plan, {"left": np.pad(np.ones((10, 10, 4)), ((0, 0), (0, 0), (0, 6)))}, transform=m)
    assert c.summary["field_of_view"]["fraction_of_voi_volume"]["left"] == 0.5
    assert any("'left': 50.0% of its volume lies outside" in text for text in c.caveats)


@pytest.mark.parametrize(("matrix", "words"), [
    (np.diag([1.01, 1, 1, 1]), "a scaling or shear"),
    (np.diag([-1.0, 1, 1, 1]), "a mirror (determinant -1)"),
    ([[1, 0.01, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "a scaling or shear"),
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.1, 1]], "not (0, 0, 0, 1)"),
    (np.eye(3), "4 x 4"),
])
def test_non_rigid_transforms_are_refused(matrix, words):
    with pytest.raises(GeometryError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_rigid(matrix)


def test_transform_files_text_and_json(tmp_path):
    m = _rotation_z(30.0, (1.5, -2.0, 3.0))
    text = tmp_path / "m.txt"
    text.write_text("# planning -> post, mm\n" + "\n".join(" ".join(f"{v:.17g}" for v in row) for row in m) + "\n")
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"matrix": m.tolist(), "comment": "from the registration"}))
    np.testing.assert_allclose(load_transform(text), m, atol=1e-15)
    np.testing.assert_allclose(load_transform(js), m, atol=1e-15)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(GeometryError, match="4 rows of 4 numbers"):
        load_transform(bad)
    bad.write_text('{"matrx": []}')
    with pytest.raises(InputError, match='"matrix" key'):
        load_transform(bad)


# --------------------------------------------------------------------------- gamma, analytic


@pytest.mark.parametrize(("offset_pct", "passes"), [(2.9, True), (3.1, False)])
def test_gamma_of_a_uniform_dose_offset(offset_pct, passes):
    # a uniform 50 Gy block and the same plus x % of it: every voxel's dose difference is x % of the maximum, and
    # no nearby point is closer (the evaluated dose is uniform, 0 outside its field), so gamma = x / 3 exactly
    ref = Image(np.full((6, 6, 6), 50.0), (3.0, 3.0, 3.0), units="GY")
    g = gamma_index(ref, ref.with_array(ref.array * (1 + offset_pct / 100)), dose_pct=3, dta_mm=3)
    assert g.pass_rate_pct == (100.0 if passes else 0.0)
    np.testing.assert_allclose(g.gamma.array, offset_pct / 3, rtol=1e-6)


def test_gamma_of_a_pure_shift_passes_at_a_dta_beyond_the_shift():
    # a smooth blob and the same blob 4 mm further along x (2 voxels): the point 4 mm away along +x matches
    # exactly (a grid node, on a search shell: 4 mm = 8 steps of 0.5 mm, and +x is among each shell's directions),
    # so gamma <= 4/5 with a DTA of 5 mm whatever the dose criterion; at a DTA of 2 mm and a 1 % criterion the
    # steep flanks fail
    spacing = (2.0, 2.0, 2.0)
    ref = Image(_gaussian((24, 24, 24), spacing, (0, 0, 0), (23, 23, 23), 6.0), spacing, units="GY")
    moved = ref.with_array(_gaussian((24, 24, 24), spacing, (0, 0, 0), (27, 23, 23), 6.0))
    passed = gamma_index(ref, moved, dose_pct=1, dta_mm=5)
    assert passed.pass_rate_pct == 100.0 and np.nanmax(passed.gamma.array) <= 0.8 + 1e-9
    failed = gamma_index(ref, moved, dose_pct=1, dta_mm=2)
    assert failed.pass_rate_pct < 60.0


def test_gamma_arguments_are_checked():
    ref = Image(np.full((3, 3, 3), 5.0), (2.0, 2.0, 2.0), units="GY")
    with pytest.raises(InputError, match="search radius"):
        gamma_index(ref, ref, dose_pct=3, dta_mm=3, search_radius_mm=2)
    with pytest.raises(InputError, match="distance to agreement"):
        gamma_index(ref, ref, dose_pct=3, dta_mm=0)
    with pytest.raises(InputError, match=r"\(dose %, DTA mm\)"):
        compare_doses(ref, ref, {}, gamma=(3,))


# --------------------------------------------------------------------------- gamma against pymedphys


def _smooth_random(rng, shape, sigma_voxels):
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.random(shape), sigma_voxels)
    f -= f.min()
    return 100.0 * f / f.max()


@pytest.mark.parametrize("case", ["smooth random", "shifted sphere"])
def test_gamma_agrees_with_pymedphys(case):
    pymedphys = pytest.importorskip("pymedphys", reason="pymedphys not installed (pip install '.[test]')")
    rng = np.random.default_rng(7)
    shape, spacing = (14, 16, 18), (2.0, 2.5, 3.0)  # [z, y, x]; (x, y, z) mm: anisotropic on purpose
    if case == "smooth random":
        ref_arr = _smooth_random(rng, shape, 2.0)
        eval_arr = 0.8 * ref_arr + 0.2 * _smooth_random(rng, shape, 2.0)
    else:  # a blurred sphere (radius 12 mm, 100 Gy) shifted by 4 mm along y: beyond the DTA where the edge is steep
        from scipy.ndimage import gaussian_filter

        frac = [ellipsoid_fraction(shape, spacing, (0, 0, 0), c, (12, 12, 12)) for c in ((17, 19, 21), (17, 23, 21))]
        ref_arr, eval_arr = (gaussian_filter(100.0 * f, 1.0) for f in frac)
    ref = Image(ref_arr, spacing, units="GY")
    ev = Image(eval_arr, spacing, units="GY")
    ours = gamma_index(ref, ev, dose_pct=3, dta_mm=3, cutoff_pct=10)
    axes = tuple(np.arange(n) * s for n, s in zip(shape, spacing[::-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pymedphys.gamma(axes, ref_arr, axes, eval_arr, 3, 3, lower_percent_dose_cutoff=10, max_gamma=2,
                                 interp_fraction=10)
    np.testing.assert_array_equal(np.isfinite(ours.gamma.array), np.isfinite(theirs))  # the same voxels evaluated
    # Near the grid's faces the two differ by design: voxeldose's evaluated dose reaches half a voxel beyond the
    # outermost voxel centres (the edge value: the field of view ends at the voxels' outer faces, as in ITK),
    # pymedphys's ends at the centres, so it finds fewer candidates there (gamma up to 0.14 higher, measured).
    # Compared: the voxels whose whole search sphere (2 x DTA = 6 mm) lies within the voxel centres.
    margin = [math.ceil(6.0 / s) for s in spacing[::-1]]
    inner = np.zeros(shape, bool)
    inner[tuple(slice(m, n - m) for m, n in zip(margin, shape))] = True
    evaluated = np.isfinite(theirs) & inner
    # Both search the minimum of the same function (trilinear interpolation of the evaluated dose) on shells
    # h = 0.3 mm apart, but on different points of each shell (pymedphys's rows of constant elevation, our
    # Fibonacci lattice). Each sampled value is a value of that function, so each finds the minimum from above,
    # within the covering radius of its points (about 0.8 h: h/2 radially, 0.6 h across) times the gradient of
    # gamma, sqrt(1/DTA^2 + |grad D|^2 / dD^2): the two differ by at most that bound, taken with the steepest
    # evaluated-dose gradient within two voxels (0.2 to 1.3 here). Measured: at most 0.09 of the bound, 0.092 in
    # gamma at the sphere's steep edge, 0.033 in the random fields, mean |difference| 0.002-0.003. Asserted: the
    # bound at every voxel, 0.15 at most, and 0.01 on average (no systematic difference).
    from scipy.ndimage import maximum_filter

    gradient = np.sqrt(sum(g**2 for g in np.gradient(eval_arr, *spacing[::-1])))
    bound = 0.8 * 0.3 * np.sqrt(1 / 3.0**2 + maximum_filter(gradient, size=5) ** 2 / 3.0**2)
    diff = np.abs(ours.gamma.array[evaluated] - theirs[evaluated])
    assert (diff <= bound[evaluated]).all()
    assert diff.max() < 0.15 and diff.mean() < 0.01
    borderline = 100.0 * np.mean(np.abs(theirs[evaluated] - 1.0) < 0.15)
    theirs_rate = 100.0 * np.mean(theirs[evaluated] <= 1.0)
    ours_rate = 100.0 * np.mean(ours.gamma.array[evaluated] <= 1.0)
    assert abs(ours_rate - theirs_rate) <= borderline + 1e-9
    assert 20.0 < theirs_rate < 99.0  # a case with both passing and failing voxels


# --------------------------------------------------------------------------- writing and the command line


def _result(folder, *, tumour_to_normal, case_id="tare-001", frame="1.2.826.0.1.3680043.10.1.1"):
    ph = phantoms.liver(spacing_xyz_mm=(8.84, 8.84, 8.84), tumour_to_normal=tumour_to_normal)
    activity = dataclasses.replace(ph.activity, meta=ImageMeta(frame_of_reference_uid=frame))
    vois = {k: activity.with_array(ph.masks[k], units="MASK") for k in ("liver", "tumour_1", "lung")}
    case = Case(case_id, administered_gbq=3.0, lung_shunt_fraction=0.1,
                voi_roles={"liver": "whole_liver", "tumour_1": "tumour", "lung": "lung"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_case(activity, vois, case)
        write_result(result, folder)
    return ph


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    _result(base / "plan", tumour_to_normal=3.0)  # the MAA predicted less uptake in the tumours than the PET shows
    ph = _result(base / "run", tumour_to_normal=4.0)
    grid = ph.activity
    vois = []
    for i, name in enumerate(("liver", "tumour_1"), 1):
        path = base / f"{name}.nii.gz"
        write_nifti(path, grid.with_array((ph.masks[name] >= 0.5).astype(np.float32), units=""))
        (base / f"{name}.json").write_text(json.dumps({"1": name}))
        vois.append(path)
    _result(base / "other", tumour_to_normal=4.0, case_id="tare-002")
    _result(base / "elsewhere", tumour_to_normal=3.0, frame="1.2.826.0.1.3680043.10.1.2")  # another scanner's frame
    return base, vois


def _voi_args(vois):
    return [a for v in vois for a in ("--voi", str(v))]


def test_compare_command_writes_every_output(folders, tmp_path, capsys):
    base, vois = folders
    out = tmp_path / "cmp"
    assert main(["-q", "compare", str(base / "plan"), str(base / "run"), *_voi_args(vois), "--out", str(out),
                 "--gamma", "5", "3", "--isodose-voi", "liver"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(COMPARISON_FILES)
    data = json.loads((out / "comparison.json").read_text())
    # the roles both runs recorded (liver whole_liver, tumour_1 tumour) derive the normal liver as run does
    assert set(data["vois"]) == {"liver", "tumour_1", "tumours", "normal_liver"}
    assert data["provenance"]["inputs"]["roles"]["normal_liver"] == "normal_liver"
    plan = json.loads((base / "plan" / "metrics.json").read_text())["vois"]
    run = json.loads((base / "run" / "metrics.json").read_text())["vois"]
    for name, tolerance in (("liver", 0.025), ("tumour_1", 0.05), ("normal_liver", 0.025)):
        v = data["vois"][name]
        # one grid, the same maps: each side's mean is its run's, within the VOI's rasterisation (the label map holds
        # the voxels at least half inside, the run had the partial-volume mask: at 8.84 mm voxels, 1.3 % of the
        # liver's mean, 3.3 % of the 65 mL tumour's, measured)
        assert v["predicted"]["mean_gy"] == pytest.approx(plan[name]["mean_gy"], rel=tolerance)
        assert v["delivered"]["mean_gy"] == pytest.approx(run[name]["mean_gy"], rel=tolerance)
        assert v["difference"]["mean_gy"] == pytest.approx(v["delivered"]["mean_gy"] - v["predicted"]["mean_gy"])
    assert data["vois"]["tumour_1"]["difference"]["mean_gy"] > 0  # T:N 4 delivered against 3 predicted
    assert data["isodose"]["region"] == "liver" and len(data["isodose"]["levels"]) == 9
    assert data["gamma"]["dose_pct"] == 5 and 0 < data["gamma"]["pass_rate_pct"] <= 100
    assert data["provenance"]["inputs"]["predicted"]["case_id"] == "tare-001"
    assert "p_post = M p_plan" in data["provenance"]["conventions"]["transform"]
    lines = (out / "dvh_overlay.csv").read_text().splitlines()
    assert lines[0] == "voi,dose_gy,predicted_volume_pct,delivered_volume_pct"
    assert lines[1].startswith("liver,0,100,100")
    assert (out / "isodose_overlap.csv").read_text().startswith("level_pct,predicted_threshold_gy")
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Dice" in page and "tumour_1" in page
    assert "tumour_1: Dmean predicted" in capsys.readouterr().out
    # a second run into the same folder needs --force; with it the comparison is replaced
    assert main(["-q", "compare", str(base / "plan"), str(base / "run"), *_voi_args(vois), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["-q", "compare", str(base / "plan"), str(base / "run"), *_voi_args(vois), "--out", str(out),
                 "--force"]) == 0
    assert not (out / "gamma.nii.gz").exists()  # no --gamma this time


def test_write_comparison_refuses_a_folder_of_other_files(folders, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    dose = Image(np.full((2, 2, 2), 3.0), (4.0, 4.0, 4.0), units="GY")
    with pytest.raises(InputError, match="did not write"):
        write_comparison(compare_doses(dose, dose, {}), out, force=True)
    assert (out / "notes.txt").read_text() == "keep me"


def _transform_file(tmp_path, matrix):
    path = tmp_path / "inputs" / "transform.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(" ".join(str(v) for v in row) for row in matrix))
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("missing", ["PREDICTED", "no such folder"]),
    ("not an output", ["is not an output folder of 'voxeldose run' or 'voxeldose plan'", "no dose.nii.gz"]),
    ("non-rigid", ["not rigid", "a scaling or shear"]),
    ("other case", ["case 'tare-001'", "case 'tare-002'", "--accept-different-cases"]),
    ("no voi", ["at least one --voi"]),
    ("other frame", ["frame of reference (1.2.826.0.1.3680043.10.1.2) differs", "--transform", "--registered"]),
])
def test_compare_bad_input_exits_2_and_writes_nothing(folders, tmp_path, capsys, kind, words):
    base, vois = folders
    predicted, delivered, extra = base / "plan", base / "run", []
    if kind == "missing":
        predicted = tmp_path / "nowhere"
    elif kind == "not an output":
        predicted = tmp_path / "inputs"
        predicted.mkdir()
        (predicted / "metrics.json").write_text("{}")
    elif kind == "non-rigid":
        extra = ["--transform", str(_transform_file(tmp_path, np.diag([1.05, 1.0, 1.0, 1.0])))]
    elif kind == "other case":
        predicted = base / "other"
    elif kind == "other frame":
        predicted = base / "elsewhere"
    voi_args = [] if kind == "no voi" else _voi_args(vois)
    out = tmp_path / "cmp"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["compare", str(predicted), str(delivered), *voi_args, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_compare_accepts_different_cases_when_told(folders, tmp_path):
    base, vois = folders
    out = tmp_path / "cmp"
    assert main(["-q", "compare", str(base / "other"), str(base / "run"), *_voi_args(vois), "--out", str(out),
                 "--accept-different-cases"]) == 0
    data = json.loads((out / "comparison.json").read_text())
    # the same activity (both T:N 4): the same dose, so no difference at all
    assert data["vois"]["tumour_1"]["difference"]["mean_gy"] == 0.0


def test_compare_accepts_another_frame_when_registered_or_given_a_transform(folders, tmp_path):
    base, vois = folders
    for i, extra in enumerate((["--registered"], ["--transform", str(_transform_file(tmp_path, np.eye(4)))])):
        out = tmp_path / f"cmp{i}"
        assert main(["-q", "compare", str(base / "elsewhere"), str(base / "run"), *_voi_args(vois), "--out", str(out),
                     *extra]) == 0
        data = json.loads((out / "comparison.json").read_text())
        assert data["transform"] == (None if i == 0 else np.eye(4).tolist())


def test_compare_roles_come_from_the_runs_and_the_command_line(folders, tmp_path, capsys):
    base, vois = folders
    # --voi-role over the recorded roles: the liver as a plain VOI derives nothing
    out = tmp_path / "a"
    assert main(["-q", "compare", str(base / "plan"), str(base / "run"), *_voi_args(vois), "--out", str(out),
                 "--voi-role", "liver=perfused"]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert set(data["vois"]) == {"liver", "tumour_1"}
    # two runs that give a VOI different roles: refused, naming both, until --voi-role says which
    other = base / "plan_roles"
    if not other.exists():
        import shutil

        shutil.copytree(base / "plan", other)
        m = json.loads((other / "metrics.json").read_text())
        m["roles"]["tumour_1"] = "normal_liver"
        (other / "metrics.json").write_text(json.dumps(m))
    out = tmp_path / "b"
    assert main(["-q", "compare", str(other), str(base / "run"), *_voi_args(vois), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'tumour_1': normal_liver in PREDICTED, tumour in DELIVERED" in err and "--voi-role" in err
    assert not out.exists()
    assert main(["-q", "compare", str(other), str(base / "run"), *_voi_args(vois), "--out", str(out),
                 "--voi-role", "tumour_1=tumour"]) == 0
    assert "normal_liver" in json.loads((out / "comparison.json").read_text())["vois"]

"""The grandmodel: counts, mask/list/potential agreement, non-overlap, determinism, rotation
convention, orientation samplers, crowding, parameter checks and cancellation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import affine_transform

from napari_shrec.core.classes import SHREC21_TABLE
from napari_shrec.core.grandmodel import (
    Grandmodel,
    GrandmodelParams,
    build_grandmodel,
    rotate_potential,
    rotated_footprint,
    sample_orientations,
)
from napari_shrec.core.progress import Cancelled, CancelToken
from napari_shrec.core.rotations import zxz_to_matrix
from napari_shrec.core.shape_metrics import shape_metrics
from napari_shrec.core.structures import StructureLibrary, StructureMap, StructureParams

CLASSES = ("1s3x", "3gl1", "1bxn", "4cr2")  # small, small, medium (hollow centre), large barrel
SMALL = GrandmodelParams(shape_zyx=(40, 96, 96), n_particles=(28, 32), seed=3, threads=2,
                         max_tries=2000)


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, StructureMap]:
    lib = StructureLibrary([], cache_dir=tmp_path_factory.mktemp("gm-cache"), download=False,
                           surrogates=True)
    return lib.build(CLASSES, StructureParams(voxel_size_nm=1.0), warn=False)


@pytest.fixture(scope="module")
def gm(maps) -> Grandmodel:
    return build_grandmodel(maps, SMALL)


def _bump_map(n: int, offset_xyz, sigma: float = 1.0, amplitude: float = 5.0) -> np.ndarray:
    """A Gaussian bump at ``centre + offset`` (x, y, z) in a cube of edge n, (z, y, x) order."""
    c = n // 2
    zz, yy, xx = np.indices((n, n, n), dtype=np.float64)
    dx, dy, dz = offset_xyz
    r2 = (xx - c - dx) ** 2 + (yy - c - dy) ** 2 + (zz - c - dz) ** 2
    return (amplitude * np.exp(-r2 / (2 * sigma**2))).astype(np.float32)


def _structure_map(name: str, potential: np.ndarray) -> StructureMap:
    return StructureMap(name, potential, 1.0, shape_metrics(potential, 1.0),
                        {"kind": "test", "surrogate": False})


def _asymmetric_map() -> np.ndarray:
    """A body with three arms of different lengths and a solid core (no symmetry)."""
    n = 17
    c = n // 2
    out = _bump_map(n, (0, 0, 0), sigma=1.6, amplitude=6.0)
    out += _bump_map(n, (5, 0, 0), sigma=1.0, amplitude=4.0)
    out += _bump_map(n, (0, 3, 0), sigma=1.0, amplitude=3.0)
    out += _bump_map(n, (1, 1, 4), sigma=1.2, amplitude=2.0)
    assert out[c, c, c] > 1
    return out


def _place(volume_shape, fp, centre_zyx):
    """(volume slices, footprint-box slices) of a footprint placed at a centre, cropped."""
    box, sub = [], []
    for axis in range(3):
        start = centre_zyx[axis] + fp.offset_zyx[axis]
        stop = start + fp.mask.shape[axis]
        a, b = max(start, 0), min(stop, volume_shape[axis])
        box.append(slice(a, b))
        sub.append(slice(a - start, b - start))
    return tuple(box), tuple(sub)


# ----------------------------------------------------------------------------- counts

def test_count_in_range_and_classes_near_equal(gm):
    report = gm.report
    assert 28 <= report.n_requested <= 32
    assert report.n_placed == report.n_requested == len(gm.particles)  # roomy volume: all fit
    assert report.not_fitted == []
    requested = [v["requested"] for v in report.per_class.values()]
    assert list(report.per_class) == list(CLASSES)
    assert sum(requested) == report.n_requested and max(requested) - min(requested) <= 1
    counts = gm.particles.class_counts()
    for name, entry in report.per_class.items():
        assert counts.get(name, 0) == entry["placed"]
    assert report.total_tries >= report.n_placed
    assert report.seed == 3 and report.orientation_sampler == "uniform"
    assert set(report.timings_s) >= {"rotations", "placement", "total"}


def test_masks_particles_and_potential_agree(gm, maps):
    shape = gm.shape_zyx
    thr = gm.params.support_threshold_v
    n = len(gm.particles)
    assert gm.potential.dtype == np.float32 and gm.potential_noisefree.dtype == np.float32
    assert gm.class_mask.dtype == np.uint8 and gm.occupancy_mask.dtype == np.int32
    assert gm.class_bbox.dtype == np.uint8 and gm.occupancy_bbox.dtype == np.int32
    assert all(a.shape == shape for a in (gm.potential, gm.potential_noisefree, gm.class_mask,
                                          gm.occupancy_mask, gm.class_bbox, gm.occupancy_bbox))
    assert gm.particles.voxel_size_nm == 1.0
    np.testing.assert_array_equal(np.unique(gm.occupancy_mask), np.arange(n + 1))
    coords = gm.particles.coords_xyz()
    np.testing.assert_array_equal(coords, np.round(coords))  # integer centres
    matrices = gm.particles.rotation_matrices()
    sizes = []
    for row, (name, (x, y, z), rot) in enumerate(
            zip(gm.particles.class_names, coords.astype(int), matrices), start=1):
        class_id = SHREC21_TABLE.by_name(name).id
        fp = rotated_footprint(maps[name].potential, rot, thr)
        sizes.append(fp.n_voxels)
        box, sub = _place(shape, fp, (z, y, x))
        # z: the whole footprint lies inside the volume; x, y: the centre does
        assert box[0].stop - box[0].start == fp.mask.shape[0]
        assert 0 <= x < shape[2] and 0 <= y < shape[1]
        mask = fp.mask[sub]
        # re-rasterising the rotated footprint hits only this particle's id: no overlap, and
        # the occupancy voxels of this id are exactly the (cropped) footprint
        assert (gm.occupancy_mask[box][mask] == row).all()
        assert int((gm.occupancy_mask == row).sum()) == int(mask.sum())
        assert (gm.class_mask[box][mask] == class_id).all()
        assert gm.occupancy_mask[z, y, x] == row and gm.class_mask[z, y, x] == class_id
        full = np.zeros(fp.mask.shape, np.float32)
        full[fp.mask] = fp.values
        np.testing.assert_array_equal(gm.potential_noisefree[box][mask], full[sub][mask])
        # bbox masks: this box holds this row or a later one (later rows overwrite)
        assert (gm.occupancy_bbox[box] >= row).all()
        assert (gm.class_bbox[box] > 0).all()
    # placement order: largest footprint first (crops at x/y edges do not change the order)
    assert sizes == sorted(sizes, reverse=True)
    # the last particle's box is entirely its own
    last = gm.occupancy_mask == n
    assert (gm.occupancy_bbox[last] == n).all()
    # classes in the masks match the ids
    ids = gm.occupancy_mask[gm.occupancy_mask > 0]
    row_class = np.array([0] + [SHREC21_TABLE.by_name(c).id for c in gm.particles.class_names])
    np.testing.assert_array_equal(gm.class_mask[gm.occupancy_mask > 0], row_class[ids])
    assert (gm.class_mask[gm.occupancy_mask == 0] == 0).all()
    # the potential is zero outside the footprints and ≥ threshold on them (but hollow centres)
    assert (gm.potential_noisefree[gm.occupancy_mask == 0] == 0).all()
    on = gm.potential_noisefree[gm.occupancy_mask > 0]
    assert ((on >= thr) | (on == 0)).all()
    assert int((on == 0).sum()) == gm.report.n_centre_below_threshold
    assert gm.report.n_centre_below_threshold > 0  # the barrel surrogate and Rubisco are hollow


def test_structural_noise_only_on_particle_voxels(gm):
    diff = gm.potential.astype(np.float64) - gm.potential_noisefree
    particle = gm.potential_noisefree != 0
    assert (diff[~particle] == 0).all()
    sample = diff[particle]
    assert sample.size > 10_000
    assert abs(sample.std() - 1.21) < 0.03 and abs(sample.mean()) < 0.03


def test_no_noise_when_sigma_is_zero(maps):
    params = dataclasses.replace(SMALL, shape_zyx=(24, 48, 48), n_particles=(6, 6),
                                 structural_noise_v=0.0)
    g = build_grandmodel(maps, params)
    np.testing.assert_array_equal(g.potential, g.potential_noisefree)


# ----------------------------------------------------------------------------- determinism

def test_same_seed_is_byte_identical_across_thread_counts(gm, maps):
    other = build_grandmodel(maps, dataclasses.replace(SMALL, threads=1))
    for name in ("potential_noisefree", "potential", "class_mask", "occupancy_mask",
                 "class_bbox", "occupancy_bbox"):
        a, b = getattr(gm, name), getattr(other, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert gm.particles == other.particles
    assert gm.report.not_fitted == other.report.not_fitted
    assert gm.report.total_tries == other.report.total_tries


def test_different_seed_differs(gm, maps):
    other = build_grandmodel(maps, dataclasses.replace(SMALL, seed=4))
    assert not np.array_equal(other.occupancy_mask, gm.occupancy_mask)
    assert not np.array_equal(other.particles.coords_xyz()[:5], gm.particles.coords_xyz()[:5])


# ----------------------------------------------------------------------------- rotation

def test_phi_90_moves_a_bump_from_plus_x_to_plus_y():
    n, c = 21, 10
    bump = _bump_map(n, (5, 0, 0))
    assert np.unravel_index(bump.argmax(), bump.shape) == (c, c, c + 5)
    rotated = rotate_potential(bump, zxz_to_matrix([90.0, 0.0, 0.0]))
    assert np.unravel_index(rotated.argmax(), rotated.shape) == (c, c + 5, c)  # (z, y, x)
    # theta = 90 about x then: +y → +z
    rotated = rotate_potential(_bump_map(n, (0, 5, 0)), zxz_to_matrix([0.0, 90.0, 0.0]))
    assert np.unravel_index(rotated.argmax(), rotated.shape) == (c + 5, c, c)


def test_general_rotation_moves_a_bump_to_r_times_offset():
    n = 25
    offset = np.array([6.0, 2.0, -3.0])  # x, y, z
    rot = zxz_to_matrix([30.0, 50.0, 70.0])
    rotated = rotate_potential(_bump_map(n, offset, sigma=1.5), rot, output_edge=27)
    expected_xyz = 27 // 2 + rot @ offset
    peak = np.array(np.unravel_index(rotated.argmax(), rotated.shape))[::-1]  # → x, y, z
    assert np.abs(peak - expected_xyz).max() <= 0.5 + 1e-9
    weights = np.clip(rotated, 0, None).astype(np.float64)
    zz, yy, xx = np.indices(rotated.shape)
    centroid = np.array([(xx * weights).sum(), (yy * weights).sum(), (zz * weights).sum()])
    np.testing.assert_allclose(centroid / weights.sum(), expected_xyz, atol=0.05)


def test_rotation_equals_scipy_prefiltered_cubic_spline():
    potential = _asymmetric_map()
    rot = zxz_to_matrix([12.0, 77.0, -140.0])
    ours = rotate_potential(potential, rot)
    matrix = rot.T[::-1, ::-1]
    c = potential.shape[0] // 2
    reference = affine_transform(potential, matrix, offset=c - matrix @ np.full(3, c),
                                 order=3, prefilter=True, mode="constant", output=np.float32)
    np.testing.assert_array_equal(ours, reference)


def test_grandmodel_writes_the_rotated_map_at_the_particle_centre():
    potential = _asymmetric_map()
    maps = {"1s3x": _structure_map("1s3x", potential)}
    params = GrandmodelParams(shape_zyx=(30, 60, 60), n_particles=(5, 5), seed=11,
                              structural_noise_v=0.0, threads=1)
    g = build_grandmodel(maps, params)
    assert len(g.particles) == 5
    checked = 0
    for (x, y, z), angles in zip(g.particles.coords_xyz().astype(int),
                                 g.particles.angles_zxz_deg()):
        rotated = rotate_potential(potential, zxz_to_matrix(angles), output_edge=21)
        rotated[rotated < params.support_threshold_v] = 0
        window = (slice(z - 10, z + 11), slice(y - 10, y + 11), slice(x - 10, x + 11))
        if all(0 <= s.start and s.stop <= dim for s, dim in zip(window, g.shape_zyx)):
            own = g.occupancy_mask[window] == g.occupancy_mask[z, y, x]
            # same values up to float rounding (the output boxes differ in size)
            np.testing.assert_allclose(g.potential_noisefree[window][own], rotated[own],
                                       rtol=1e-5, atol=1e-6)
            near_threshold = np.abs(rotated - params.support_threshold_v) < 1e-5
            expected = rotated >= params.support_threshold_v
            assert ((own == expected) | near_threshold).all()
            checked += 1
    assert checked >= 2


# ----------------------------------------------------------------------------- samplers

def _z_axes(sampler: str, seed: int = 5) -> np.ndarray:
    angles = sample_orientations(5000, sampler, np.random.default_rng(seed))
    assert angles.shape == (5000, 3)
    return zxz_to_matrix(angles)[:, :, 2]  # R·ẑ


def test_uniform_orientations_are_uniform_on_the_sphere():
    axes = _z_axes("uniform")
    assert stats.kstest(axes[:, 2], stats.uniform(-1, 2).cdf).pvalue > 0.01
    azimuth = np.arctan2(axes[:, 1], axes[:, 0])
    assert stats.kstest(azimuth, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 0.01


def test_shrec2020_orientations_over_represent_views_along_the_beam():
    axes = _z_axes("shrec2020")
    assert stats.kstest(axes[:, 2], stats.uniform(-1, 2).cdf).pvalue < 1e-6
    near_beam = float((np.abs(axes[:, 2]) > 0.9).mean())  # uniform: 0.10; theta-uniform: 0.287
    assert near_beam > 0.25
    angles = sample_orientations(1000, "shrec2020", np.random.default_rng(0))
    assert (angles >= 0).all() and (angles[:, [0, 2]] < 360).all() and (angles[:, 1] < 180).all()


def test_shrec2020_sampler_in_a_build(maps):
    params = dataclasses.replace(SMALL, shape_zyx=(24, 48, 48), n_particles=(8, 8),
                                 orientation_sampler="shrec2020")
    g = build_grandmodel(maps, params)
    assert g.report.orientation_sampler == "shrec2020"
    angles = g.particles.angles_zxz_deg()
    assert (angles[:, 1] >= 0).all() and (angles[:, 1] < 180).all()


# ----------------------------------------------------------------------------- crowding

def test_crowded_volume_reports_what_did_not_fit(maps):
    params = GrandmodelParams(shape_zyx=(24, 32, 32), n_particles=(80, 80), max_tries=60,
                              classes=("1bxn", "1s3x"), seed=2)
    g = build_grandmodel(maps, params)
    report = g.report
    assert report.n_requested == 80
    assert report.not_fitted and report.n_placed == len(g.particles) > 0
    assert report.n_placed + len(report.not_fitted) == report.n_requested
    for name, entry in report.per_class.items():
        missing = sum(1 for item in report.not_fitted if item["class_name"] == name)
        assert entry["requested"] - entry["placed"] == missing
    assert all(item["tries"] == 60 for item in report.not_fitted)
    assert report.total_tries >= 60 * len(report.not_fitted) + report.n_placed
    assert {item["class_name"] for item in report.not_fitted} <= {"1bxn", "1s3x"}
    np.testing.assert_array_equal(np.unique(g.occupancy_mask), np.arange(report.n_placed + 1))


def test_a_footprint_taller_than_the_volume_never_fits(maps):
    params = GrandmodelParams(shape_zyx=(5, 40, 40), n_particles=(2, 2), classes=("4cr2",))
    g = build_grandmodel(maps, params)
    assert g.report.n_placed == 0 and len(g.report.not_fitted) == 2
    assert all(item["tries"] == 0 for item in g.report.not_fitted)
    assert not g.occupancy_mask.any() and not g.potential.any()


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("field, value", [
    ("shape_zyx", (0, 10, 10)),
    ("shape_zyx", (10, 10)),
    ("voxel_size_nm", 0.0),
    ("n_particles", (5, 3)),
    ("n_particles", (-1, 3)),
    ("classes", ()),
    ("classes", ("1s3x", "1S3X")),
    ("orientation_sampler", "random"),
    ("max_tries", 0),
    ("support_threshold_v", 0.0),
    ("structural_noise_v", -1.0),
    ("seed", -2),
    ("threads", -1),
    ("threads", 1.5),
])
def test_bad_params_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        GrandmodelParams(**{field: value})


def test_params_normalise_their_inputs():
    p = GrandmodelParams(shape_zyx=[10, 20, 30], n_particles=7, classes=["1S3X"])
    assert p.shape_zyx == (10, 20, 30) and p.n_particles == (7, 7) and p.classes == ("1s3x",)
    assert GrandmodelParams(threads=3).n_threads == 3 and GrandmodelParams().n_threads >= 1


def test_map_voxel_size_and_classes_are_checked(maps):
    with pytest.raises(ValueError, match="1s3x"):
        build_grandmodel(maps, GrandmodelParams(voxel_size_nm=2.0, n_particles=(1, 1)))
    with pytest.raises(ValueError, match="3qm1"):
        build_grandmodel(maps, GrandmodelParams(classes=("3qm1",), n_particles=(1, 1)))
    with pytest.raises(ValueError, match="structure_maps"):
        build_grandmodel({}, GrandmodelParams(n_particles=(1, 1)))
    with pytest.raises(ValueError, match="zzzz"):
        build_grandmodel({"zzzz": _structure_map("zzzz", _asymmetric_map())},
                         GrandmodelParams(shape_zyx=(20, 20, 20), n_particles=(1, 1)))


# ----------------------------------------------------------------------------- progress

def test_progress_is_reported_and_cancel_raises(maps):
    calls = []
    params = dataclasses.replace(SMALL, shape_zyx=(24, 48, 48), n_particles=(8, 8))
    build_grandmodel(maps, params, progress=lambda done, total, msg: calls.append((done, total)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        build_grandmodel(maps, params, cancel=token)

    token = CancelToken()

    def cancel_after_first(done, total, msg):
        if done >= 1:
            token.cancel()

    with pytest.raises(Cancelled):
        build_grandmodel(maps, params, progress=cancel_after_first, cancel=token)

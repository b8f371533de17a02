"""Training targets: class masks mapped by name, balls around centres, rotated class shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_shrec.core.classes import SHREC20_RELEASED_MASK_IDS, SHREC21_TABLE
from napari_shrec.core.grandmodel import GrandmodelParams, build_grandmodel, rotated_footprint
from napari_shrec.core.particles import ParticleList
from napari_shrec.core.rotations import zxz_to_matrix
from napari_shrec.core.targets import (
    DEFAULT_SPHERE_FRACTION,
    FALLBACK_RADIUS_NM,
    MIN_SPHERE_RADIUS_VOX,
    channel_of_class,
    class_channel_map,
    default_sphere_radii,
    shape_targets,
    sphere_targets,
    targets_from_class_mask,
)

CLASSES = ("1bxn", "3cf3", "4cr2")


def _lattice_points_in_ball(r: float) -> int:
    n = int(math.floor(r))
    g = np.arange(-n, n + 1)
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    return int(np.count_nonzero(zz ** 2 + yy ** 2 + xx ** 2 <= r * r))


# --------------------------------------------------------------------------- class masks
def test_class_mask_is_mapped_to_channels_by_name():
    t = SHREC21_TABLE
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[0] = t.id_of("1bxn")  # 9
    mask[1] = t.id_of("4cr2")  # 11
    mask[2] = t.id_of("1s3x")  # 1: not a channel → background
    mask[3, 0, 0] = t.id_of("3cf3")  # 8
    channels = ("4cr2", "3cf3", "1bxn")  # the model's order, not the table's
    mapping = class_channel_map(t, channels)
    assert mapping == {11: 1, 8: 2, 9: 3}
    labels = targets_from_class_mask(mask, mapping)
    assert labels.dtype == np.uint8 and labels.shape == mask.shape
    assert (labels[0] == 3).all() and (labels[1] == 1).all() and (labels[2] == 0).all()
    assert labels[3, 0, 0] == 2 and np.count_nonzero(labels[3]) == 1
    # float masks (as MRC files often store them) and memory-map-sized slabs work alike
    np.testing.assert_array_equal(targets_from_class_mask(mask.astype(np.float32), mapping),
                                  labels)
    with pytest.raises(Exception, match="unknown class"):
        class_channel_map(t, ("1bxn", "not-a-class"))
    with pytest.raises(ValueError, match="twice"):
        channel_of_class(["1bxn", "1BXN"])


# --------------------------------------------------------------------------- spheres
def test_default_sphere_radii_are_a_fraction_of_the_equivalent_radius():
    radii = default_sphere_radii(["1s3x", "4cr2", "vesicle", "mystery"], voxel_size_nm=1.0)
    # 4cr2: V = 3085 nm³ → r_eq = (3V / 4π)^(1/3) = 9.031 nm; × 0.7 = 6.32 voxels
    assert radii["4cr2"] == pytest.approx(0.7 * (3 * 3085.0 / (4 * math.pi)) ** (1 / 3))
    assert radii["4cr2"] == pytest.approx(6.3215, abs=1e-4)
    assert radii["1s3x"] == pytest.approx(DEFAULT_SPHERE_FRACTION * 2.9184, abs=1e-3)
    assert radii["vesicle"] == radii["mystery"] == FALLBACK_RADIUS_NM  # no tabulated volume
    # at 2 nm voxels the radii halve, but never drop below the minimum
    half = default_sphere_radii(["4cr2", "1s3x"], voxel_size_nm=2.0)
    assert half["4cr2"] == pytest.approx(radii["4cr2"] / 2)
    assert default_sphere_radii(["1s3x"], 10.0)["1s3x"] == MIN_SPHERE_RADIUS_VOX


def test_sphere_targets_draw_balls_of_the_exact_radius_and_channel():
    particles = ParticleList.from_arrays(["1bxn", "4cr2", "1s3x"],
                                         [(10, 12, 8), (30, 20, 16), (5, 5, 5)])
    labels = sphere_targets((24, 32, 40), particles, {"1bxn": 3.0, "4cr2": 4.5}, CLASSES)
    assert labels.dtype == np.uint8 and labels.shape == (24, 32, 40)
    assert np.count_nonzero(labels == 1) == _lattice_points_in_ball(3.0) == 123
    assert np.count_nonzero(labels == 3) == _lattice_points_in_ball(4.5)
    assert np.count_nonzero(labels == 2) == 0  # no 3cf3 particle
    assert labels[8, 12, 10] == 1 and labels[16, 20, 30] == 3
    assert labels[8, 12, 13] == 1 and labels[8, 12, 14] == 0  # the rim at exactly r = 3
    assert labels[5, 5, 5] == 0  # 1s3x is not a channel: left out
    # default radii (0.7 r_eq) when none are given
    default = sphere_targets((24, 32, 40), particles, None, CLASSES)
    r = default_sphere_radii(CLASSES)["4cr2"]
    assert np.count_nonzero(default == 3) == _lattice_points_in_ball(r)
    # a mapping gives explicit channels
    mapped = sphere_targets((24, 32, 40), particles, {"1bxn": 3.0}, {"1bxn": 7})
    assert np.count_nonzero(mapped == 7) == 123 and set(np.unique(mapped)) == {0, 7}


def test_sphere_targets_at_the_edge_and_off_grid():
    particles = ParticleList.from_arrays(["1bxn", "1bxn"], [(0, 0, 0), (10.5, 10, 10)])
    labels = sphere_targets((20, 20, 20), particles, {"1bxn": 2.0}, ["1bxn"])
    # the corner ball is cropped to the octant inside the volume
    octant = sum(1 for z in range(3) for y in range(3) for x in range(3)
                 if x * x + y * y + z * z <= 4)
    assert np.count_nonzero(labels[:5, :5, :5]) == octant
    # a centre between voxels: the ball is symmetric about x = 10.5
    ball = labels[5:16, 5:16, 5:17]  # x 5…16, centred on 10.5
    np.testing.assert_array_equal(ball, ball[:, :, ::-1])
    assert labels[10, 10, 10] == labels[10, 10, 11] == 1
    assert labels[10, 10, 9] == labels[10, 10, 12] == 1  # 1.5 from the centre
    assert labels[10, 10, 8] == labels[10, 10, 13] == 0  # 2.5 > 2


def test_overlapping_balls_go_to_the_nearer_centre():
    particles = ParticleList.from_arrays(["1bxn", "4cr2"], [(10, 10, 10), (16, 10, 10)])
    labels = sphere_targets((20, 20, 30), particles, {"1bxn": 4.0, "4cr2": 4.0}, CLASSES)
    row = labels[10, 10]
    # x 6…12 are nearer 1bxn, x = 13 is as near to both (the first keeps it), 14…20 nearer 4cr2
    assert list(row[6:21]) == [1] * 8 + [3] * 7
    assert labels[10, 10, 10] == 1 and labels[10, 10, 16] == 3


# --------------------------------------------------------------------------- shapes
@pytest.fixture(scope="module")
def grandmodel():
    from napari_shrec.core.structures import StructureLibrary, StructureParams

    library = StructureLibrary([], download=False, surrogates=True)
    maps = library.build(CLASSES, StructureParams(voxel_size_nm=1.0), warn=False)
    params = GrandmodelParams(shape_zyx=(40, 64, 64), n_particles=(10, 10), classes=CLASSES,
                              structural_noise_v=0.0, seed=5, threads=1)
    return maps, build_grandmodel(maps, params)


def test_shape_targets_reproduce_the_simulated_class_mask(grandmodel):
    maps, gm = grandmodel
    assert gm.report.n_placed >= 8
    channels = ("4cr2", "1bxn", "3cf3")
    labels = shape_targets(gm.shape_zyx, gm.particles, maps, gm.params.support_threshold_v,
                           channels=channels, threads=1)
    expected = targets_from_class_mask(gm.class_mask, class_channel_map(SHREC21_TABLE, channels))
    np.testing.assert_array_equal(labels, expected)
    assert np.count_nonzero(labels) > 1000


def test_shape_targets_match_rotated_footprint(grandmodel):
    maps, _ = grandmodel
    angles = [(0, 0, 0), (30, 60, 90), (200, 100, 10)]
    names = ["1bxn", "4cr2", "3cf3"]
    centres_xyz = [(20, 20, 20), (60, 24, 22), (22, 60, 24)]
    particles = ParticleList.from_arrays(names, centres_xyz, angles)
    shape = (44, 84, 84)
    labels = shape_targets(shape, particles, maps, 0.03, channels=CLASSES)
    for name, (x, y, z), angle in zip(names, centres_xyz, angles):
        fp = rotated_footprint(maps[name].potential, zxz_to_matrix(angle), 0.03)
        box = tuple(slice(c + o, c + o + s) for c, o, s in zip((z, y, x), fp.offset_zyx,
                                                               fp.mask.shape))
        channel = CLASSES.index(name) + 1
        np.testing.assert_array_equal(labels[box] == channel, fp.mask)
        assert np.count_nonzero(labels == channel) == fp.mask.sum()  # nothing outside the box
    with pytest.raises(ValueError, match="no structure map for class.*1s3x"):
        shape_targets(shape, ParticleList.from_arrays(["1s3x"], [(5, 5, 5)]), maps, 0.03,
                      channels=("1s3x",))


def test_released_shrec20_numbering_is_not_our_numbering():
    """Guard for the mapping by name: the released SHREC'20 mask ids differ from ours."""
    assert SHREC20_RELEASED_MASK_IDS[12] == "1bxn" != SHREC21_TABLE.name_of(12)

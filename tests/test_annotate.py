"""Annotation without a GUI: snapping a click to the density centre (core/snap.py) and the
autosave sidecars (io/annotations.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_shrec.core.particles import ParticleList
from napari_shrec.core.snap import guess_polarity, snap_point, snap_to_density, snap_window_bounds
from napari_shrec.io.annotations import (
    AUTOSAVE_FORMAT,
    autosave_dir,
    autosave_paths,
    list_autosaves,
    read_autosave,
    remove_autosave,
    tomogram_identity,
    write_autosave,
)

SHAPE = (40, 56, 64)


def _blob_volume(centre, radius, *, shape=SHAPE, noise=0.3, seed=0, amplitude=1.0):
    """A soft-edged ball of density ``amplitude`` at ``centre`` (z, y, x, voxels) plus Gaussian
    noise of standard deviation ``noise``."""
    grid = np.indices(shape, dtype=np.float64)
    dist = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3)))
    ball = np.clip(radius + 0.5 - dist, 0.0, 1.0) * amplitude
    rng = np.random.default_rng(seed)
    return (ball + rng.normal(0.0, noise, shape)).astype(np.float32)


class CountingArray:
    """An array-like that records every region read from it (like a memory map would)."""

    def __init__(self, data):
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key):
        out = self.data[key]
        self.reads.append(tuple(out.shape))
        return out


# ------------------------------------------------------------------------------------ snap
@pytest.mark.parametrize("offset", [(2.0, -3.0, 2.0), (0.0, 4.4, 0.0), (-3.0, -2.5, -2.0)])
def test_off_centre_click_lands_within_a_voxel_of_the_blob_centre(offset):
    centre = np.array([20.3, 27.6, 31.2])
    vol = _blob_volume(centre, 5.0)
    click = centre + np.asarray(offset)
    assert np.linalg.norm(click - centre) < 5.0
    result = snap_point(vol, click, 5.0)
    assert result.moved
    assert np.linalg.norm(result.point_zyx - centre) < 1.0
    assert np.linalg.norm(result.point_zyx - centre) < 0.3  # in practice much better
    assert result.shift_vox == pytest.approx(np.linalg.norm(result.point_zyx - click))
    assert result.contrast > 10  # a clear blob
    np.testing.assert_allclose(snap_to_density(vol, click, 5.0), result.point_zyx)


def test_dark_particles_need_dark_polarity():
    centre = np.array([18.0, 30.4, 25.7])
    vol = -_blob_volume(centre, 4.0, seed=3)
    click = centre + [1.5, -2.0, 1.0]
    dark = snap_to_density(vol, click, 4.0, polarity="dark")
    assert np.linalg.norm(dark - centre) < 1.0
    bright = snap_point(vol, click, 4.0, polarity="bright")
    assert np.linalg.norm(bright.point_zyx - centre) > 1.0  # the wrong polarity finds no blob


def test_no_blob_nearby_keeps_the_click_or_moves_less_than_a_radius():
    rng = np.random.default_rng(7)
    vol = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    radius = 5.0
    for _ in range(20):
        click = rng.uniform([6, 6, 6], np.asarray(SHAPE) - 6)
        result = snap_point(vol, click, radius)
        assert result.shift_vox <= radius
        if not result.moved:
            np.testing.assert_array_equal(result.point_zyx, click)
    flat = np.zeros(SHAPE, np.float32)
    np.testing.assert_array_equal(snap_to_density(flat, [10.2, 11.0, 12.7], 4.0),
                                  [10.2, 11.0, 12.7])


def test_the_farthest_move_is_one_radius():
    centre = np.array([20.0, 28.0, 32.0])
    vol = _blob_volume(centre, 3.0, noise=0.05)
    click = centre + [0.0, 0.0, 3.0]  # the blob centre right on the search rim
    result = snap_point(vol, click, 3.0)
    assert result.shift_vox <= 3.0 + 1e-9


def test_a_blob_cut_by_the_volume_edge():
    centre = np.array([2.0, 30.0, 61.5])
    vol = _blob_volume(centre, 4.0, seed=5)
    result = snap_point(vol, [0.4, 32.0, 62.0], 4.0)
    assert result.window[0][0] == 0 and result.window[2][1] == SHAPE[2]  # clipped window
    assert np.linalg.norm(result.point_zyx - centre) < 1.0


def test_keeping_the_slice_moves_only_in_plane():
    centre = np.array([20.4, 27.6, 31.2])
    vol = _blob_volume(centre, 5.0)
    click = np.array([22.0, 25.0, 33.0])
    result = snap_point(vol, click, 5.0, axes=(1, 2))
    assert result.point_zyx[0] == 22.0
    np.testing.assert_allclose(result.point_zyx[1:], centre[1:], atol=0.5)


def test_a_bright_neighbour_just_outside_the_radius_does_not_steal_the_click():
    small, big = np.array([20.0, 28.0, 20.0]), np.array([20.0, 28.0, 34.0])
    vol = (_blob_volume(small, 3.0, noise=0.0) + _blob_volume(big, 6.0, noise=0.0, amplitude=3)
           + np.random.default_rng(2).normal(0, 0.05, SHAPE).astype(np.float32))
    result = snap_point(vol, small + [1.0, 1.0, 2.0], 3.0)
    assert np.linalg.norm(result.point_zyx - small) < 1.0


def test_reads_only_a_window_of_the_volume():
    centre = np.array([20.0, 28.0, 32.0])
    counting = CountingArray(_blob_volume(centre, 4.0))
    point = snap_to_density(counting, centre + 1.5, 4.0, lowpass_sigma_vox=2.0)
    assert np.linalg.norm(point - centre) < 1.0
    assert len(counting.reads) == 1
    expected = snap_window_bounds(SHAPE, centre + 1.5, 4.0, 2.0)
    assert counting.reads[0] == tuple(hi - lo for lo, hi in expected)
    assert np.prod(counting.reads[0]) < np.prod(SHAPE) / 2


def test_works_on_a_memory_map(tmp_path):
    centre = np.array([15.0, 20.0, 40.0])
    data = _blob_volume(centre, 4.0)
    mm = np.memmap(tmp_path / "vol.raw", dtype=np.float32, mode="w+", shape=SHAPE)
    mm[:] = data
    mm.flush()
    ro = np.memmap(tmp_path / "vol.raw", dtype=np.float32, mode="r", shape=SHAPE)
    assert np.linalg.norm(snap_to_density(ro, centre - [1, 2, -1], 4.0) - centre) < 1.0


def test_bad_inputs_name_the_parameter():
    vol = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError, match="outside the volume"):
        snap_to_density(vol, [-3, 5, 5], 3.0)
    with pytest.raises(ValueError, match="radius_vox"):
        snap_to_density(vol, [5, 5, 5], 0.0)
    with pytest.raises(ValueError, match="polarity"):
        snap_to_density(vol, [5, 5, 5], 3.0, polarity="grey")
    with pytest.raises(ValueError, match="3D"):
        snap_to_density(np.zeros((4, 4)), [1, 1, 1], 1.0)
    with pytest.raises(ValueError, match="axes"):
        snap_to_density(vol, [5, 5, 5], 3.0, axes=(3,))


def test_guess_polarity_from_the_histogram():
    rng = np.random.default_rng(4)
    vol = rng.normal(0, 0.2, SHAPE).astype(np.float32)
    for _ in range(12):
        c = rng.uniform(6, np.asarray(SHAPE) - 6)
        vol += _blob_volume(c, 3.5, noise=0.0)
    assert guess_polarity(vol) == "bright"
    assert guess_polarity(-vol) == "dark"


# ------------------------------------------------------------------------------------ autosave
def _particles() -> ParticleList:
    return ParticleList.from_arrays(
        ["1bxn", "4cr2", "1s3x"], [[10.5, 20.0, 5.0], [30.0, 12.25, 7.0], [1.0, 2.0, 3.0]],
        scores=[np.nan, 0.75, np.nan],
        extra={"source": ["manual", "predicted", "manual"]}, voxel_size_nm=0.8)


def test_autosave_round_trip_and_paths(tmp_path):
    tomo = tomogram_identity(tmp_path / "data" / "tomo.mrc")
    record = write_autosave(_particles(), tomo, "tomo annotations", directory=tmp_path / "as",
                            info={"scale": [0.8, 0.8, 0.8]})
    csv_path, json_path = autosave_paths(tomo, "tomo annotations", tmp_path / "as")
    assert (record.csv_path, record.json_path) == (csv_path, json_path)
    assert csv_path.parent.name.startswith("tomo-") and csv_path.suffix == ".csv"
    meta = json.loads(json_path.read_text())
    assert meta["format"] == AUTOSAVE_FORMAT and meta["n_points"] == 3
    assert meta["layer_name"] == "tomo annotations" and meta["tomogram"] == tomo
    assert meta["scale"] == [0.8, 0.8, 0.8] and meta["voxel_size_nm"] == 0.8
    back = read_autosave(record)
    assert back.class_names.tolist() == ["1bxn", "4cr2", "1s3x"]
    np.testing.assert_array_equal(back.coords_xyz(), _particles().coords_xyz())
    assert back.table["source"].tolist() == ["manual", "predicted", "manual"]
    assert np.isnan(back.table["score"][0]) and back.table["score"][1] == 0.75
    assert back.voxel_size_nm == 0.8
    records = list_autosaves(tomo, tmp_path / "as")
    assert [r.layer_name for r in records] == ["tomo annotations"]
    assert len(read_autosave(records[0].json_path)) == 3
    assert remove_autosave(tomo, "tomo annotations", tmp_path / "as")
    assert list_autosaves(tomo, tmp_path / "as") == []


def test_autosaves_never_collide(tmp_path):
    a = tomogram_identity(tmp_path / "a" / "tomo.mrc")
    b = tomogram_identity(tmp_path / "b" / "tomo.mrc")
    paths = {autosave_paths(t, name, tmp_path)[0] for t in (a, b)
             for name in ("annotations", "annotations 2", "annotations/2", "annotations:2")}
    assert len(paths) == 8
    write_autosave(_particles(), a, "annotations", directory=tmp_path)
    write_autosave(_particles().subset([0]), b, "annotations", directory=tmp_path)
    assert [r.n_points for r in list_autosaves(a, tmp_path)] == [3]
    assert [r.n_points for r in list_autosaves(b, tmp_path)] == [1]


def test_autosave_dir_follows_the_cache_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SHREC_CACHE_DIR", str(tmp_path / "cache"))
    assert autosave_dir() == tmp_path / "cache" / "annotations"
    assert tomogram_identity(None, "reconstruction") == "layer:reconstruction"
    with pytest.raises(ValueError, match="path or a layer name"):
        tomogram_identity(None, None)


def test_a_damaged_autosave_is_skipped(tmp_path):
    tomo = "layer:t"
    write_autosave(_particles(), tomo, "ok", directory=tmp_path)
    _, bad_json = autosave_paths(tomo, "bad", tmp_path)
    bad_json.write_text("{not json")
    assert [r.layer_name for r in list_autosaves(tomo, tmp_path)] == ["ok"]

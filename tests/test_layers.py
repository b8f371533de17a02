"""Pure tests of the core ⇄ napari layer-data adapters (no napari, no Qt)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_shrec.core.classes import SHREC20_TABLE, SHREC21_TABLE
from napari_shrec.core.particles import ParticleList
from napari_shrec.core.volume import Volume
from napari_shrec.layers import (
    PARTICLE_SOURCES,
    as_label_array,
    class_color_cycle,
    class_diameter_vox,
    class_mask_to_labels_layer,
    contrast_limits_from_sample,
    labels_colormap,
    occupancy_to_labels_layer,
    particles_to_points_layer,
    points_layer_to_particles,
    volume_to_image_layer,
)


def _particles(voxel_size_nm: float | None = 0.5) -> ParticleList:
    return ParticleList.from_arrays(
        ["1s3x", "4d8q", "3cf3", "mystery"],
        [[10.0, 20.0, 30.0], [11.5, 21.0, 31.0], [0.0, 0.0, 0.0], [5.0, 6.0, 7.0]],
        [[10.0, 20.0, 30.0], [0.0, 90.0, 0.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        scores=[0.9, np.nan, 0.1, 0.5],
        extra={"tomo": ["a", "a", "b", "b"], "cc": [1.0, 2.0, 3.0, 4.0]},
        voxel_size_nm=voxel_size_nm,
        metadata={"source": "/x/list.csv", "line_numbers": [2, 3, 4, 5]},
    )


def test_layers_module_imports_neither_napari_nor_qt():
    code = (
        "import sys, napari_shrec.layers, napari_shrec._reader, napari_shrec._writer\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'superqt') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------- images
def test_image_layer_scale_units_translate_and_metadata():
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    vol = Volume(data, voxel_size_nm=(2.0, 1.5, 1.0), origin_nm=(10.0, 0.0, 0.0),
                 metadata={"source": "/x/t.mrc"})
    d, kw, kind = volume_to_image_layer(vol, "tomo", visible=False, translate_zyx_vox=(3, 1, 0),
                                        metadata={"extra": 1})
    assert kind == "image" and d is data
    assert kw["name"] == "tomo" and kw["visible"] is False
    assert kw["scale"] == (2.0, 1.5, 1.0)
    assert kw["units"] == ("nm", "nm", "nm")
    assert kw["translate"] == (6.0, 1.5, 0.0)  # voxels × voxel size; origin not added
    assert kw["metadata"]["origin_nm"] == (10.0, 0.0, 0.0)
    assert kw["metadata"]["source"] == "/x/t.mrc" and kw["metadata"]["extra"] == 1
    lo, hi = kw["contrast_limits"]
    assert 0 <= lo < hi <= data.max()
    _, kw2, _ = volume_to_image_layer(vol, "tomo", use_origin=True, translate_zyx_vox=(3, 1, 0))
    assert kw2["translate"] == (16.0, 1.5, 0.0)


def test_contrast_limits_read_only_a_sample():
    class Recorder:
        """An array-like that records how many voxels were read."""

        def __init__(self, arr):
            self.arr, self.shape, self.dtype, self.read = arr, arr.shape, arr.dtype, 0

        def __getitem__(self, key):
            out = self.arr[key]
            self.read += np.size(out)
            return out

    rng = np.random.default_rng(0)
    arr = rng.normal(size=(128, 128, 128)).astype(np.float32)
    rec = Recorder(arr)
    lo, hi = contrast_limits_from_sample(rec)
    assert rec.read <= arr.size // 8
    assert -4 < lo < -2 and 2 < hi < 4
    assert contrast_limits_from_sample(np.zeros((2, 3, 4))) == (0.0, 1.0)
    assert contrast_limits_from_sample(np.full((2, 3, 4), np.nan)) == (0.0, 1.0)


# ------------------------------------------------------------------------------------- labels
def test_class_mask_labels_colours_and_features():
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    mask[1, 1, 1] = 1
    mask[2, 2, 2] = 12
    vol = Volume(mask, voxel_size_nm=1.0)
    d, kw, kind = class_mask_to_labels_layer(vol, "cm", class_table=SHREC20_TABLE,
                                             translate_zyx_vox=(156, 0, 0), visible=False)
    assert kind == "labels" and d is mask
    cmap = kw["colormap"]
    assert cmap[0] == (0.0, 0.0, 0.0, 0.0)  # background transparent
    assert None in cmap  # a default for values not in the table
    for cls in SHREC20_TABLE:
        assert cmap[cls.id] == (*cls.color, 1.0)
    assert kw["translate"] == (156.0, 0.0, 0.0) and kw["visible"] is False
    assert kw["metadata"]["class_names"][12] == "4d8q"
    feats = kw["features"]
    assert list(feats["index"][:2]) == [0, 1] and list(feats["class"][:2]) == ["background", "1s3x"]
    assert labels_colormap(SHREC21_TABLE)[16] == (*SHREC21_TABLE.by_name("fiducial").color, 1.0)


def test_float_masks_become_integer_labels_in_slabs():
    occ = np.zeros((6, 8, 8), dtype=np.float32)
    occ[0, 0, 0] = 70000.0  # beyond uint16
    occ[5, 1, 1] = 3.0
    out = as_label_array(occ, chunk_voxels=64)
    assert out.dtype == np.uint32 and out[0, 0, 0] == 70000 and out[5, 1, 1] == 3
    small = as_label_array(np.array([[[0.0, 2.0]]], dtype=np.float32))
    assert small.dtype == np.uint16 and small.tolist() == [[[0, 2]]]
    ints = np.ones((2, 2, 2), dtype=np.int16)
    assert as_label_array(ints) is ints
    with pytest.raises(ValueError, match="negative"):
        as_label_array(np.full((1, 1, 1), -1.0))


def test_occupancy_labels_features_name_each_particle():
    occ = Volume(np.zeros((2, 3, 4), dtype=np.float32), voxel_size_nm=(1.0, 1.0, 1.0))
    pl = _particles()
    d, kw, kind = occupancy_to_labels_layer(occ, "occ", particles=pl)
    assert kind == "labels" and d.dtype.kind == "u"
    assert list(kw["features"]["index"]) == [1, 2, 3, 4]
    assert list(kw["features"]["class"]) == ["1s3x", "4d8q", "3cf3", "mystery"]
    assert kw["metadata"]["kind"] == "occupancy_mask"


# ------------------------------------------------------------------------------------- points
def test_points_layer_data_scale_features_and_colours():
    pl = _particles()
    d, kw, kind = particles_to_points_layer(pl, "gt", class_table=SHREC21_TABLE,
                                            source="predicted", translate_zyx_vox=(156, 0, 0))
    assert kind == "points"
    np.testing.assert_array_equal(d, pl.coords_zyx())
    assert kw["scale"] == (0.5, 0.5, 0.5) and kw["units"] == ("nm", "nm", "nm")
    assert kw["translate"] == (78.0, 0.0, 0.0)
    feats = kw["features"]
    assert isinstance(feats["class"].dtype, pd.CategoricalDtype)
    cats = list(feats["class"].cat.categories)
    assert cats[: len(SHREC21_TABLE)] == list(SHREC21_TABLE.names) and cats[-1] == "mystery"
    assert list(feats["class"]) == ["1s3x", "4d8q", "3cf3", "mystery"]
    assert list(feats["source"].cat.categories) == list(PARTICLE_SOURCES)
    assert set(feats["source"]) == {"predicted"}
    np.testing.assert_array_equal(feats["score"].to_numpy(), pl.scores())
    assert list(feats.columns[:6]) == ["class", "score", "source", "phi", "theta", "psi"]
    assert list(feats["tomo"]) == ["a", "a", "b", "b"]
    # colours: the table's, mapped from the class feature
    assert kw["face_color"] == "class"
    cmap = kw["face_color_cycle"]["colormap"]
    for name in ("1s3x", "4d8q", "3cf3"):
        assert cmap[name] == (*SHREC21_TABLE.by_name(name).color, 1.0)
    assert "mystery" in cmap and len(cmap["mystery"]) == 4
    assert kw["border_color"] == "source"
    # sizes: diameter in voxels from the equivalent radius
    r = SHREC21_TABLE.by_name("4d8q").equivalent_radius_nm
    assert kw["size"][1] == pytest.approx(2 * r / 0.5)
    assert kw["size"][0] == pytest.approx(class_diameter_vox("1s3x", 0.5))
    # defaults for points added in napari
    assert kw["feature_defaults"]["source"] == "manual"
    assert kw["feature_defaults"]["class"] == "1s3x"
    assert kw["metadata"]["kind"] == "particles" and "line_numbers" not in kw["metadata"]
    assert kw["metadata"]["source_file"] == "/x/list.csv"


def test_class_color_cycle_is_what_points_layers_use():
    cycle = class_color_cycle(["1s3x", "mystery"], SHREC20_TABLE)
    assert set(cycle) == {"colormap", "fallback_color"}
    assert cycle["fallback_color"] == [(0.6, 0.6, 0.6, 1.0)]
    assert cycle["colormap"]["1s3x"] == (*SHREC20_TABLE.by_name("1s3x").color, 1.0)
    assert set(SHREC20_TABLE.names) <= set(cycle["colormap"])
    assert len(cycle["colormap"]["mystery"]) == 4  # a stable hashed colour
    assert cycle == class_color_cycle(["mystery", "1s3x"], SHREC20_TABLE)
    assert class_color_cycle([])["colormap"] == class_color_cycle([], SHREC21_TABLE)["colormap"]
    _, kw, _ = particles_to_points_layer(_particles(), "p", class_table=SHREC20_TABLE)
    categories = list(kw["features"]["class"].cat.categories)
    assert kw["face_color_cycle"] == class_color_cycle(categories, SHREC20_TABLE)


def test_volume_layers_take_an_imposed_voxel_size():
    vol = Volume(np.zeros((2, 3, 4), np.float32), voxel_size_nm=(1.0, 1.0, 1.0),
                 metadata={"voxel_size_from_header": False})
    for make in (volume_to_image_layer, class_mask_to_labels_layer, occupancy_to_labels_layer):
        data = vol if make is volume_to_image_layer else Volume(
            np.zeros((2, 3, 4), np.uint8), voxel_size_nm=1.0,
            metadata={"voxel_size_from_header": False})
        _, kw, _ = make(data, "v", voxel_size_nm=0.8, translate_zyx_vox=(5, 0, 0))
        assert kw["scale"] == (0.8, 0.8, 0.8)
        assert kw["translate"] == pytest.approx((4.0, 0.0, 0.0))
        assert kw["metadata"]["voxel_size_nm"] == (0.8, 0.8, 0.8)
        _, kw, _ = make(data, "v")  # default: the volume's own
        assert kw["scale"] == (1.0, 1.0, 1.0)


def test_points_layer_for_an_empty_list_has_defaults():
    d, kw, _ = particles_to_points_layer(ParticleList.empty(), "picks", source="manual",
                                         default_class="4v94")
    assert d.shape == (0, 3)
    assert kw["feature_defaults"]["class"] == "4v94"
    assert kw["scale"] == (1.0, 1.0, 1.0) and kw["metadata"]["voxel_size_assumed"] is True
    assert np.isscalar(kw["size"])
    with pytest.raises(ValueError, match="source"):
        particles_to_points_layer(ParticleList.empty(), "x", source="guess")


def test_round_trip_particles_points_particles():
    pl = _particles()
    d, kw, _ = particles_to_points_layer(pl, "gt", source="manual")
    back = points_layer_to_particles(d, kw["features"], voxel_size_nm=0.5)
    expected = pl.table.copy()
    pd.testing.assert_frame_equal(back.table, expected, check_dtype=False)
    assert back.voxel_size_nm == 0.5
    with_source = points_layer_to_particles(d, kw["features"], include_source=True)
    assert list(with_source.table["source"]) == ["manual"] * 4


def test_points_without_features_get_default_class():
    back = points_layer_to_particles(np.array([[1.0, 2.0, 3.0]]), None, default_class="x")
    assert back.table.loc[0, ["class_name", "x", "y", "z"]].tolist() == ["x", 3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="points data"):
        points_layer_to_particles(np.array([[1.0, 2.0]]), None)
    with pytest.raises(ValueError, match="rows of features"):
        points_layer_to_particles(np.zeros((2, 3)), pd.DataFrame({"class": ["a"]}))

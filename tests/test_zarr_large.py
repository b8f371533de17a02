"""Large volumes: OME-Zarr files, lazy reading, blockwise detection and lazy napari layers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from napari_shrec.cli import main
from napari_shrec.core.classes import SHREC20_TABLE
from napari_shrec.core.detect import DetectParams, detect
from napari_shrec.core.phantom import sphere_phantom
from napari_shrec.core.progress import Cancelled, CancelToken
from napari_shrec.io.mrc import write_mrc
from napari_shrec.layers import UNITS_NM
from napari_shrec.io.zarr import (
    OmeZarrError,
    is_ome_zarr,
    open_ome_zarr,
    open_ome_zarr_pyramid,
    read_ome_zarr_info,
    write_ome_zarr,
)

NAMES = list(SHREC20_TABLE.names)


def block_mean(a: np.ndarray) -> np.ndarray:
    z, y, x = (n // 2 * 2 for n in a.shape)
    a = a[:z, :y, :x]
    return a.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(24, 40, 56)).astype(np.float32)


# --------------------------------------------------------------------------- OME-Zarr files
def test_ome_zarr_round_trip_keeps_data_voxel_size_and_pyramid(tmp_path, volume):
    path = tmp_path / "tomo.ome.zarr"
    seen: list[tuple[int, int]] = []
    assert write_ome_zarr(path, volume, (1.5, 1.0, 0.5), chunks=16, pyramid_levels=3,
                          progress=lambda d, t, m: seen.append((d, t))) == path
    assert seen[-1][0] == seen[-1][1] > 1
    assert is_ome_zarr(path) and not is_ome_zarr(tmp_path)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left
    info = read_ome_zarr_info(path)
    assert info.version == "0.4" and info.levels == 3 and info.dtype == "float32"
    assert info.shapes_zyx == ((24, 40, 56), (12, 20, 28), (6, 10, 14))
    assert info.voxel_sizes_nm == ((1.5, 1.0, 0.5), (3.0, 2.0, 1.0), (6.0, 4.0, 2.0))
    assert info.chunks_zyx == (16, 16, 16)
    full = open_ome_zarr(path)
    assert type(full.data).__module__.startswith("dask")  # lazy
    assert full.voxel_size_nm == (1.5, 1.0, 0.5) and full.metadata["levels"] == 3
    np.testing.assert_array_equal(np.asarray(full.data), volume)
    levels = open_ome_zarr_pyramid(path)
    np.testing.assert_allclose(np.asarray(levels[1].data), block_mean(volume), atol=1e-6)
    np.testing.assert_allclose(np.asarray(levels[2].data), block_mean(block_mean(volume)),
                               atol=1e-6)
    with pytest.raises(ValueError, match="level 3"):
        open_ome_zarr(path, level=3)


def test_ome_zarr_writing_refuses_to_overwrite_and_cancels_cleanly(tmp_path, volume):
    path = tmp_path / "tomo.ome.zarr"
    write_ome_zarr(path, volume, 1.0, pyramid_levels=1)
    with pytest.raises(FileExistsError, match="tomo.ome.zarr"):
        write_ome_zarr(path, volume * 0, 1.0)
    np.testing.assert_array_equal(np.asarray(open_ome_zarr(path).data), volume)
    write_ome_zarr(path, volume * 2, 2.0, overwrite=True, pyramid_levels=2)
    replaced = open_ome_zarr(path)
    np.testing.assert_array_equal(np.asarray(replaced.data), volume * 2)
    assert replaced.voxel_size_nm == (2.0, 2.0, 2.0) and replaced.metadata["levels"] == 2
    # a folder that is not an OME-Zarr is never replaced
    other = tmp_path / "notes.zarr"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an OME-Zarr"):
        write_ome_zarr(other, volume, 1.0, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        write_ome_zarr(tmp_path / "cancelled.ome.zarr", volume, 1.0, cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.zarr", "tomo.ome.zarr"]
    with pytest.raises(ValueError, match="3D"):
        write_ome_zarr(tmp_path / "flat.ome.zarr", volume[0], 1.0)


def test_ome_zarr_reading_errors_name_the_path_and_units_are_converted(tmp_path, volume):
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        open_ome_zarr(tmp_path / "missing.zarr")
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    with pytest.raises(OmeZarrError, match="plain.zarr"):
        open_ome_zarr(plain)
    # a file written by another tool in Ångström (as the CryoET Data Portal does)
    path = tmp_path / "angstrom.zarr"
    write_ome_zarr(path, volume, 1.0, pyramid_levels=2)
    attrs_file = path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    ms = attrs["multiscales"][0]
    for axis in ms["axes"]:
        axis["unit"] = "angstrom"
    for k, ds in enumerate(ms["datasets"]):
        ds["coordinateTransformations"][0]["scale"] = [13.6 * 2 ** k] * 3
    attrs_file.write_text(json.dumps(attrs))
    assert open_ome_zarr(path).voxel_size_nm == pytest.approx((1.36,) * 3)
    assert open_ome_zarr(path, level=1).voxel_size_nm == pytest.approx((2.72,) * 3)
    for axis in ms["axes"]:
        axis["unit"] = "furlong"
    attrs_file.write_text(json.dumps(attrs))
    with pytest.raises(OmeZarrError, match="angstrom.zarr.*furlong"):
        open_ome_zarr(path)


# --------------------------------------------------------------------------- blockwise detection
class MapOracle:
    """A stub network: returns stored probability maps at the voxels whose flat indices the
    patch holds (the tomogram is the index volume)."""

    def __init__(self, maps: np.ndarray, patch=(16, 32, 32)):
        self.maps = maps.reshape(maps.shape[0], -1).astype(np.float32)
        self.patch_size = tuple(patch)
        self.output_stride = 1
        self.calls = 0

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.maps[:, np.rint(patch).astype(np.int64)]


@pytest.fixture(scope="module")
def noisy_case():
    shape = (40, 128, 160)
    ph = sphere_phantom(shape, 30, seed=5)
    maps = np.stack([ndimage.gaussian_filter((ph.class_mask == c).astype(np.float32), 1.0)
                     for c in range(len(NAMES) + 1)])
    maps += np.random.default_rng(1).random(maps.shape).astype(np.float32) * 0.05
    maps /= maps.sum(axis=0, keepdims=True)
    index = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    return index, maps


@pytest.mark.parametrize("method", ["maxpool", "components"])
def test_blockwise_detection_equals_whole_volume_detection(tmp_path, noisy_case, method):
    index, maps = noisy_case
    params = DetectParams(peak_method=method, min_score=0.3)
    kwargs = {"class_names": NAMES, "voxel_size_nm": 2.0}
    whole = detect(index, MapOracle(maps), params, **kwargs)
    assert whole.metadata["n_blocks"] == 1 and len(whole.particles) >= 25
    # the same tomogram from an OME-Zarr (lazy dask array), in blocks of ≤ 8 MiB
    write_ome_zarr(tmp_path / "index.ome.zarr", index, 2.0, chunks=(16, 32, 32),
                   pyramid_levels=1)
    lazy = open_ome_zarr(tmp_path / "index.ome.zarr")
    oracle = MapOracle(maps)
    small = params.replace(max_memory_mb=8.0)
    blocks = detect(lazy, oracle, small, **kwargs)
    meta = blocks.metadata
    assert meta["n_blocks"] > 2 and blocks.n_patches == oracle.calls > whole.n_patches
    assert meta["unique_patches"] == whole.n_patches
    bytes_per_voxel = 2 * (len(NAMES) + 1) + 5 * meta["peak_threads"]
    assert math.prod(meta["block_shape"]) * bytes_per_voxel <= 8 * 2 ** 20
    a, b = whole.particles.table, blocks.particles.table
    assert len(a) == len(b)
    assert list(a["class_name"]) == list(b["class_name"])
    np.testing.assert_allclose(b[["x", "y", "z"]].to_numpy(), a[["x", "y", "z"]].to_numpy(),
                               atol=1e-9)
    np.testing.assert_array_equal(b["score"].to_numpy(), a["score"].to_numpy())


def test_blockwise_candidate_features_equal_whole_volume_ones(noisy_case):
    # feature balls wider than the peaks' own halo: the blocks grow their halo to hold them
    index, maps = noisy_case
    params = DetectParams(min_score=0.3)
    kwargs = {"class_names": NAMES, "voxel_size_nm": 2.0}
    peaks_only = detect(index, MapOracle(maps), params.replace(max_memory_mb=8.0), **kwargs)
    radii = (1.0, float(peaks_only.metadata["halo"] + 3))
    whole = detect(index, MapOracle(maps), params, feature_radii_vox=radii, **kwargs)
    blocks = detect(index, MapOracle(maps), params.replace(max_memory_mb=8.0),
                    feature_radii_vox=radii, **kwargs)
    assert blocks.metadata["n_blocks"] > 2
    assert blocks.metadata["halo"] >= radii[1] > peaks_only.metadata["halo"]
    assert whole.features.shape == blocks.features.shape == (len(whole.particles),
                                                            2 * (len(NAMES) + 1))
    np.testing.assert_array_equal(blocks.features, whole.features)


def test_blockwise_image_features_from_a_lazy_tomogram_equal_whole_volume_ones(tmp_path,
                                                                              noisy_case):
    # density balls wider than the peaks' halo, the tomogram an OME-Zarr read block by block
    index, maps = noisy_case
    params = DetectParams(min_score=0.3)
    kwargs = {"class_names": NAMES, "voxel_size_nm": 2.0, "feature_radii_vox": (1.0,)}
    peaks_only = detect(index, MapOracle(maps), params.replace(max_memory_mb=8.0),
                        class_names=NAMES, voxel_size_nm=2.0)
    image_radii = (0.0, 2.0, float(peaks_only.metadata["halo"] + 4))
    whole = detect(index, MapOracle(maps), params, image_radii_vox=image_radii, **kwargs)
    write_ome_zarr(tmp_path / "index.ome.zarr", index, 2.0, chunks=(16, 32, 32),
                   pyramid_levels=1)
    lazy = open_ome_zarr(tmp_path / "index.ome.zarr")
    blocks = detect(lazy, MapOracle(maps), params.replace(max_memory_mb=8.0),
                    image_radii_vox=image_radii, **kwargs)
    assert blocks.metadata["n_blocks"] > 2
    assert blocks.metadata["halo"] >= image_radii[-1] > peaks_only.metadata["halo"]
    assert whole.features.shape == blocks.features.shape == (len(whole.particles),
                                                            len(NAMES) + 1 + 5)
    np.testing.assert_allclose(blocks.features, whole.features, rtol=1e-6, atol=1e-6)
    # the budget holds the block's maps, its peak buffers and its tomogram region (float32)
    bytes_per_voxel = 2 * (len(NAMES) + 1) + 4 + 5 * blocks.metadata["peak_threads"]
    assert math.prod(blocks.metadata["block_shape"]) * bytes_per_voxel <= 8 * 2 ** 20


def test_memory_budget_that_cannot_hold_one_block_is_refused(noisy_case):
    index, maps = noisy_case
    with pytest.raises(ValueError, match="max_memory_mb"):
        detect(index, MapOracle(maps), DetectParams(max_memory_mb=0.5), class_names=NAMES,
               voxel_size_nm=2.0)
    with pytest.raises(ValueError, match="max_memory_mb"):
        DetectParams(max_memory_mb=-1)


def test_lazy_volumes_of_a_gib_or_more_get_a_quarter_of_their_size_as_budget(tmp_path):
    import dask.array as da

    from napari_shrec.core.detect import memory_budget_mb

    big = da.zeros((512, 1024, 1024), dtype=np.float32, chunks=64)  # 2 GiB, lazy
    assert memory_budget_mb(2048.0, big) == pytest.approx(512.0)
    assert memory_budget_mb(300.0, big) == 300.0  # a smaller asked budget stands
    assert memory_budget_mb(0.0, big) == 0.0  # 0 stays "no limit"
    small = da.zeros((256, 512, 512), dtype=np.float32, chunks=64)  # 256 MiB: unchanged
    assert memory_budget_mb(2048.0, small) == 2048.0
    mapped = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                       shape=(256, 1024, 1024))  # 1 GiB memory-mapped
    assert memory_budget_mb(2048.0, mapped) == pytest.approx(256.0)
    in_memory = np.broadcast_to(np.float32(0), (256, 1024, 1024))  # in memory: unchanged
    assert memory_budget_mb(2048.0, np.asarray(in_memory)) == 2048.0


# --------------------------------------------------------------------------- CLI
def test_cli_detects_and_describes_an_ome_zarr_tomogram(tmp_path, capsys):
    from napari_shrec.core.pretrained import detect_with_model, load_model
    from napari_shrec.io.particles import read_particles

    rng = np.random.default_rng(2)
    tomogram = ndimage.gaussian_filter(rng.normal(size=(48, 80, 80)), 2).astype(np.float32)
    path = tmp_path / "tomo.ome.zarr"
    write_ome_zarr(path, tomogram, 1.0, pyramid_levels=2)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "shape (z, y, x) (48, 80, 80)" in out and "voxel size (z, y, x) 1 1 1 nm" in out
    assert "2 levels" in out and "level 1 (s1): (24, 40, 40)" in out
    picks = tmp_path / "picks.csv"
    argv = ["detect", str(path), "--out", str(picks), "--device", "cpu", "--min-score", "0.2"]
    assert main(argv) == 0
    found = read_particles(picks)
    expected = detect_with_model(tomogram, load_model(None, device="cpu"), min_score=0.2,
                                 class_thresholds=None).particles
    assert len(found) == len(expected)
    np.testing.assert_allclose(found.table[["x", "y", "z"]].to_numpy(),
                               expected.table[["x", "y", "z"]].to_numpy(), atol=1e-3)
    assert main(argv) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- napari reader
def test_reader_opens_ome_zarr_and_big_mrc_as_lazy_multiscale_layers(tmp_path, monkeypatch,
                                                                     volume):
    from napari_shrec import _reader

    path = tmp_path / "tomo.ome.zarr"
    write_ome_zarr(path, volume, (1.5, 1.0, 1.0), pyramid_levels=3)
    assert _reader.get_ome_zarr_reader(str(tmp_path)) is None
    reader = _reader.get_ome_zarr_reader(str(path))
    assert reader is not None and _reader.get_mrc_reader(str(path)) is None
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["multiscale"] and kwargs["name"] == "tomo"
    assert [d.shape for d in data] == [(24, 40, 56), (12, 20, 28), (6, 10, 14)]
    assert type(data[0]).__module__.startswith("dask")
    np.testing.assert_allclose(kwargs["scale"], (1.5, 1.0, 1.0))
    assert kwargs["units"] == UNITS_NM
    # an MRC above the size threshold: a dask pyramid of block means, computed lazily
    mrc = tmp_path / "big.mrc"
    write_mrc(mrc, volume, voxel_size_nm=0.8)
    monkeypatch.setattr(_reader, "LAZY_PYRAMID_BYTES", volume.nbytes - 1)
    monkeypatch.setattr("napari_shrec.io.zarr.COARSEST_EDGE", 16)  # 56 → 28 → 14
    [(levels, kwargs, _)] = _reader.get_mrc_reader(str(mrc))(str(mrc))
    assert kwargs["multiscale"] and len(levels) == kwargs["metadata"]["lazy_pyramid_levels"] == 3
    assert [d.shape for d in levels] == [(24, 40, 56), (12, 20, 28), (6, 10, 14)]
    np.testing.assert_allclose(kwargs["scale"], (0.8, 0.8, 0.8))
    np.testing.assert_array_equal(np.asarray(levels[0]), volume)
    np.testing.assert_allclose(np.asarray(levels[1]), block_mean(volume), atol=1e-6)
    monkeypatch.setattr(_reader, "LAZY_PYRAMID_BYTES", volume.nbytes)
    [(plain, kwargs, _)] = _reader.get_mrc_reader(str(mrc))(str(mrc))
    assert isinstance(plain, np.memmap) and "multiscale" not in kwargs

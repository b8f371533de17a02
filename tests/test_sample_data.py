"""napari sample data "SHREC demo (small)": simulated once into the cache, then reused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from napari_shrec._sample_data import (
    SAMPLE_SEED,
    ensure_sample_dataset,
    is_complete_sample,
    sample_folder,
    sample_layers,
    sample_params,
)
from napari_shrec.core.classes import SHREC20_TABLE
from napari_shrec.io.particles import read_particles

ENV = {"NAPARI_SHREC_DEVICE": "cpu"}


def _isolate(mp: pytest.MonkeyPatch, settings: Path) -> None:
    mp.setenv("NAPARI_SHREC_SETTINGS", str(settings))
    for key, value in ENV.items():
        mp.setenv(key, value)
    mp.delenv("NAPARI_SHREC_STRUCTURES", raising=False)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(cache root, dataset folder) of the real sample, simulated once for this module."""
    root = tmp_path_factory.mktemp("sample-cache")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, root / "settings.json")
        yield root, ensure_sample_dataset(cache_dir=root)


@pytest.fixture(autouse=True)
def _same_settings(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(monkeypatch, tmp_path_factory.getbasetemp() / "sample-settings.json")


def test_the_sample_is_the_small_preset_simulated_offline(sample, monkeypatch) -> None:
    root, folder = sample
    params = sample_params()
    assert params.seed == SAMPLE_SEED and params.preset == "small"
    assert not params.download_structures and params.tiltseries.device == "cpu"
    assert folder == sample_folder(params, root)
    assert folder.parent == root / "sample_data" and folder.name.startswith("shrec-demo-small-")
    assert is_complete_sample(folder)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    # another seed or device is another cache entry
    assert sample_folder(sample_params(seed=1), root) != folder
    assert sample_folder(sample_params(device="cuda"), root) != folder
    monkeypatch.setattr("napari_shrec.core.tiltseries.IMAGE_SNR_PER_SNR", 50.0)
    assert sample_folder(params, root) != folder  # another SNR calibration: another sample


def test_layers_reconstruction_class_mask_ground_truth(sample) -> None:
    _, folder = sample
    layers = sample_layers(folder)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("SHREC demo reconstruction", "image"), ("SHREC demo class mask", "labels"),
        ("SHREC demo ground truth", "points")]
    (recon, recon_kw, _), (mask, mask_kw, _), (points, points_kw, _) = layers
    assert recon.shape == mask.shape == (64, 128, 128)
    for kw in (recon_kw, mask_kw, points_kw):
        assert tuple(kw["scale"]) == (1.0, 1.0, 1.0)  # nm per voxel, z y x
        assert tuple(kw["translate"]) == (0.0, 0.0, 0.0)
        assert kw["metadata"]["dataset"] == str(folder)
    assert np.isfinite(recon).all() and recon.std() > 0

    truth = read_particles(folder / "particle_locations.txt")
    assert 30 <= len(truth) <= 40
    assert len(points) == len(truth)
    # points are (z, y, x) voxels of the same grid as the volumes
    np.testing.assert_allclose(points, truth.table[["z", "y", "x"]].to_numpy())
    names = set(points_kw["features"]["class"].astype(str))
    assert names == set(truth.class_names) and names <= set(SHREC20_TABLE.names)
    # the class mask holds the class ids of the particles, coloured by class
    ids = {c.name: c.id for c in SHREC20_TABLE}
    present = set(np.unique(mask)) - {0}
    assert present and present <= {ids[n] for n in names}
    colormap = mask_kw["colormap"]
    colors = colormap["color_dict"] if "color_dict" in colormap else colormap
    for value in present:
        assert value in colors


def test_a_second_opening_reuses_the_cached_dataset(sample, monkeypatch) -> None:
    root, folder = sample
    stamp = (folder / "simulation.json").stat().st_mtime_ns

    def no_simulation(*_args, **_kwargs):
        raise AssertionError("the cached sample was simulated again")

    monkeypatch.setattr("napari_shrec.core.simulate.run_simulation", no_simulation)
    assert ensure_sample_dataset(cache_dir=root) == folder
    assert (folder / "simulation.json").stat().st_mtime_ns == stamp


def test_an_incomplete_cache_entry_is_simulated_again(tmp_path: Path) -> None:
    from napari_shrec.core.simulate import simulation_params

    params = simulation_params("small", seed=3, shape_zyx=(32, 48, 48), n_particles=(2, 2),
                               classes=("4d8q",), download_structures=False, device="cpu")
    folder = sample_folder(params, tmp_path)
    folder.mkdir(parents=True)
    (folder / "class_mask.mrc").write_bytes(b"half written")  # no simulation.json
    assert ensure_sample_dataset(params, tmp_path) == folder
    assert is_complete_sample(folder)
    assert sorted(os.listdir(folder.parent)) == [folder.name]


def test_napari_opens_the_sample_from_the_menu_entry(sample, monkeypatch, shrec_plugin) -> None:
    pytest.importorskip("napari")
    from napari.components import ViewerModel

    from napari_shrec.widgets import settings as widget_settings

    root, folder = sample
    monkeypatch.setenv("NAPARI_SHREC_CACHE_DIR", str(root))
    # never touch the napari Preferences of the person running the tests
    monkeypatch.setattr(widget_settings, "_napari_plugin_settings", lambda: None)
    monkeypatch.setattr("napari_shrec.core.simulate.run_simulation", None)  # reuse only
    viewer = ViewerModel()
    layers = viewer.open_sample("napari-shrec", "shrec_demo_small")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels", "Points"]
    assert [layer.name for layer in viewer.layers] == [
        "SHREC demo reconstruction", "SHREC demo class mask", "SHREC demo ground truth"]
    assert tuple(viewer.layers[0].scale) == (1.0, 1.0, 1.0)
    assert str(viewer.layers[0].units[0]) in ("nm", "nanometer")
    assert len(viewer.layers[2].data) == len(read_particles(folder / "particle_locations.txt"))

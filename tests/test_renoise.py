"""Re-noising a simulated dataset at another SNR from its noise-free tilt series."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_shrec.core.renoise import renoise_dataset
from napari_shrec.io.mrc import read_mrc


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from napari_shrec.core.simulate import run_simulation, simulation_params

    folder = tmp_path_factory.mktemp("renoise") / "small"
    params = simulation_params("small", seed=8, structure_sources=[], download_structures=False,
                               n_particles=(6, 6), classes=("1bxn", "4cr2"),
                               tilt_angles_deg=tuple(np.arange(-60.0, 61.0, 10.0)))
    run_simulation(params, folder)
    return folder


def test_renoised_copy_has_the_asked_snr_and_the_same_ground_truth(sim, tmp_path):
    out = renoise_dataset(sim, tmp_path / "snr0.05", snr=0.05, seed=3)
    record = json.loads((out / "simulation.json").read_text())
    assert record["renoised_from"] == {"folder": str(sim), "snr": 0.05, "seed": 3}
    assert record["params"]["tiltseries"]["snr"] == 0.05
    np.testing.assert_allclose(record["measured_snr"], 0.05, rtol=0.05)
    for name in ("class_mask.mrc", "occupancy_mask.mrc", "particle_locations.txt"):
        assert (out / name).read_bytes() == (sim / name).read_bytes()
    noisefree = read_mrc(sim / "projections_noisefree.mrc").data
    noisy = read_mrc(out / "projections.mrc").data
    residual = np.asarray(noisy) - np.asarray(noisefree)
    ratio = np.asarray(noisefree).var(axis=(1, 2)) / residual.var(axis=(1, 2))
    # snr is on the paper's scale: the image ratio is 75 × snr
    assert record["image_snr_per_snr"] == 75.0
    np.testing.assert_allclose(ratio, 0.05 * 75.0, rtol=0.05)
    # the reconstruction is in the grandmodel frame, and less noisy than the original's
    gm = np.asarray(read_mrc(sim / "grandmodel_noisefree.mrc").data, dtype=np.float64)
    new = np.asarray(read_mrc(out / "reconstruction.mrc").data, dtype=np.float64)
    old = np.asarray(read_mrc(sim / "reconstruction.mrc").data, dtype=np.float64)
    assert new.shape == gm.shape
    corr = [np.corrcoef(v.ravel(), gm.ravel())[0, 1] for v in (old, new)]
    assert corr[1] > corr[0] > 0
    # same seed, same bytes; an existing folder is never replaced unasked
    again = renoise_dataset(sim, tmp_path / "again", snr=0.05, seed=3)
    assert (again / "reconstruction.mrc").read_bytes() == (out / "reconstruction.mrc").read_bytes()
    with pytest.raises(FileExistsError):
        renoise_dataset(sim, out, snr=0.05, seed=3)


def test_renoise_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="projections_noisefree.mrc"):
        renoise_dataset(tmp_path, tmp_path / "out", snr=0.1, seed=0)
    with pytest.raises(ValueError, match="snr"):
        renoise_dataset(tmp_path, tmp_path / "out", snr=0.0, seed=0)

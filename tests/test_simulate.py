"""End to end: the small preset writes a dataset folder that the rest of napari-shrec reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_shrec.cli import main
from napari_shrec.core.simulate import PRESETS, run_simulation, simulation_params

FAST = {"tilt_angles_deg": (-30.0, 0.0, 30.0), "n_particles": (14, 16)}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim") / "small"
    params = simulation_params("small", seed=7, structure_sources=[], download_structures=False,
                               **FAST)
    return params, run_simulation(params, folder)


def test_small_preset_writes_a_complete_dataset(small_run) -> None:
    from napari_shrec.io.dataset import load_dataset, read_alignment_file
    from napari_shrec.io.tilt_angles import read_tlt

    params, result = small_run
    dataset = load_dataset(result.folder)
    assert dataset.flavour == "napari-shrec"
    for name in ("grandmodel", "grandmodel_noisefree", "class_mask", "class_bbox",
                 "occupancy_mask", "occupancy_bbox", "projections", "projections_noisefree"):
        assert dataset.has(name), name
    assert dataset.read_volume("grandmodel").data.shape == PRESETS["small"]["shape_zyx"]
    assert dataset.read_volume("projections").data.shape == (3, 128, 128)
    np.testing.assert_allclose(dataset.tilt_angles_deg, (-30, 0, 30))
    np.testing.assert_allclose(read_tlt(result.folder / "projections.tlt"), (-30, 0, 30))
    np.testing.assert_allclose(read_alignment_file(result.folder / "alignment_simulated.txt"),
                               (-30, 0, 30))
    # Particle list, masks and grandmodel agree through the files.
    particles = dataset.particles
    assert 14 <= len(particles) <= 16
    occupancy = np.asarray(dataset.read_volume("occupancy_mask").data)
    classes = np.asarray(dataset.read_class_mask().data)
    for row, (x, y, z) in enumerate(particles.coords_xyz().astype(int), start=1):
        assert occupancy[z, y, x] == row
        assert dataset.class_table.by_id(int(classes[z, y, x])).name == \
            particles.class_names[row - 1]
    record = json.loads((result.folder / "simulation.json").read_text())
    assert record["seed"] == 7 and record["params"]["preset"] == "small"
    assert record["surrogate_classes"] == sorted(record["surrogate_classes"], key=list(
        record["structures"]).index) and set(record["surrogate_classes"]) == set(
        record["structures"])  # no sources, no downloads: every class is a surrogate
    assert record["report"]["n_placed"] == len(particles)
    assert record["measured_snr"] == pytest.approx([0.004] * 3, rel=0.1)


def test_the_ground_truth_scores_perfectly_against_itself(small_run) -> None:
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth

    _, result = small_run
    truth = scoring_ground_truth(load_dataset(result.folder))
    score = score_submission(truth.particles, truth.occupancy_mask, truth.particles,
                             ScoreParams(mode=truth.default_mode))
    assert score.F1 == 1.0 and score.FP == 0 and score.mean_class_F1 == 1.0


def test_same_seed_same_files_and_overwrite_is_refused_first(small_run, tmp_path) -> None:
    params, result = small_run
    again = run_simulation(params, tmp_path / "again")
    for name in ("grandmodel.mrc", "class_mask.mrc", "occupancy_mask.mrc", "projections.mrc",
                 "particle_locations.txt", "projections.tlt"):
        assert (tmp_path / "again" / name).read_bytes() == \
            (result.folder / name).read_bytes(), name
    before = (tmp_path / "again" / "projections.mrc").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already exists"):
        run_simulation(params, tmp_path / "again")
    assert (tmp_path / "again" / "projections.mrc").stat().st_mtime_ns == before


def test_preset_and_override_errors() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        simulation_params("huge")
    with pytest.raises(ValueError, match="unknown simulation parameter"):
        simulation_params("small", particle_count=3)
    full = simulation_params("shrec2020", structure_sources=[])
    assert full.grandmodel.shape_zyx == (200, 512, 512)
    assert full.grandmodel.n_particles == (2400, 2800)
    assert len(full.tiltseries.tilt_angles_deg) == 41
    assert full.grandmodel.orientation_sampler == "uniform"
    assert simulation_params("small", seed=1).grandmodel.seed != \
        simulation_params("small", seed=2).grandmodel.seed


def test_cli_simulate(tmp_path: Path, capsys, structures_dir: Path) -> None:
    out = tmp_path / "cli"
    assert main(["simulate", "--preset", "small", "--out", str(out), "--seed", "2",
                 "--structures", str(structures_dir / "pdb"), "--no-download",
                 "--particles", "6", "6", "--classes", "1bxn,3cf3,4d8q",
                 "--tilt-range", "-6", "6", "6", "--snr", "0.01"]) == 0
    captured = capsys.readouterr()
    assert "particles: 6 placed of 6 requested" in captured.out
    assert "atomic-model: 3cf3, 1bxn" in captured.out or "atomic-model: 1bxn, 3cf3" in \
        captured.out
    assert "surrogate: 4d8q" in captured.out
    assert "tilt series: 3 tilts -6…6°" in captured.out
    record = json.loads((out / "simulation.json").read_text())
    assert record["params"]["tiltseries"]["snr"] == 0.01
    assert main(["simulate", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "x"), "--structures",
                 str(tmp_path / "missing")]) == 2
    assert main(["simulate", "--out", str(tmp_path / "y"), "--tilt-range", "10", "0", "1"]) == 2

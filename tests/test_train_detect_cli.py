"""Training-data crops, detection settings stored in checkpoints, detection with a loaded model,
and the ``napari-shrec train`` / ``detect`` commands."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_shrec.cli import main  # noqa: E402
from napari_shrec.core.detect import DetectParams  # noqa: E402
from napari_shrec.core.nets.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from napari_shrec.core.nets.unet import UNet3D, UNet3DConfig  # noqa: E402
from napari_shrec.core.particles import ParticleList  # noqa: E402
from napari_shrec.core.pretrained import detect_with_model, load_model  # noqa: E402
from napari_shrec.core.score import ScoreParams, score_submission  # noqa: E402
from napari_shrec.core.train import (  # noqa: E402
    GroundTruth,
    TrainingData,
    TrainingVolume,
    store_detection_settings,
    validate,
)
from napari_shrec.io.particles import read_particles  # noqa: E402

CLASSES = ("1bxn", "3cf3", "1qvr", "4cr2")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from napari_shrec.core.simulate import run_simulation, simulation_params

    folder = tmp_path_factory.mktemp("cli-train") / "small"
    params = simulation_params("small", seed=31, structure_sources=[], download_structures=False,
                               n_particles=(16, 16), classes=CLASSES,
                               tilt_angles_deg=tuple(np.arange(-60.0, 61.0, 6.0)))
    run_simulation(params, folder)
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = UNet3DConfig(n_classes=len(CLASSES) + 1, width=4, depth=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, UNet3D(config), config, class_names=CLASSES,
                    normalization={"method": "robust", "low_percentile": 25.0,
                                   "high_percentile": 75.0, "clip": 10.0},
                    provenance={"training": {"params": {"patch_size": [32, 32, 32]}}})
    return path


# --------------------------------------------------------------------------- crops
def _volume_with_ground_truth():
    """A 20×40×40 volume with three cubic particles, ids 1…3 in the occupancy mask."""
    shape = (20, 40, 40)
    occupancy = np.zeros(shape, dtype=np.int32)
    centres_zyx = [(10, 10, 10), (10, 30, 30), (10, 10, 30)]
    names = ["1bxn", "3cf3", "1qvr"]
    for i, (z, y, x) in enumerate(centres_zyx, start=1):
        occupancy[z - 3:z + 4, y - 3:y + 4, x - 3:x + 4] = i
    particles = ParticleList.from_arrays(names, [(x, y, z) for z, y, x in centres_zyx])
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    return TrainingVolume("v", image, labels, np.array(centres_zyx), np.array([1, 2, 3]),
                          ground_truth=GroundTruth(particles, occupancy))


def test_crop_renumbers_the_ground_truth_and_shifts_everything():
    volume = _volume_with_ground_truth()
    crop = volume.crop((None, (0, 20), (5, 40)))  # y 0…19, x 5…39: particles 1 and 3
    assert crop.shape == (20, 20, 35)
    np.testing.assert_array_equal(crop.image, volume.image[:, :20, 5:])
    np.testing.assert_array_equal(crop.centres_zyx, [[10, 10, 5], [10, 10, 25]])
    np.testing.assert_array_equal(crop.centre_channels, [1, 3])
    gt = crop.ground_truth
    assert list(gt.particles.class_names) == ["1bxn", "1qvr"]
    np.testing.assert_allclose(gt.particles.coords_xyz(), [[5, 10, 10], [25, 10, 10]])
    assert set(np.unique(gt.occupancy_mask)) == {0, 1, 2}
    # the renumbered mask still marks each particle's own voxels
    assert gt.occupancy_mask[10, 10, 5] == 1 and gt.occupancy_mask[10, 10, 25] == 2
    assert crop.source["crop_zyx"] == [[0, 20], [0, 20], [5, 40]]


def test_crop_validates_its_box():
    volume = _volume_with_ground_truth()
    with pytest.raises(ValueError, match="axis y"):
        volume.crop((None, (30, 50), None))
    with pytest.raises(ValueError, match="3 ranges"):
        volume.crop((None, None))


def test_validation_on_a_crop_scores_a_perfect_detector_perfectly():
    volume = _volume_with_ground_truth()
    data = TrainingData([volume], ("1bxn", "3cf3", "1qvr")).cropped((None, (0, 20), (5, 40)))

    def oracle(vol, predictor, params=None, *, class_names, slab_z=None, progress=None,
               cancel=None):
        return SimpleNamespace(particles=data.volumes[0].ground_truth.particles)

    metrics = validate(SimpleNamespace(), data, detect_fn=oracle)
    assert metrics["loc_F1"] == 1.0 and metrics["n_predicted"] == 2


# --------------------------------------------------------------------------- checkpoints
def test_detection_settings_round_trip_through_the_checkpoint(tiny_checkpoint, tmp_path):
    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.detection is None
    assert loaded.patch_size == (32, 32, 32)  # from the training record
    assert loaded.detect_params() == DetectParams()
    params = DetectParams(min_score=0.3, class_thresholds={"1bxn": 0.45, "4CR2": 0.7},
                          overlap=0.5)
    out = store_detection_settings(tiny_checkpoint, params, patch_size=(40, 40, 40),
                                   tuned_on=["val/"], out=tmp_path / "tuned.pt")
    tuned = load_checkpoint(out)
    assert tuned.patch_size == (40, 40, 40)
    assert tuned.detection["tuned_on"] == ["val/"]
    assert tuned.detect_params() == params
    assert tuned.detect_params(min_score=0.6).min_score == 0.6
    assert dict(tuned.detect_params().class_thresholds) == {"1bxn": 0.45, "4cr2": 0.7}
    # the weights are untouched
    for a, b in zip(loaded.model.state_dict().values(), tuned.model.state_dict().values()):
        assert torch.equal(a, b)
    # another file is never replaced unasked
    with pytest.raises(FileExistsError):
        store_detection_settings(tiny_checkpoint, params, out=out)


def test_detect_with_model_normalises_with_the_tomogram_and_records_the_model(
        sim, tiny_checkpoint):
    from napari_shrec.io.dataset import load_dataset

    model = load_model(tiny_checkpoint, device="cpu")
    recon = load_dataset(sim).read_volume("reconstruction")
    result = detect_with_model(recon, model, min_score=0.0, slab_z=(4, 36))
    assert result.slab_z == (4, 36) and result.n_patches > 0
    assert result.particles.metadata["model"] == str(tiny_checkpoint)
    assert set(result.particles.class_names) <= set(CLASSES)
    # the shipped normalisation path: a scaled and shifted tomogram gives the same maps
    scaled = detect_with_model(np.asarray(recon.data) * 7.0 + 3.0, model,
                               keep_probability_maps=True, min_score=0.0, slab_z=(4, 36))
    plain = detect_with_model(recon, model, keep_probability_maps=True, min_score=0.0,
                              slab_z=(4, 36))
    np.testing.assert_allclose(scaled.probability_maps.astype(np.float32),
                               plain.probability_maps.astype(np.float32), atol=2e-3)


def test_the_shipped_model_is_in_the_package():
    from napari_shrec.core.pretrained import default_model_path

    model = load_model(None, device="cpu")
    assert model.path == default_model_path()
    assert default_model_path().stat().st_size < 8e6  # a few MB
    assert len(model.class_names) == 12
    params = model.detect_params()
    assert params.class_thresholds is not None and set(params.class_thresholds) <= set(
        model.class_names)
    assert model.provenance["training"]["model_parameters"] > 0
    # its rescorer reads the maps and the tomogram's density around each candidate
    assert model.rescorer is not None and model.rescorer.uses_image
    assert model.rescorer.n_features == 13 * 4 + 11


# --------------------------------------------------------------------------- CLI
def test_cli_train_then_detect_round_trip(sim, tmp_path, capsys):
    model = tmp_path / "m.pt"
    argv = ["train", str(sim), "--val", str(sim), "--out", str(model), "--classes", *CLASSES,
            "--epochs", "2", "--steps", "3", "--patch", "32", "--width", "4",
            "--device", "cpu", "--tune-min-score", "0.2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "validation loc F1" in out and "tuned thresholds" in out
    # the validation candidates hit ≥ 3 particles of each of the 4 classes: a rescorer is fitted
    assert "candidate rescorer fitted on" in out
    for path in (model, model.with_name("m.best.pt")):
        loaded = load_checkpoint(path)
        assert loaded.class_names == CLASSES and loaded.epoch in (1, 2)
        assert loaded.detection["params"]["min_score"] == 0.2
        assert loaded.detection["patch_size"] == [32, 32, 32]
        assert loaded.rescorer is not None and loaded.rescorer.class_names == CLASSES
        assert loaded.rescorer.fitted_on["volumes"] == [str(sim)]
        assert loaded.rescorer.image_radii_vox == (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
        assert loaded.detect_params(rescore=False).min_score == 0.2
        assert set(loaded.detection["params_without_rescorer"]["class_thresholds"]) <= set(
            CLASSES)
    # without --overwrite the checkpoint is never replaced
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err

    picks = tmp_path / "picks.star"
    assert main(["detect", str(sim), "--model", str(model), "--out", str(picks),
                 "--min-score", "0.0", "--device", "cpu", "--score"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "F1 Score" in printed
    particles = read_particles(picks)
    assert len(particles) > 0 and "score" in particles.table
    # grandmodel frame: every z inside the 64-slice sample
    assert particles.coords_xyz()[:, 2].min() >= -0.5
    assert particles.coords_xyz()[:, 2].max() <= 63.5
    # the printed score is the scorer's
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth

    gt = scoring_ground_truth(load_dataset(sim))
    result = score_submission(gt.particles, gt.occupancy_mask, particles,
                              ScoreParams(mode="native"), class_table=gt.class_table)
    assert f"{result.F1:.3f}" in printed
    assert main(["detect", str(sim), "--model", str(model), "--out", str(picks)]) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_detect_writes_probability_maps(sim, tiny_checkpoint, tmp_path, capsys):
    from napari_shrec.io.mrc import read_mrc

    recon = sim / "reconstruction.mrc"
    maps = tmp_path / "maps"
    assert main(["detect", str(recon), "--model", str(tiny_checkpoint), "--out",
                 str(tmp_path / "p.txt"), "--maps-dir", str(maps), "--slab", "0", "32",
                 "--device", "cpu", "--test-time-flips", "2"]) == 0
    capsys.readouterr()
    files = sorted(p.name for p in maps.iterdir())
    assert files == sorted(f"prob_{c}.mrc" for c in CLASSES)
    prob = read_mrc(maps / "prob_1bxn.mrc").data
    assert prob.shape == read_mrc(recon).shape
    assert float(prob[40:].max()) == 0.0  # outside the slab: background only
    assert 0.0 <= float(prob.min()) and float(prob.max()) <= 1.0


@pytest.mark.parametrize("argv,message", [
    (["--out", "p.pdf"], "p.pdf"),
    (["--out", "p.txt", "--threshold", "1bxn"], "CLASS=SCORE"),
    (["--out", "p.txt", "--slab", "50", "20"], "--slab"),
    (["--out", "p.txt", "--test-time-flips", "9"], "test_time_flips must be an integer in [1, 8]"),
])
def test_cli_detect_rejects_bad_input_before_any_work(sim, tiny_checkpoint, tmp_path, capsys,
                                                      argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["detect", str(sim / "reconstruction.mrc"), "--model", str(tiny_checkpoint),
                 *argv])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_detect_names_a_missing_model(sim, tmp_path, capsys):
    code = main(["detect", str(sim), "--model", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "p.txt")])
    assert code == 2 and "none.pt" in capsys.readouterr().err


def test_cli_train_from_clicked_centres(sim, tmp_path, capsys):
    """--pair: a tomogram and a particle list only (ball targets), classes in table order."""
    clicks = tmp_path / "clicks.csv"
    from napari_shrec.io.dataset import load_dataset
    from napari_shrec.io.particles import write_particles

    write_particles(clicks, load_dataset(sim).particles)
    out = tmp_path / "pair.pt"
    assert main(["train", "--pair", str(sim / "reconstruction.mrc"), str(clicks), "--out",
                 str(out), "--epochs", "1", "--steps", "2", "--patch", "32", "--width", "4",
                 "--device", "cpu"]) == 0
    loaded = load_checkpoint(out)
    assert loaded.class_names == ("3cf3", "1bxn", "1qvr", "4cr2")  # SHREC table order
    assert loaded.provenance["training"]["data"][0]["target"] == "spheres"
    assert math.isfinite(loaded.history[0]["loss"])
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "x.pt")]) == 2
    assert "DATASET" in capsys.readouterr().err

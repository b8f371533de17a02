"""End to end on the ``small`` preset, every CI run: simulate, train a small U-Net for a couple of
minutes on the CPU, detect on the training tomogram, score. The loss must fall and the large
classes must be found."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

LARGE = ("1bxn", "3cf3", "1qvr", "4cr2")


def test_small_training_run_learns_the_large_classes(tmp_path):
    from napari_shrec.core.nets.unet import UNet3DConfig
    from napari_shrec.core.pretrained import detect_with_model, load_model
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.core.simulate import run_simulation, simulation_params
    from napari_shrec.core.train import TrainingData, TrainParams, train
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth

    folder = tmp_path / "small"
    # offline surrogate structures: the test needs no structure files and never skips
    params = simulation_params("small", seed=5, structure_sources=[], download_structures=False,
                               n_particles=(24, 24), classes=LARGE, snr=0.002)
    run_simulation(params, folder)

    data = TrainingData.from_folders(folder, class_names=LARGE)
    train_params = TrainParams(patch_size=(32, 32, 32), batch_size=4, epochs=1,
                               steps_per_epoch=160, learning_rate=1e-3, seed=0, threads=2)
    result = train(data, train_params, model_config=UNet3DConfig(n_classes=5, width=8, depth=3),
                   out=tmp_path / "m.pt")
    losses = np.asarray(result.history[0]["step_losses"])
    assert np.all(np.isfinite(losses))
    assert losses[-20:].mean() < 0.7 * losses[:10].mean()

    model = load_model(tmp_path / "m.pt", device="cpu")
    ds = load_dataset(folder)
    detection = detect_with_model(ds.read_volume("reconstruction"), model,
                                  patch_size=(32, 32, 32), min_score=0.3)
    gt = scoring_ground_truth(ds)
    score = score_submission(gt.particles, gt.occupancy_mask, detection.particles,
                             ScoreParams(mode="native"), class_table=gt.class_table)
    assert score.recall >= 0.6, score.recall
    assert score.F1 >= 0.6, score.F1

"""The Train and Detect dock widgets on a bare ViewerModel (offscreen Qt): real training, real
detection.

One tiny dataset is simulated per module (surrogate structures, 32 × 64 × 64 voxels of 1 nm,
12 particles of two classes, 13 tilts), and one tiny checkpoint (width 4) is trained on it for the
Detect tests. PyTorch runs on one thread: on a busy 2-core machine two threads fighting over the
cores make a step 20 × slower.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")
torch = pytest.importorskip("torch")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Layer, Points  # noqa: E402

from napari_shrec._reader import read_dataset_layers  # noqa: E402
from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.core.nets.checkpoint import load_checkpoint  # noqa: E402
from napari_shrec.core.simulate import run_simulation, simulation_params  # noqa: E402
from napari_shrec.core.train import best_checkpoint_path  # noqa: E402
from napari_shrec.widgets import detect as detect_module  # noqa: E402
from napari_shrec.widgets import train as train_module  # noqa: E402
from napari_shrec.widgets.detect import (  # noqa: E402
    MODEL_CHECKPOINT,
    SOURCE_FILE,
    DetectWidget,
    use_checkpoint_in_detect,
)
from napari_shrec.widgets.train import TrainWidget  # noqa: E402

pytestmark = pytest.mark.napari

CLASSES = ("1bxn", "4cr2")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-detect-widgets") / "sim"
    params = simulation_params("small", seed=11, structure_sources=[],
                               download_structures=False, n_particles=(12, 12), classes=CLASSES,
                               shape_zyx=(32, 64, 64),
                               tilt_angles_deg=tuple(np.arange(-60.0, 61.0, 10.0)))
    run_simulation(params, folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    """A tiny trained model with stored detection settings (thresholds) — made with the core
    API, so the Detect tests do not depend on the Train widget."""
    from napari_shrec.core.detect import DetectParams
    from napari_shrec.core.nets.unet import UNet3DConfig
    from napari_shrec.core.train import TrainingData, TrainParams, store_detection_settings, train

    data = TrainingData.from_folders([dataset])
    out = tmp_path_factory.mktemp("detect-model") / "tiny.pt"
    params = TrainParams(patch_size=(32, 32, 32), batch_size=2, epochs=1, steps_per_epoch=2,
                         device="cpu", threads=1, seed=0)
    train(data, params, model_config=UNet3DConfig(n_classes=data.n_channels, width=4, depth=3),
          out=out)
    tuned = DetectParams(min_score=0.3, class_thresholds={CLASSES[0]: 0.35, CLASSES[1]: 0.4})
    store_detection_settings(out, tuned, patch_size=(32, 32, 32), tuned_on=[str(dataset)])
    return out


@pytest.fixture
def viewer(qtbot):
    set_threading(False)
    yield ViewerModel()
    set_threading(None)


@pytest.fixture
def notes(monkeypatch):
    """Messages shown as napari notifications: {"error": [...]}."""
    shown: dict[str, list[str]] = {"error": []}
    monkeypatch.setattr("napari.utils.notifications.show_error", shown["error"].append)
    return shown


@pytest.fixture
def no_offer(monkeypatch):
    """No checkpoint handed over by an earlier test."""
    monkeypatch.setitem(detect_module._OFFERED, "checkpoint", None)


def _reconstruction_layer(viewer, folder, translate=None):
    """The dataset reader's reconstruction layer (metadata: dataset, grandmodel_z_offset)."""
    data, kwargs, kind = read_dataset_layers(folder)[0]
    assert kwargs["metadata"]["volume"] == "reconstruction"
    if translate is not None:
        kwargs["translate"] = translate
    layer = Layer.create(data, kwargs, kind)
    viewer.layers.append(layer)
    return layer


# =========================================================================== Train
def _small_training(widget, out):
    widget.epochs_spin.setValue(2)
    widget.steps_spin.setValue(3)
    widget.patch_spin.setValue(32)
    widget.batch_spin.setValue(2)
    widget.width_spin.setValue(4)
    widget.depth_spin.setValue(3)
    widget.device_combo.setCurrentText("cpu")
    widget.threads_spin.setValue(1)
    widget.set_output(out)


def test_train_widget_trains_validates_tunes_and_asks_before_replacing(
        viewer, qtbot, dataset, tmp_path, monkeypatch, notes, no_offer):
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.training_folders() == [] and widget.history == []
    # an open dataset layer fills in the training folder and suggests the checkpoint beside it
    _reconstruction_layer(viewer, dataset)
    assert widget.training_folders() == [dataset]
    assert widget.out_edit.text() == str(dataset.with_name("sim_unet.pt"))
    widget.add_validation_folder(dataset)
    widget.add_validation_folder(dataset)  # once only
    assert widget.validation_folders() == [dataset]
    out = tmp_path / "model.pt"
    _small_training(widget, out)

    assert widget.start_training() is True
    assert not notes["error"], notes
    best = best_checkpoint_path(out)
    assert out.is_file() and best.is_file()
    # the live history (one record per epoch, from on_epoch) and the plot's data
    assert len(widget.history) == 2 and [r["epoch"] for r in widget.history] == [1, 2]
    for record in widget.history:
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        assert 0.0 <= record["val_loc_F1"] <= 1.0
        assert 0.0 <= record["val_mean_class_F1"] <= 1.0
    plot = widget.plot_data()
    assert plot["epoch"] == [1.0, 2.0] and plot["loss"] == [r["loss"] for r in widget.history]
    assert len(widget.loss_axes.get_lines()) == 1 and len(widget.f1_axes.get_lines()) == 2
    # thresholds tuned on the validation data and stored in both checkpoints
    for path in (out, best):
        loaded = load_checkpoint(path)
        assert loaded.class_names == CLASSES
        assert loaded.config.width == 4 and loaded.config.depth == 3
        assert loaded.detection is not None
        assert set(loaded.detection["params"]["class_thresholds"]) <= set(CLASSES)
        assert loaded.detection["patch_size"] == [32, 32, 32]
    output = widget.last_output
    assert output is not None and output.thresholds is not None
    assert widget.last_checkpoint == best
    status = widget.status.status.text()
    assert str(out) in status and f"best epoch {output.result.best_epoch}" in status
    assert "tuned thresholds" in status and widget.use_button.isEnabled()

    # "Use in Detect": an open Detect widget switches, and a new one starts with the checkpoint
    detect_widget = DetectWidget(viewer)
    qtbot.addWidget(detect_widget)
    assert widget.use_in_detect() >= 1
    assert detect_widget.model_combo.currentText() == MODEL_CHECKPOINT
    assert detect_widget.model_path() == best
    assert "tuned thresholds" in detect_widget.model_info.text()
    later = DetectWidget(viewer)
    qtbot.addWidget(later)
    assert later.model_path() == best

    # training again into the same file: nothing is replaced unless the user agrees
    stamps = (out.stat().st_mtime_ns, best.stat().st_mtime_ns)
    asked = []
    monkeypatch.setattr(train_module, "confirm_replace",
                        lambda parent, target: asked.append(target) or False)
    assert widget.start_training() is False
    assert asked == [out]
    assert (out.stat().st_mtime_ns, best.stat().st_mtime_ns) == stamps
    assert "Not trained" in widget.status.status.text()
    assert len(widget.history) == 2  # the last run's curves stay


def test_train_widget_in_a_worker_thread_streams_epochs_and_cancels(qtbot, dataset, tmp_path):
    """With real worker threads, epoch records reach the widget (main thread) through the
    queued signal while training runs; Cancel after the first epoch keeps its checkpoint."""
    set_threading(True)
    try:
        viewer = ViewerModel()
        widget = TrainWidget(viewer)
        qtbot.addWidget(widget)
        widget.add_training_folder(dataset)
        out = tmp_path / "threaded.pt"
        _small_training(widget, out)
        widget.epochs_spin.setValue(50)
        widget.steps_spin.setValue(1)
        seen = []
        widget._relay.epoch.connect(lambda run_id, record: (seen.append(record["epoch"]),
                                                            widget.cancel()))
        assert widget.start_training() is True
        assert widget.runner.wait(60.0)
    finally:
        set_threading(None)
    assert seen and seen[0] == 1 and widget.history[0]["epoch"] == 1
    assert len(widget.history) < 50 and widget.last_output is None
    assert out.is_file() and load_checkpoint(out).epoch == len(widget.history)
    assert widget.status.status.text().startswith(f"Cancelled after epoch {len(widget.history)}")
    assert widget.run_button.isEnabled() and not widget.use_button.isEnabled()


def test_train_widget_reports_bad_inputs(viewer, qtbot, tmp_path, notes):
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.start_training() is False
    assert widget.status.status.text().startswith("Failed: add at least one training")
    widget.add_training_folder(tmp_path / "nowhere")
    assert widget.start_training() is False
    assert "no such dataset folder" in widget.status.status.text()
    widget.train_list.clear()
    widget.add_training_folder(tmp_path)
    widget.set_output(tmp_path / "m.pt")
    widget.patch_spin.setValue(36)
    assert widget.start_training() is False
    assert "multiple of 8" in widget.status.status.text()
    assert len(notes["error"]) == 3 and all(n.startswith("Train: ") for n in notes["error"])
    assert not (tmp_path / "m.pt").exists() and widget.history == []


# =========================================================================== Detect
def _detect_widget(viewer, qtbot, checkpoint):
    widget = DetectWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_model_path(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    return widget


def test_detect_widget_on_a_layer_replaces_by_name_keeps_maps_and_scores(
        viewer, qtbot, dataset, checkpoint, notes, no_offer):
    image = _reconstruction_layer(viewer, dataset, translate=(3.0, 0.0, 0.0))
    widget = _detect_widget(viewer, qtbot, checkpoint)
    # the model's classes and tuned thresholds are shown; the layer and its dataset are found
    info = widget.model_info.text()
    assert "2 classes: 1bxn, 4cr2" in info and "1bxn 0.35" in info and "4cr2 0.40" in info
    assert widget.selected_layer() is image
    assert "dataset sim" in widget.input_info.text() and widget.score_check.isEnabled()

    assert widget.start_detection() is True
    assert not notes["error"], notes
    name = f"predictions: {image.name}"
    points = viewer.layers[name]
    assert isinstance(points, Points) and points is widget.last_layer
    assert {"class", "score", "source"} <= set(points.features.columns)
    assert len(points.data) == len(widget.last_output.result.particles)
    assert set(points.features["source"].astype(str)) <= {"predicted"}
    if len(points.data):
        assert set(points.features["class"].astype(str)) <= set(CLASSES)
        assert points.features["score"].min() >= 0.35  # the tuned thresholds applied
    np.testing.assert_allclose(points.scale, image.scale)
    np.testing.assert_allclose(points.translate, image.translate)
    meta = points.metadata["napari_shrec"]
    assert meta["model"] == str(checkpoint) and meta["params"]["class_thresholds"] == {
        "1bxn": 0.35, "4cr2": 0.4}
    assert "total" in meta["timings_s"] and meta["n_patches"] > 0
    assert points.metadata["dataset"] == str(dataset)
    assert widget.status.status.text().startswith("Found ")
    n_layers = len(viewer.layers)

    # re-run with one min score, probability maps and scoring: replaced by name, maps added
    widget.tuned_check.setChecked(False)
    widget.min_score_spin.setValue(0.2)
    widget.maps_check.setChecked(True)
    widget.score_check.setChecked(True)
    assert widget.start_detection() is True
    assert not notes["error"], notes
    new_points = viewer.layers[name]
    assert new_points is not points and new_points is widget.last_layer
    assert new_points.metadata["napari_shrec"]["params"]["class_thresholds"] is None
    maps = [viewer.layers[f"prob {c}: {image.name}"] for c in CLASSES]
    assert len(viewer.layers) == n_layers + len(CLASSES)
    for layer in maps:
        assert isinstance(layer, Image) and not layer.visible and layer.blending == "additive"
        assert layer.data.shape == image.data.shape
        assert float(np.max(layer.data)) <= 1.0 + 1e-3
        np.testing.assert_allclose(layer.translate, image.translate)
    score = widget.last_output.score
    assert score is not None and 0.0 <= score["loc_F1"] <= 1.0 and score["N_gt"] == 12
    assert "loc F1" in widget.status.status.text()
    assert new_points.metadata["napari_shrec"]["score"] == score

    # and again without maps: the stale maps of this tomogram go, the picks are replaced
    widget.maps_check.setChecked(False)
    assert widget.start_detection() is True
    assert len(viewer.layers) == n_layers
    assert [layer.name for layer in viewer.layers].count(name) == 1


def test_detect_widget_on_a_dataset_folder(viewer, qtbot, dataset, checkpoint, notes, no_offer):
    widget = _detect_widget(viewer, qtbot, checkpoint)
    widget.set_path(dataset)
    assert widget.input_kind() == SOURCE_FILE
    assert "64 × 64 × 32 voxels" in widget.input_info.text()
    widget.patch_spin.setValue(32)
    widget.flips_spin.setValue(2)
    assert widget.request().settings()["test_time_flips"] == 2
    assert widget.start_detection() is True
    assert not notes["error"], notes
    assert widget.last_output.params.test_time_flips == 2
    assert widget.last_output.result.particles.metadata["test_time_flips"] == 2
    points = viewer.layers["predictions: sim"]
    np.testing.assert_allclose(points.scale, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(points.translate, (0.0, 0.0, 0.0))
    assert widget.last_output.result.slab_z == (0, 32)


def test_detect_widget_on_an_ome_zarr_folder(viewer, qtbot, dataset, checkpoint, notes,
                                             no_offer, tmp_path):
    """An OME-Zarr image is read lazily and gives the same picks as the same voxels in an MRC."""
    from napari_shrec.io.mrc import read_mrc
    from napari_shrec.io.zarr import write_ome_zarr

    recon = read_mrc(dataset / "reconstruction.mrc")
    zarr_path = write_ome_zarr(tmp_path / "tomo.ome.zarr", recon, chunks=16)
    mrc_path = tmp_path / "tomo.mrc"
    import shutil

    shutil.copy(dataset / "reconstruction.mrc", mrc_path)
    widget = _detect_widget(viewer, qtbot, checkpoint)
    widget.patch_spin.setValue(32)
    tables = []
    for path in (zarr_path, mrc_path):
        widget.set_path(path)
        assert widget.input_kind() == SOURCE_FILE
        assert "64 × 64 × 32 voxels" in widget.input_info.text(), widget.input_info.text()
        assert "no dataset" in widget.input_info.text()
        assert widget.start_detection() is True
        assert not notes["error"], notes
        assert widget.last_output.result.slab_z == (0, 32)  # the whole volume
        tables.append(widget.last_output.result.particles.table.copy())
    assert len(tables[0]) > 0
    np.testing.assert_allclose(tables[0][["x", "y", "z"]].to_numpy(),
                               tables[1][["x", "y", "z"]].to_numpy(), atol=1e-6)
    assert list(tables[0]["class_name"]) == list(tables[1]["class_name"])
    np.testing.assert_allclose(tables[0]["score"], tables[1]["score"], atol=1e-6)


def test_detect_widget_errors_go_to_the_status_line(viewer, qtbot, dataset, checkpoint,
                                                     tmp_path, notes, no_offer):
    widget = _detect_widget(viewer, qtbot, tmp_path / "missing.pt")
    assert widget.model_info.text().startswith("⚠ no such model checkpoint")
    _reconstruction_layer(viewer, dataset)
    assert widget.start_detection() is False
    assert widget.status.status.text().startswith("Failed: no such model checkpoint")
    assert notes["error"] and notes["error"][-1].startswith("Detect: no such model checkpoint")
    # a damaged checkpoint fails in the worker: reported the same way
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    widget.set_model_path(bad)
    assert widget.start_detection() is True  # the file exists; loading it fails
    assert "not a napari-shrec model checkpoint" in widget.status.status.text()
    # no tomogram at all
    widget.set_model_path(checkpoint)
    viewer.layers.clear()
    assert widget.selected_layer() is None
    assert widget.start_detection() is False
    assert "open a tomogram" in widget.status.status.text()
    assert not any(layer.name.startswith("predictions") for layer in viewer.layers)


def test_use_checkpoint_in_detect_without_open_widgets(tmp_path, no_offer):
    assert detect_module.offered_checkpoint() is None
    assert use_checkpoint_in_detect(tmp_path / "m.pt") >= 0
    assert detect_module.offered_checkpoint() == tmp_path / "m.pt"


def test_detect_widget_offers_the_models_rescorer(viewer, qtbot, dataset, checkpoint, notes,
                                                  no_offer, tmp_path):
    from napari_shrec.core.detect import DetectParams
    from napari_shrec.core.nets.checkpoint import load_checkpoint
    from napari_shrec.core.rescore import CandidateRescorer
    from napari_shrec.core.train import store_detection_settings

    widget = _detect_widget(viewer, qtbot, checkpoint)
    widget.inspect_model()
    assert not widget.rescore_check.isEnabled() and not widget.rescore_check.isChecked()
    names = load_checkpoint(checkpoint).class_names
    rows = len(names) + 1
    rescorer = CandidateRescorer(class_names=names, radii_vox=(1.0,),
                                 coef=np.eye(rows) * 10.0, intercept=np.zeros(rows))
    with_rescorer = store_detection_settings(
        checkpoint, DetectParams(min_score=0.3), rescorer=rescorer,
        params_without_rescorer=DetectParams(min_score=0.3), out=tmp_path / "rescored.pt")
    widget.set_model_path(with_rescorer)
    assert "candidate rescorer" in widget.inspect_model()
    assert widget.rescore_check.isEnabled() and widget.rescore_check.isChecked()
    widget.set_path(dataset)
    widget.patch_spin.setValue(32)
    assert widget.request().settings()["rescore"] is True
    assert widget.start_detection() is True
    assert not notes["error"], notes
    particles = widget.last_output.result.particles
    assert particles.metadata["rescored"] is True and "peak_score" in particles.table
    assert "peak_score" in viewer.layers["predictions: sim"].features
    widget.rescore_check.setChecked(False)
    assert widget.start_detection() is True
    particles = widget.last_output.result.particles
    assert particles.metadata["rescored"] is False and "peak_score" not in particles.table

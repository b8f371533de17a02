"""The Detect widget's Template matching method on a bare ViewerModel (offscreen Qt): real
matching on a tiny simulation.

One dataset is simulated per module (surrogate structures, 32 × 64 × 64 voxels of 1 nm, three
4d8q and three 1bxn particles, SNR 0.01 (image ratio 0.75), 13 tilts); matching runs at a 60°
step (72 rotations per class) on one FFT thread, about 2 s per class on a busy 2-core machine.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Layer, Points  # noqa: E402

from napari_shrec._reader import read_dataset_layers  # noqa: E402
from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.widgets.detect import (  # noqa: E402
    METHOD_TM,
    METHOD_UNET,
    SOURCE_FILE,
    DetectWidget,
)
from napari_shrec.widgets.match_section import (  # noqa: E402
    KIND_TM_SCORE_MAP,
    tm_picks_layer_name,
    tm_score_layer_name,
)

pytestmark = pytest.mark.napari

CLASSES = ("4d8q", "1bxn")
STEP = 60.0  # 72 rotations


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from napari_shrec.core.simulate import run_simulation, simulation_params

    folder = tmp_path_factory.mktemp("match-widget") / "sim"
    params = simulation_params("small", seed=3, structure_sources=[], download_structures=False,
                               snr=0.01, classes=CLASSES, shape_zyx=(32, 64, 64),
                               n_particles=(6, 6),
                               tilt_angles_deg=tuple(np.arange(-60.0, 61.0, 10.0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(params, folder)
    return folder


@pytest.fixture
def viewer(qtbot, monkeypatch):
    # one FFT thread: two threads fighting over a busy 2-core machine are slower than one
    from napari_shrec.core import tm

    original = tm.MatchParams.__post_init__

    def one_thread(self):
        original(self)
        object.__setattr__(self, "threads", 1)

    monkeypatch.setattr(tm.MatchParams, "__post_init__", one_thread)
    set_threading(False)
    yield ViewerModel()
    set_threading(None)


@pytest.fixture
def notes(monkeypatch):
    """Messages shown as napari notifications: {"error": [...]}."""
    shown: dict[str, list[str]] = {"error": []}
    monkeypatch.setattr("napari.utils.notifications.show_error", shown["error"].append)
    return shown


def _add_dataset_layers(viewer, folder, translate=None):
    """Every layer the dataset reader makes (reconstruction visible; masks, particles hidden);
    returns the reconstruction layer."""
    recon = None
    for data, kwargs, kind in read_dataset_layers(folder):
        if kwargs.get("metadata", {}).get("volume") == "reconstruction":
            if translate is not None:
                kwargs["translate"] = translate
            recon = Layer.create(data, kwargs, kind)
            viewer.layers.append(recon)
        else:
            viewer.layers.append(Layer.create(data, kwargs, kind))
    assert recon is not None
    return recon


def _tm_widget(viewer, qtbot):
    widget = DetectWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_method(METHOD_TM)
    section = widget.match_section
    section.step_spin.setValue(STEP)
    section.expected_spin.setValue(3)
    section.device_combo.setCurrentText("cpu")
    section.download_check.setChecked(False)
    return widget


def _tm_layers(viewer):
    return [layer for layer in viewer.layers if layer.name.startswith("tm ")]


def test_dataset_layers_are_offered_and_set_the_classes(viewer, qtbot, dataset):
    widget = DetectWidget(viewer)
    qtbot.addWidget(widget)
    section = widget.match_section
    assert sorted(section.checked_classes()) == sorted(section.class_names())  # no dataset: all
    assert len(section.class_names()) == 12
    assert not section.score_check.isEnabled()
    # the Simulate/Reconstruct/reader hand-off: layers added later are offered and chosen
    recon = _add_dataset_layers(viewer, dataset)
    assert widget.layer_combo.currentText() == recon.name
    items = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert recon.name in items and all(isinstance(viewer.layers[n], Image) for n in items)
    assert sorted(section.checked_classes()) == sorted(CLASSES)  # the simulation's classes
    assert section.count_label.text() == "2 of 12"
    assert section.score_check.isEnabled()
    assert "surrogate shapes: " in section.info_label.text()
    assert "-60…60°" in section.info_label.text()
    assert section.params()[0].tilt_range_deg == (-60.0, 60.0)
    # the method switches the settings shown and the button
    assert widget.method() == METHOD_UNET  # the default
    assert widget.match_section.isHidden() and widget.run_button.text() == "Detect"
    widget.set_method(METHOD_TM)
    assert not widget.match_section.isHidden() and widget.run_button.text() == "Match templates"
    assert all(box.isHidden() for box in widget._unet_boxes)
    # the rotation count follows the step
    section.step_spin.setValue(45.0)
    assert section.rotations_label.text() == "168 rotations"
    section.step_spin.setValue(0.0)
    assert section.step_spin.text() == "Crowther" and section.params()[0].angular_step_deg is None


def test_match_on_a_layer_finds_the_particles_replaces_by_name_and_keeps_maps(
        viewer, qtbot, dataset, notes):
    from napari_shrec.io.dataset import load_dataset

    recon = _add_dataset_layers(viewer, dataset, translate=(5.0, 0.0, -3.0))
    widget = _tm_widget(viewer, qtbot)
    section = widget.match_section
    section.maps_check.setChecked(True)
    section.score_check.setChecked(True)
    n_before = len(viewer.layers)
    assert widget.start_detection()  # the Run button runs the chosen method
    assert notes["error"] == [], notes
    name = tm_picks_layer_name(recon.name)
    picks = viewer.layers[name]
    assert isinstance(picks, Points)
    assert len(viewer.layers) == n_before + 3  # picks + one score map per class
    # features: class, score, source, orientation (ZXZ degrees)
    feats = picks.features
    assert {"class", "score", "source", "phi", "theta", "psi"} <= set(feats.columns)
    assert set(feats["class"].astype(str)) <= set(CLASSES)
    assert set(feats["source"].astype(str)) == {"predicted"}
    assert np.all(np.isfinite(feats["score"])) and feats["score"].max() > 0.2
    assert len(picks.data) == 6  # N = 3 per class
    # on the tomogram: same scale and translation as its layer
    np.testing.assert_allclose(picks.scale, recon.scale)
    np.testing.assert_allclose(picks.translate, recon.translate)
    # the three true 4d8q particles (radius 8 nm) are found within 4 voxels, with the right
    # class (the missing wedge stretches them along z: one peak sits 3 voxels off in z)
    ds = load_dataset(dataset)
    truth = ds.particles.table
    offset = ds.grandmodel_z_offset
    coords = np.asarray(picks.data)
    classes = feats["class"].astype(str).to_numpy()
    for _, row in truth[truth.class_name == "4d8q"].iterrows():
        true_zyx = np.array([row.z + offset, row.y, row.x])
        dist = np.linalg.norm(coords - true_zyx, axis=1)
        k = int(np.argmin(dist))
        assert dist[k] <= 4.0 and classes[k] == "4d8q", (row, coords[k], classes[k])
    # provenance
    meta = picks.metadata
    assert meta["dataset"] == str(dataset)
    prov = meta["napari_shrec"]
    assert prov["detector"] == "template matching"
    assert prov["match_params"]["angular_step_deg"] == STEP
    assert prov["select_params"]["strategy"] == "filtered"
    assert {c: prov["classes"][c]["angles"] for c in CLASSES} == {c: 72 for c in CLASSES}
    assert prov["classes"]["4d8q"]["surrogate"] is True
    assert prov["timings_s"]["matching"] > 0 and prov["device"] == "cpu"
    assert prov["score"] is not None and prov["score"]["loc_F1"] > 0.3
    assert "loc F1" in widget.status.status.text()
    # score maps: hidden, class colour, the tomogram's size and placement
    for cls in CLASSES:
        layer = viewer.layers[tm_score_layer_name(cls, recon.name)]
        assert isinstance(layer, Image) and not layer.visible
        assert layer.metadata["kind"] == KIND_TM_SCORE_MAP
        assert layer.data.shape == recon.data.shape and layer.data.dtype == np.float32
        np.testing.assert_allclose(layer.translate, recon.translate)
        assert layer.contrast_limits[1] == pytest.approx(float(layer.data.max()))
    # the score maps are not offered as tomograms
    items = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert recon.name in items and not any(item.startswith("tm score") for item in items)

    # run again: one class, no maps → the picks layer is replaced in place, the maps removed
    index = viewer.layers.index(name)
    picks.visible = False
    old = picks
    section.set_checked_classes(["4d8q"])
    section.maps_check.setChecked(False)
    section.set_strategy("thresholded")
    assert widget.start_detection()
    assert notes["error"] == []
    new = viewer.layers[name]
    assert new is not old and viewer.layers.index(name) == index
    assert not new.visible  # the user's visibility is kept
    assert [layer.name for layer in viewer.layers].count(name) == 1
    assert not any((layer.metadata or {}).get("kind") == KIND_TM_SCORE_MAP
                   for layer in viewer.layers)
    assert len(viewer.layers) == n_before + 1
    assert set(new.features["class"].astype(str)) == {"4d8q"} and len(new.data) == 3
    assert new.metadata["napari_shrec"]["select_params"]["strategy"] == "thresholded"
    assert widget.last_match_layer is new and widget.last_match_map_layers == []


def test_match_on_a_dataset_folder_and_cancel(viewer, qtbot, dataset, notes):
    widget = _tm_widget(viewer, qtbot)
    widget.set_path(dataset)
    assert widget.input_kind() == SOURCE_FILE
    section = widget.match_section
    assert sorted(section.checked_classes()) == sorted(CLASSES)
    section.set_checked_classes(["1bxn"])
    section.set_strategy("statistical")
    assert section.false_alarm_spin.isEnabled()
    section.false_alarm_spin.setValue(5.0)
    assert widget.start_matching()
    assert notes["error"] == []
    layer = viewer.layers[tm_picks_layer_name(dataset.name)]
    np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.0))
    assert set(layer.features["class"].astype(str)) <= {"1bxn"}
    sel = layer.metadata["napari_shrec"]["select_params"]
    assert sel["strategy"] == "statistical" and sel["false_alarm_rate"] == 5.0
    assert len(viewer.layers) == 1

    # cancel during the matching: nothing is added or replaced
    viewer.layers.clear()
    reports: list[str] = []

    def cancel_at_first_rotation(done, total, message):
        reports.append(message)
        if "rotation" in message:
            widget.cancel()

    widget.runner.progressed.connect(cancel_at_first_rotation)
    section.maps_check.setChecked(True)
    section.set_checked_classes(list(CLASSES))
    assert widget.start_matching()
    widget.runner.progressed.disconnect(cancel_at_first_rotation)
    assert any("rotation" in m for m in reports)
    assert len(viewer.layers) == 0
    assert widget.status.status.text().startswith("Cancelled")
    assert widget.run_button.isEnabled() and not widget.runner.busy
    assert notes["error"] == []


def test_bad_inputs_are_named_and_run_is_disabled_while_busy(viewer, qtbot, dataset, notes,
                                                             tmp_path):
    widget = _tm_widget(viewer, qtbot)
    _add_dataset_layers(viewer, dataset)
    n_layers = len(viewer.layers)
    widget.match_section.set_checked_classes([])
    assert not widget.start_detection()
    assert notes["error"][-1].startswith("Template matching: Classes")
    assert widget.status.status.text().startswith("Failed: Classes")
    widget.match_section.set_checked_classes(["4d8q"])
    widget.set_path(tmp_path / "nope.mrc")
    assert not widget.start_matching()
    assert "nope.mrc" in notes["error"][-1]
    assert len(viewer.layers) == n_layers
    # an anisotropic layer
    viewer.layers.append(Image(np.zeros((8, 8, 8), np.float32), name="aniso",
                               scale=(2.0, 1.0, 1.0)))
    widget.set_layer("aniso")
    assert not widget.start_matching()
    assert "isotropic" in notes["error"][-1]
    # Run and the settings are disabled while a task runs
    states = []
    widget.runner.busy_changed.connect(
        lambda busy: states.append((busy, widget.run_button.isEnabled(),
                                    widget.match_section.isEnabled())))
    widget.set_layer(next(layer for layer in viewer.layers
                          if (layer.metadata or {}).get("volume") == "reconstruction"))
    assert widget.start_matching()
    assert states == [(True, False, False), (False, True, True)]

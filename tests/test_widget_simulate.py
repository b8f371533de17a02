"""The Simulate dock widget on a bare ViewerModel (offscreen Qt): small real simulations.

Structures come from the offline surrogates only (no sources, downloads off; the session's
structure cache makes every build after the first instant), on a 32 × 64 × 64 volume with 6–8
particles and 3 tilts (and the simulation's own 32 × 64 × 64 reconstruction), so each run takes
well under a second once the maps are cached.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Labels, Layer, Points  # noqa: E402

from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.core.progress import Cancelled  # noqa: E402
from napari_shrec.io.dataset import load_dataset  # noqa: E402
from napari_shrec.widgets import simulate as simulate_module  # noqa: E402
from napari_shrec.widgets.simulate import (  # noqa: E402
    LAYER_CLASS_MASK,
    LAYER_GRANDMODEL,
    LAYER_PARTICLES,
    LAYER_PROJECTIONS,
    LAYER_RECONSTRUCTION,
    SimulateWidget,
)

pytestmark = pytest.mark.napari

ALL_LAYERS = {LAYER_GRANDMODEL, LAYER_RECONSTRUCTION, LAYER_CLASS_MASK, LAYER_PARTICLES,
              LAYER_PROJECTIONS}
TILT_SERIES_LAYERS = {LAYER_RECONSTRUCTION, LAYER_PROJECTIONS}


@pytest.fixture
def viewer(qtbot):
    set_threading(False)
    yield ViewerModel()
    set_threading(None)


@pytest.fixture
def notes(monkeypatch):
    """Messages shown as napari notifications: {"error": [...], "warning": [...]}."""
    shown: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr("napari.utils.notifications.show_error", shown["error"].append)
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown["warning"].append)
    return shown


@pytest.fixture
def no_home(monkeypatch, tmp_path):
    """The default output folder lands in tmp_path, never in the real home."""
    monkeypatch.setattr(simulate_module, "DEFAULT_OUTPUT_ROOT", tmp_path / "home-sims")


def _widget(viewer, qtbot, *, seed=3):
    widget = SimulateWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_sources([])
    widget.download_check.setChecked(False)
    widget.seed_spin.setValue(seed)
    widget.set_shape_zyx((32, 64, 64))
    widget.set_particle_range(6, 8)
    widget.set_tilt_range(-30, 30, 30)
    return widget


def test_inputs_defaults_and_tooltips(viewer, qtbot, no_home, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SHREC_STRUCTURES", str(tmp_path))
    widget = SimulateWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.sources() == [tmp_path]  # default from $NAPARI_SHREC_STRUCTURES
    assert widget.folder_edit.text() == str(tmp_path / "home-sims" / "sim-1")
    assert widget.preset_combo.currentText() == "small"
    assert widget.shape_zyx() == (64, 128, 128)
    assert widget.tilt_angles() == tuple(float(a) for a in range(-60, 61, 3))
    for control in (widget.preset_combo, widget.seed_spin, widget.z_spin, widget.y_spin,
                    widget.x_spin, widget.min_particles_spin, widget.max_particles_spin,
                    widget.orientation_combo, widget.source_list, widget.download_check,
                    widget.surrogates_check, widget.tilt_start_spin, widget.tilt_stop_spin,
                    widget.tilt_step_spin, widget.defocus_spin, widget.snr_spin,
                    widget.noise_combo, widget.dose_spin, widget.ground_truth_only_check,
                    widget.folder_edit, widget.run_button):
        assert control.toolTip(), control
    for spin, unit in ((widget.z_spin, "vox"), (widget.tilt_step_spin, "°"),
                       (widget.defocus_spin, "µm"), (widget.dose_spin, "e⁻/nm²")):
        assert unit in spin.suffix()
    # the microscope inputs follow the ground-truth-only switch and the noise mode
    assert widget.snr_spin.isEnabled() and not widget.dose_spin.isEnabled()
    widget.noise_combo.setCurrentText("dose")
    assert widget.dose_spin.isEnabled() and not widget.snr_spin.isEnabled()
    widget.ground_truth_only_check.setChecked(True)
    assert not widget.tilt_start_spin.isEnabled() and not widget.dose_spin.isEnabled()
    assert widget.last_result is None and widget.last_folder is None


def test_changing_the_preset_fills_the_fields_without_running(viewer, qtbot, no_home,
                                                              tmp_path):
    widget = _widget(viewer, qtbot)
    widget.preset_combo.setCurrentText("shrec2020")
    assert widget.shape_zyx() == (200, 512, 512)
    assert (widget.min_particles_spin.value(), widget.max_particles_spin.value()) == (2400, 2800)
    assert widget.params().grandmodel.shape_zyx == (200, 512, 512)
    assert widget.params().preset == "shrec2020"
    widget.preset_combo.setCurrentText("small")
    assert widget.shape_zyx() == (64, 128, 128)
    assert (widget.min_particles_spin.value(), widget.max_particles_spin.value()) == (30, 40)
    assert len(viewer.layers) == 0 and not widget.runner.busy
    assert widget.last_result is None and not (tmp_path / "home-sims").exists()


def test_run_writes_the_dataset_and_adds_the_layers(viewer, qtbot, tmp_path, notes):
    widget = _widget(viewer, qtbot)
    folder = tmp_path / "sim"
    assert widget.simulate_into(folder)
    assert (folder / "simulation.json").is_file(), widget.status.status.text()
    assert not notes["error"]
    result = widget.last_result
    assert result is not None and widget.last_folder == folder == result.folder
    assert {layer.name for layer in viewer.layers} == ALL_LAYERS and len(viewer.layers) == 5
    record = json.loads((folder / "simulation.json").read_text())
    ds = load_dataset(folder)
    vs = ds.voxel_size_nm
    assert vs == pytest.approx(result.grandmodel.voxel_size_nm)

    grandmodel = viewer.layers[LAYER_GRANDMODEL]
    labels = viewer.layers[LAYER_CLASS_MASK]
    points = viewer.layers[LAYER_PARTICLES]
    projections = viewer.layers[LAYER_PROJECTIONS]
    assert isinstance(grandmodel, Image) and isinstance(labels, Labels)
    assert isinstance(points, Points) and isinstance(projections, Image)
    for layer in (grandmodel, labels, points):
        np.testing.assert_allclose(layer.scale, (vs, vs, vs))
        np.testing.assert_allclose(layer.translate, 0.0)
        assert [str(u) for u in layer.units] == ["nanometer"] * 3
    np.testing.assert_array_equal(grandmodel.data, ds.read_volume("grandmodel").data)
    low, high = grandmodel.contrast_limits
    assert float(np.min(grandmodel.data)) <= low < high <= float(np.max(grandmodel.data))
    np.testing.assert_array_equal(labels.data, ds.read_class_mask().data)
    assert len(points.data) == len(ds.particles) == result.grandmodel.report.n_placed
    assert 6 <= result.grandmodel.report.n_requested <= 8
    np.testing.assert_allclose(points.data, ds.particles.coords_zyx())
    # the tilt stack: its own layer, (tilt, y, x) with pixel scale, hidden, at the bottom
    assert projections.data.shape == (3, 64, 64)
    np.testing.assert_allclose(projections.scale, (1.0, vs, vs))
    assert not projections.visible and viewer.layers.index(projections) == 0
    assert viewer.dims.axis_labels == ("z", "y", "x")
    # the simulation's own reconstruction: the grandmodel's frame, visible, right above it
    reconstruction = viewer.layers[LAYER_RECONSTRUCTION]
    assert isinstance(reconstruction, Image) and reconstruction.visible
    assert reconstruction.data.shape == grandmodel.data.shape == (32, 64, 64)
    assert reconstruction.data.dtype == np.float32
    np.testing.assert_allclose(reconstruction.scale, (vs, vs, vs))
    np.testing.assert_allclose(reconstruction.translate, 0.0)
    assert [str(u) for u in reconstruction.units] == ["nanometer"] * 3
    np.testing.assert_array_equal(reconstruction.data, ds.read_volume("reconstruction").data)
    assert not isinstance(reconstruction.data, np.memmap)  # a later run may replace the file
    assert viewer.layers.index(reconstruction) == viewer.layers.index(grandmodel) + 1
    assert reconstruction.metadata["volume"] == "reconstruction"
    assert reconstruction.metadata["grandmodel_z_offset"] == 0
    assert reconstruction.metadata["source"] == str(folder / "reconstruction.mrc")
    np.testing.assert_allclose(projections.metadata["tilt_angles_deg"], [-30.0, 0.0, 30.0])

    # same look as the dataset reader's layers
    from napari_shrec._reader import read_dataset_layers

    read = {kwargs["name"].split(" ", 1)[1]: Layer.create(data, kwargs, kind)
            for data, kwargs, kind in read_dataset_layers(folder)}
    np.testing.assert_array_equal(labels.data, read["class mask"].data)
    for value in np.unique(labels.data):
        np.testing.assert_allclose(labels.colormap.map(value),
                                   read["class mask"].colormap.map(value))
    truth = read["ground truth"]
    np.testing.assert_allclose(points.face_color, truth.face_color)
    np.testing.assert_allclose(points.size, truth.size)
    assert list(points.features["class"]) == list(truth.features["class"])
    assert set(points.features["source"]) == {"ground truth"}

    # provenance in every layer
    for layer in viewer.layers:
        meta = layer.metadata["napari_shrec"]
        assert meta["simulation_folder"] == str(folder)
        assert meta["seed"] == 3
        assert json.loads(json.dumps(meta["params"])) == record["params"]
        assert layer.metadata["dataset"] == str(folder)  # what the Score widget looks for
    # the status line reports counts, surrogates and time
    text = widget.status.status.text()
    assert f"{result.grandmodel.report.n_placed} of {result.grandmodel.report.n_requested}" \
        in text
    assert "surrogate" in text and " s" in text
    assert result.surrogate_classes and any("surrogate" in w for w in notes["warning"])


def test_running_again_replaces_the_layers(viewer, qtbot, tmp_path, notes, monkeypatch):
    widget = _widget(viewer, qtbot)
    folder = tmp_path / "sim"
    widget.folder_edit.setText(str(folder))
    assert widget.start_simulation()  # nothing there yet: no question asked
    viewer.add_image(np.zeros((4, 4, 4)), name="mine")
    names = [layer.name for layer in viewer.layers]
    first = {layer.name: layer for layer in viewer.layers}
    viewer.layers[LAYER_PARTICLES].visible = False
    before = (folder / "simulation.json").read_text()

    # the Simulate button asks before replacing; "No" leaves everything alone
    asked: list[str] = []

    def answer(reply):
        def question(*args, **kwargs):
            asked.append(args[2])
            return reply
        return question

    monkeypatch.setattr(simulate_module.QMessageBox, "question",
                        answer(simulate_module.QMessageBox.StandardButton.No))
    assert not widget.start_simulation()
    assert asked and "simulation.json" in asked[0]
    assert (folder / "simulation.json").read_text() == before
    assert "Not simulated" in widget.status.status.text()
    # without overwrite, the core refuses and nothing changes
    widget.seed_spin.setValue(4)
    assert widget.simulate_into(folder)
    assert "already exists" in widget.status.status.text() and notes["error"]
    assert all(viewer.layers[name] is layer for name, layer in first.items())

    # with overwrite (the testable path behind "Yes"): replaced in place, not added
    assert widget.simulate_into(folder, overwrite=True)
    assert [layer.name for layer in viewer.layers] == names
    for name in ALL_LAYERS:
        assert viewer.layers[name] is not first[name]
        assert viewer.layers[name].metadata["napari_shrec"]["seed"] == 4
    assert viewer.layers["mine"] is first["mine"]
    assert not viewer.layers[LAYER_PARTICLES].visible  # the user's choice is kept
    assert len(viewer.layers[LAYER_PARTICLES].data) == len(load_dataset(folder).particles)
    np.testing.assert_array_equal(viewer.layers[LAYER_CLASS_MASK].data,
                                  load_dataset(folder).read_class_mask().data)
    np.testing.assert_array_equal(viewer.layers[LAYER_RECONSTRUCTION].data,
                                  load_dataset(folder).read_volume("reconstruction").data)

    # "Yes" runs with overwrite; ground truth only drops our stale projections and
    # reconstruction layers
    monkeypatch.setattr(simulate_module.QMessageBox, "question",
                        answer(simulate_module.QMessageBox.StandardButton.Yes))
    widget.ground_truth_only_check.setChecked(True)
    assert widget.start_simulation()
    assert {layer.name for layer in viewer.layers} == ALL_LAYERS - TILT_SERIES_LAYERS | {"mine"}
    assert widget.last_result.tiltseries is None
    assert "no tilt series" in widget.status.status.text()


@pytest.mark.parametrize("case", ["missing source", "tilt start > stop", "particle min > max",
                                  "no structure available"])
def test_invalid_inputs_report_an_error_and_add_nothing(case, viewer, qtbot, tmp_path, notes):
    widget = _widget(viewer, qtbot)
    folder = tmp_path / "sim"
    expected = {
        "missing source": "does not exist",
        "tilt start > stop": "tilt range",
        "particle min > max": "min (9) must not exceed max (8)",
        "no structure available": "",
    }[case]
    if case == "missing source":
        widget.set_sources([tmp_path / "nowhere"])
    elif case == "tilt start > stop":
        widget.set_tilt_range(30, -30, 3)
    elif case == "particle min > max":
        widget.min_particles_spin.setValue(9)
    else:  # passes the input checks, fails in the worker: no source, no download, no surrogate
        widget.surrogates_check.setChecked(False)
    widget.folder_edit.setText(str(folder))
    widget.start_simulation()
    text = widget.status.status.text()
    assert text.startswith("Failed: ") and expected in text, text
    assert notes["error"] and notes["error"][-1].startswith("Simulate: ")
    assert len(viewer.layers) == 0 and widget.last_result is None
    assert not (folder / "simulation.json").exists()
    assert widget.run_button.isEnabled() and not widget.runner.busy


def test_cancel_at_the_first_progress_report_writes_nothing(viewer, qtbot, tmp_path, notes):
    widget = _widget(viewer, qtbot)
    folder = tmp_path / "sim"
    widget.runner.progressed.connect(lambda *_: widget.cancel())
    assert widget.simulate_into(folder)
    assert not (folder / "simulation.json").exists()
    assert "Cancelled" in widget.status.status.text()
    assert len(viewer.layers) == 0 and widget.last_result is None and not notes["error"]
    assert widget.run_button.isEnabled()


def test_threaded_run_disables_inputs_and_cancel_button_stops_it(qtbot, tmp_path, notes,
                                                                 monkeypatch):
    """A real worker thread held in the grandmodel stage until Cancel is pressed."""
    set_threading(True)
    try:
        viewer = ViewerModel()
        widget = _widget(viewer, qtbot)
        entered = threading.Event()

        def held_grandmodel(structures, params, *, progress=None, cancel=None):
            entered.set()
            while not cancel.cancelled:
                threading.Event().wait(0.01)
            raise Cancelled()

        folder = tmp_path / "sim"
        with monkeypatch.context() as patch:
            patch.setattr("napari_shrec.core.simulate.build_grandmodel", held_grandmodel)
            assert widget.simulate_into(folder)
            assert entered.wait(30)
        assert widget.runner.busy
        assert not widget.run_button.isEnabled()
        assert widget.status.cancel_button.isEnabled()
        widget.status.cancel_button.click()
        assert widget.runner.wait(30)
        assert "Cancelled" in widget.status.status.text()
        assert widget.run_button.isEnabled() and not widget.status.cancel_button.isEnabled()
        assert not (folder / "simulation.json").exists()
        assert len(viewer.layers) == 0 and widget.last_result is None and not notes["error"]

        # the real grandmodel again: a threaded run to the end
        assert widget.simulate_into(folder)
        assert widget.runner.wait(60)
        assert (folder / "simulation.json").is_file(), widget.status.status.text()
        assert {layer.name for layer in viewer.layers} == ALL_LAYERS
        assert widget.last_folder == folder and widget.run_button.isEnabled()
    finally:
        set_threading(None)


def test_default_folder_is_fresh_and_advances_after_a_run(viewer, qtbot, no_home, tmp_path):
    widget = _widget(viewer, qtbot)
    root = tmp_path / "home-sims"
    (root / "sim-1").mkdir(parents=True)
    widget._set_auto_folder()
    assert widget.folder_edit.text() == str(root / "sim-2")
    assert widget.start_simulation()
    assert widget.last_folder == root / "sim-2"
    assert (root / "sim-2" / "simulation.json").is_file()
    assert widget.folder_edit.text() == str(root / "sim-3")  # never the folder just written

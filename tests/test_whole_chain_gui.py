"""The whole chain through the dock widgets in a real ``napari.Viewer`` on an X display (Xvfb):
Simulate → Reconstruct → Detect → Score, each started with its button and run in its worker
thread, each taking its input from the layers the one before added (no file is chosen).

The test session runs Qt offscreen (tests/conftest.py), where napari's OpenGL canvas cannot be
made, and a process has one Qt platform. So, unless Qt already runs on an X display, the test
runs itself again in a fresh ``pytest`` process with ``QT_QPA_PLATFORM=xcb`` on the display
pytest-xvfb started, and passes when that run passes. Without a display it is skipped.

The dataset is the ``small`` preset (64 × 128 × 128 voxels of 1 nm, 30–40 particles, 41 tilts)
with surrogate structures (offline, fast) at SNR 0.002 (image ratio 0.15), so the shipped
detector finds some particles in a few seconds on a CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

pytestmark = pytest.mark.napari

#: Set in the child process: it must run the chain, never start another child.
INNER_ENV = "NAPARI_SHREC_WHOLE_CHAIN_INNER"
SHAPE = (64, 128, 128)
N_TILTS = 41
WAIT_MS = 180_000


def _on_x_display() -> bool:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    return app is not None and app.platformName() == "xcb"


def test_simulate_reconstruct_detect_score_through_the_widgets(qtbot, tmp_path, shrec_plugin):
    if _on_x_display():
        _run_chain(qtbot, tmp_path)
        return
    if os.environ.get(INNER_ENV):
        pytest.fail("the child test process did not get an X display (QT_QPA_PLATFORM=xcb)")
    display = os.environ.get("DISPLAY")
    if not display:
        pytest.skip("no X display: napari's canvas needs one (install Xvfb and pytest-xvfb, or "
                    "run under xvfb-run)")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display, INNER_ENV: "1"}
    node = f"{Path(__file__).resolve()}::{test_simulate_reconstruct_detect_score_through_the_widgets.__name__}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", node, "-q", "-x", "-p", "no:xvfb", "-p",
         "no:cacheprovider", "--basetemp", str(tmp_path / "inner")],
        env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0 and "1 passed" in proc.stdout, output


# ------------------------------------------------------------------------------------------------
def _run_chain(qtbot, tmp_path: Path) -> None:
    import napari
    from napari.layers import Image, Labels, Points
    from qtpy.QtCore import Qt

    from napari_shrec._viewer import dock_plugin_widgets
    from napari_shrec._workers import set_threading, threading_enabled
    from napari_shrec.widgets.detect import DetectWidget
    from napari_shrec.widgets.reconstruct import ReconstructWidget
    from napari_shrec.widgets.score import ScoreWidget
    from napari_shrec.widgets.simulate import SimulateWidget

    set_threading(True)  # the real thing: worker threads, results through queued signals
    assert threading_enabled()
    viewer = napari.Viewer(title="napari-shrec whole chain")
    try:
        viewer.window.resize(1400, 900)
        widgets = {type(w).__name__: w for w in dock_plugin_widgets(viewer)}
        assert set(widgets) >= {"SimulateWidget", "ReconstructWidget", "AnnotateWidget",
                                "TrainWidget", "DetectWidget", "ScoreWidget",
                                "StructuresWidget"}
        _check_menus()
        sim: SimulateWidget = widgets["SimulateWidget"]
        rec: ReconstructWidget = widgets["ReconstructWidget"]
        det: DetectWidget = widgets["DetectWidget"]
        sco: ScoreWidget = widgets["ScoreWidget"]

        def run(widget, button) -> None:
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
            assert widget.runner.busy and not button.isEnabled(), widget.status.status.text()
            qtbot.waitUntil(lambda: not widget.runner.busy, timeout=WAIT_MS)
            assert button.isEnabled()
            text = widget.status.status.text()
            assert not text.startswith(("Failed", "Cancelled")), text

        # --- Simulate
        folder = tmp_path / "sim"
        sim.apply_preset("small")
        sim.set_sources([])
        sim.download_check.setChecked(False)
        sim.surrogates_check.setChecked(True)
        sim.seed_spin.setValue(3)
        sim.snr_spin.setValue(0.002)
        sim.folder_edit.setText(str(folder))
        run(sim, sim.run_button)
        assert (folder / "simulation.json").is_file()
        n_gt = sim.last_result.grandmodel.report.n_placed
        print("simulation timings (s):", sim.last_result.timings_s)
        expected = {"projections": (Image, (N_TILTS, SHAPE[1], SHAPE[2])),
                    "grandmodel": (Image, SHAPE), "reconstruction": (Image, SHAPE),
                    "class mask": (Labels, SHAPE),
                    "particles (ground truth)": (Points, (n_gt, 3))}
        assert [layer.name for layer in viewer.layers] == list(expected)
        for name, (kind, shape) in expected.items():
            layer = viewer.layers[name]
            assert isinstance(layer, kind) and np.shape(layer.data) == shape, name
            assert layer.metadata["dataset"] == str(folder), name
            assert layer.metadata["napari_shrec"]["seed"] == 3, name
        assert 30 <= n_gt <= 40

        # --- Reconstruct: the input is the simulated dataset, with nothing chosen
        assert rec.dataset_edit.text() == str(folder)
        assert rec.input_series_summary is not None
        assert rec.input_series_summary["n_tilts"] == N_TILTS
        rec.device_combo.setCurrentText("cpu")
        before = [layer.name for layer in viewer.layers]
        run(rec, rec.run_button)
        first = viewer.layers["reconstruction"]
        assert first is rec.last_layer and first.metadata["napari_shrec"]["frame"] == "native"
        assert [layer.name for layer in viewer.layers] == before  # replaced, in place
        assert first.data.shape == SHAPE and np.all(np.isfinite(first.data))
        run(rec, rec.run_button)  # again: still one reconstruction, a new layer object
        assert [layer.name for layer in viewer.layers] == before
        second = viewer.layers["reconstruction"]
        assert second is rec.last_layer and second is not first
        np.testing.assert_array_equal(second.data, first.data)

        # --- Detect: the dataset is filled in, the shipped model is the default. The layer
        # list offers every 3D image; Detect first chose the grandmodel (added before the
        # reconstruction) by itself and moved to the reconstruction when it came.
        assert det.path_edit.text() == str(folder)
        assert {"grandmodel", "reconstruction"} <= {
            det.layer_combo.itemText(i) for i in range(det.layer_combo.count())}
        assert det.layer_combo.currentText() == "reconstruction"
        det.device_combo.setCurrentText("cpu")
        run(det, det.run_button)
        picks_layer = viewer.layers["predictions: reconstruction"]
        assert isinstance(picks_layer, Points) and picks_layer is det.last_layer
        picks = det.last_output.result.particles
        assert len(picks) > 0 and len(picks_layer.data) == len(picks)
        assert picks_layer.metadata["dataset"] == str(folder)
        assert "model" in picks_layer.metadata["napari_shrec"]
        assert set(picks_layer.features["source"]) == {"predicted"}

        # --- Score: dataset folder and the new predictions layer are taken up by themselves
        assert sco.dataset_edit.text() == str(folder)
        assert sco.checked_prediction_names() == ["predictions: reconstruction"]
        run(sco, sco.score_button)
        _check_scores(sco, viewer, folder, picks, picks_layer)
        n_layers = len(viewer.layers)
        run(sco, sco.score_button)  # scoring again replaces the missed-particles layer
        assert len(viewer.layers) == n_layers
    finally:
        viewer.close()
        set_threading(None)


def _check_menus() -> None:
    """Each widget is in napari's menu of its kind of work (napari.yaml ``menus``)."""
    from napari._app_model import get_app_model

    app = get_app_model()
    wanted = {"napari/file/acquire": "napari-shrec.make_simulate_widget",
              "napari/layers/transform": "napari-shrec.make_reconstruct_widget",
              "napari/layers/annotate": "napari-shrec.make_annotate_widget",
              "napari/layers/classify": "napari-shrec.make_detect_widget",
              "napari/layers/measure": "napari-shrec.make_score_widget"}
    for menu, command in wanted.items():
        ids = {item.command.id for item in app.menus.get_menu(menu) if hasattr(item, "command")}
        assert command in ids, (menu, ids)


def _check_scores(sco, viewer, folder: Path, picks, picks_layer) -> None:
    """The widget's table and per-point outcomes are those of the core scorer on the same
    picks (native mode: the reconstruction is in the grandmodel's frame, translate 0)."""
    from napari_shrec.core.score import ScoreParams, score_submissions
    from napari_shrec.core.score_report import format_report
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth

    name = "predictions: reconstruction"
    truth = scoring_ground_truth(load_dataset(folder))
    assert truth.default_mode == "native" and truth.z_offset == 0
    (core,) = score_submissions(truth.particles, truth.occupancy_mask, [(name, picks)],
                                ScoreParams(mode="native"), class_table=truth.class_table)
    output = sco.last_output
    assert output.mode == "native" and len(output.results) == 1
    got = output.results[0]
    for key in ("N_gt", "RR", "TP", "FP", "FN", "MH", "RO", "n_duplicates"):
        assert getattr(got, key) == getattr(core, key), key
    for key in ("F1", "recall", "precision", "mean_class_F1"):
        assert getattr(got, key) == pytest.approx(getattr(core, key), nan_ok=True), key
    assert core.N_gt == len(truth.particles) and core.RR == len(picks)
    text = sco.report.toPlainText()
    assert "mode native" in text and f"{len(truth.particles)} particles" in text
    assert format_report([core]) in text  # the same tables, digit for digit
    np.testing.assert_array_equal(picks_layer.features["outcome"].astype(str), core.outcome)
    np.testing.assert_array_equal(picks_layer.features["hit_particle"], core.hit_particle)
    missed = viewer.layers[f"missed particles ({name})"]
    assert not missed.visible and len(missed.data) == len(core.missed_indices)
    assert sco.save_button.isEnabled()

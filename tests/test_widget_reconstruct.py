"""The Reconstruct dock widget on a bare ViewerModel (offscreen Qt): real reconstructions.

One tiny dataset is simulated per module (surrogate structures only, 32 × 64 × 64 voxels of
1 nm, 6 particles, 4 tilts ±45°, ±15°), so every reconstruction takes milliseconds once the
back-projection kernel is compiled (the simulation's own reconstruction compiles it).
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QMessageBox

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image  # noqa: E402

from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.core.reconstruct import ReconstructionParams, reconstruct  # noqa: E402
from napari_shrec.core.reconstruct_input import frame_geometry, load_tilt_series  # noqa: E402
from napari_shrec.core.simulate import run_simulation, simulation_params  # noqa: E402
from napari_shrec.io.mrc import read_mrc, write_mrc  # noqa: E402
from napari_shrec.io.tilt_angles import write_tlt  # noqa: E402
from napari_shrec.widgets import reconstruct as reconstruct_module  # noqa: E402
from napari_shrec.widgets.reconstruct import (  # noqa: E402
    INPUT_DATASET,
    INPUT_STACK,
    LAYER_RECONSTRUCTION,
    ReconstructRequest,
    ReconstructWidget,
    reconstruct_tilt_series,
)

pytestmark = pytest.mark.napari

ANGLES = (-45.0, -15.0, 15.0, 45.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reconstruct-widget") / "sim"
    params = simulation_params("small", seed=11, structure_sources=[],
                               download_structures=False, n_particles=(6, 6),
                               shape_zyx=(32, 64, 64), tilt_angles_deg=ANGLES)
    run_simulation(params, folder)
    return folder


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


def _widget(viewer, qtbot, folder=None):
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.device_combo.setCurrentText("cpu")
    if folder is not None:
        widget.set_dataset(folder)
    return widget


def _direct(folder, frame, **overrides):
    """``reconstruct`` called directly on the dataset in a frame: (volume, z offset)."""
    series = load_tilt_series(folder)
    thickness, axis_z, offset = frame_geometry(frame, series)
    params = ReconstructionParams(thickness=thickness, axis_z=axis_z, device="cpu",
                                  **series.microscope, **overrides)
    volume, _ = reconstruct(series.projections, series.tilt_angles_deg, params,
                            pixel_size_nm=series.pixel_size_nm, defocus_um=series.defocus_um)
    return volume, offset


def _stack(tmp_path, folder, angles=ANGLES, name="stack"):
    """The dataset's projections as a bare MRC stack, with a .tlt beside it (None: none)."""
    stack = tmp_path / f"{name}.mrc"
    write_mrc(stack, read_mrc(folder / "projections.mrc", mmap=False).data, voxel_size_nm=1.0,
              image_stack=True)
    if angles is not None:
        write_tlt(tmp_path / f"{name}.tlt", angles)
    return stack


def test_inputs_defaults_tooltips_and_enabled_states(viewer, qtbot, dataset, tmp_path):
    widget = _widget(viewer, qtbot)
    assert widget.input_kind() == INPUT_DATASET and widget.input_series_summary is None
    assert widget.frame_combo.currentText() == "native"
    assert widget.weighting_combo.currentText() == "ramp"
    assert widget.thickness_spin.value() == 0 and widget.defocus_spin.value() == 0
    for control in (widget.source_combo, widget.dataset_edit, widget.noisefree_check,
                    widget.stack_edit, widget.tlt_edit, widget.frame_combo,
                    widget.thickness_spin, widget.weighting_combo, widget.sirt_spin,
                    widget.defocus_spin, widget.ctf_check, widget.invert_check,
                    widget.device_combo, widget.run_button, widget.save_button):
        assert control.toolTip(), control
    assert "slices" in widget.thickness_spin.suffix()
    assert "µm" in widget.defocus_spin.suffix() and "µm" in widget.defocus_spin.toolTip()
    assert [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())] == \
        ["auto", "cpu", "cuda", "torch-cpu"]
    # SIRT iterations only for sirt; the stack rows only for stacks
    assert not widget.sirt_spin.isEnabled()
    widget.weighting_combo.setCurrentText("sirt")
    assert widget.sirt_spin.isEnabled()
    assert widget.dataset_edit.isEnabled() and not widget.stack_edit.isEnabled()
    assert not widget.save_button.isEnabled()
    # no input, no defocus: no CTF; a typed defocus allows it
    assert not widget.ctf_check.isEnabled()
    widget.defocus_spin.setValue(2.5)
    assert widget.ctf_check.isEnabled()
    widget.ctf_check.setChecked(True)
    widget.defocus_spin.setValue(0)
    assert not widget.ctf_check.isEnabled() and not widget.ctf_check.isChecked()

    # a napari-shrec dataset: its own (native) frame, recorded defocus → CTF possible
    widget.frame_combo.setCurrentText("shrec2020")
    widget.set_dataset(dataset)
    summary = widget.input_series_summary
    assert summary["n_tilts"] == 4 and summary["shape"] == (4, 64, 64)
    assert summary["grandmodel_nz"] == 32 and summary["defocus_known"]
    assert widget.frame_combo.currentText() == "native"
    assert widget.ctf_check.isEnabled()
    assert "4 tilts" in widget.input_info.text() and "defocus recorded" in \
        widget.input_info.text()
    # a bare stack: the shrec2020 frame by default, no defocus recorded → no CTF
    stack = _stack(tmp_path, dataset)
    widget.set_stack(stack)
    assert widget.input_kind() == INPUT_STACK
    assert widget.stack_edit.isEnabled() and not widget.dataset_edit.isEnabled()
    assert widget.frame_combo.currentText() == "shrec2020"
    assert not widget.input_series_summary["defocus_known"] and not widget.ctf_check.isEnabled()
    assert len(viewer.layers) == 0


def test_native_frame_adds_the_layer_equal_to_a_direct_reconstruction(viewer, qtbot, dataset,
                                                                      notes):
    widget = _widget(viewer, qtbot, dataset)
    assert widget.start_reconstruction()
    assert not notes["error"], notes["error"]
    assert [layer.name for layer in viewer.layers] == [LAYER_RECONSTRUCTION]
    layer = viewer.layers[LAYER_RECONSTRUCTION]
    assert isinstance(layer, Image) and layer.visible
    assert layer.data.shape == (32, 64, 64) and layer.data.dtype == np.float32
    np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(layer.translate, (0.0, 0.0, 0.0))
    assert [str(u) for u in layer.units] == ["nanometer"] * 3
    expected, offset = _direct(dataset, "native")
    assert offset == 0
    np.testing.assert_allclose(layer.data, expected, rtol=1e-5, atol=1e-6)
    # the simulation's own reconstruction.mrc is the same native-frame WBP
    np.testing.assert_allclose(layer.data, read_mrc(dataset / "reconstruction.mrc").data,
                               rtol=1e-4, atol=1e-5)

    meta = layer.metadata
    assert meta["dataset"] == str(dataset) and meta["frame"] == "native"
    assert meta["grandmodel_z_offset"] == 0 and meta["volume"] == "reconstruction"
    prov = meta["napari_shrec"]
    assert prov["source"] == str(dataset) and prov["frame"] == "native"
    assert prov["device"] in ("cpu", "numpy") and prov["thickness"] == 32
    assert prov["params"]["weighting"] == "ramp" and prov["params"]["axis_z"] == 16.0
    assert prov["created"] and prov["elapsed_s"] >= 0 and prov["n_tilts"] == 4
    assert "tilt_angles_deg" not in prov
    text = widget.status.status.text()
    assert text.startswith("Reconstructed sim") and "32 × 64 × 64" in text
    assert "frame native" in text and "grandmodel at z 0…31" in text
    assert widget.last_output is not None and widget.last_layer is layer
    assert widget.save_button.isEnabled() and widget.run_button.isEnabled()


def test_shrec2020_frame_is_shifted_onto_the_grandmodel_and_reruns_replace(viewer, qtbot,
                                                                           dataset, notes):
    widget = _widget(viewer, qtbot, dataset)
    widget.frame_combo.setCurrentText("shrec2020")
    assert widget.start_reconstruction()
    name = f"{LAYER_RECONSTRUCTION} (shrec2020)"
    assert [layer.name for layer in viewer.layers] == [name], widget.status.status.text()
    layer = viewer.layers[name]
    assert layer.data.shape == (64, 64, 64)
    np.testing.assert_allclose(layer.translate, (-16.0, 0.0, 0.0))
    expected, offset = _direct(dataset, "shrec2020")
    assert offset == 16 and layer.metadata["grandmodel_z_offset"] == 16
    np.testing.assert_allclose(layer.data, expected, rtol=1e-5, atol=1e-6)
    # world z of grandmodel slice k: k nm in both layers
    np.testing.assert_allclose(layer.data_to_world((16 + 5, 0, 0))[0], 5.0)
    assert "grandmodel at z 16…47" in widget.status.status.text()

    # the native run adds its own layer; a second shrec2020 run replaces in place
    widget.frame_combo.setCurrentText("native")
    assert widget.start_reconstruction()
    viewer.add_image(np.zeros((4, 4, 4)), name="mine")
    viewer.layers[name].visible = False
    names = [layer.name for layer in viewer.layers]
    assert names == [name, LAYER_RECONSTRUCTION, "mine"]
    widget.frame_combo.setCurrentText("shrec2020")
    widget.weighting_combo.setCurrentText("sirt")
    widget.sirt_spin.setValue(5)
    assert widget.start_reconstruction()
    assert [layer.name for layer in viewer.layers] == names  # count and order unchanged
    replaced = viewer.layers[name]
    assert replaced is not layer and not replaced.visible  # the user's choice is kept
    assert replaced.metadata["napari_shrec"]["params"]["weighting"] == "sirt"
    assert replaced.metadata["napari_shrec"]["params"]["sirt_iterations"] == 5
    np.testing.assert_allclose(replaced.data,
                               _direct(dataset, "shrec2020", weighting="sirt",
                                       sirt_iterations=5)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(replaced.data, layer.data)
    assert not notes["error"]


def test_alignment_follows_an_open_grandmodel_layer_and_custom_thickness(viewer, qtbot,
                                                                         dataset, notes):
    # a SHREC'20-style reader layout: the grandmodel translated by 10 voxels of 1 nm
    viewer.add_image(np.zeros((32, 64, 64), np.float32), name="gm", translate=(10.0, 0, 0),
                     metadata={"dataset": str(dataset), "frame": "grandmodel"})
    widget = _widget(viewer, qtbot)
    assert widget.dataset_edit.text() == str(dataset)
    widget.frame_combo.setCurrentText("shrec2020")
    widget.thickness_spin.setValue(48)  # custom: 48 slices, axis 24 → offset 24 − 16 = 8
    assert widget.start_reconstruction()
    layer = viewer.layers[f"{LAYER_RECONSTRUCTION} (custom)"]
    assert layer.data.shape == (48, 64, 64)
    np.testing.assert_allclose(layer.translate, (10.0 - 8.0, 0.0, 0.0))
    assert layer.metadata["frame"] == "custom" and layer.metadata["grandmodel_z_offset"] == 8
    # a thickness equal to the frame's is no override
    widget.frame_combo.setCurrentText("native")
    widget.thickness_spin.setValue(32)
    assert widget.start_reconstruction()
    np.testing.assert_allclose(viewer.layers[LAYER_RECONSTRUCTION].translate, (10.0, 0, 0))
    assert not notes["error"]


def test_a_dataset_is_picked_up_from_layer_metadata(viewer, qtbot, dataset, tmp_path):
    widget = _widget(viewer, qtbot)
    assert widget.dataset_edit.text() == ""
    viewer.add_image(np.zeros((4, 4, 4)), name="plain")
    assert widget.dataset_edit.text() == ""
    # the Simulate widget's provenance alone is enough
    viewer.add_image(np.zeros((4, 4, 4)), name="sim layer",
                     metadata={"napari_shrec": {"simulation_folder": str(dataset)}})
    assert widget.dataset_edit.text() == str(dataset)
    assert widget.input_series_summary["n_tilts"] == 4
    assert widget.frame_combo.currentText() == "native"
    # an auto-filled folder follows a newer dataset; a typed one is kept
    other = tmp_path / "other"
    other.mkdir()
    viewer.add_image(np.zeros((4, 4, 4)), name="other", metadata={"dataset": str(other)})
    assert widget.dataset_edit.text() == str(other)
    widget.set_dataset(dataset)
    viewer.add_image(np.zeros((4, 4, 4)), name="third", metadata={"dataset": str(other)})
    assert widget.dataset_edit.text() == str(dataset)
    # a widget opened after the layers fills the field at once, and reconstructs from it
    second = _widget(viewer, qtbot)
    viewer.layers.remove("other")
    viewer.layers.remove("third")
    second.dataset_edit.setText("")
    second._refresh_dataset()
    assert second.dataset_edit.text() == str(dataset)
    assert second.start_reconstruction()
    assert viewer.layers[-1].name == LAYER_RECONSTRUCTION


@pytest.mark.parametrize("case", ["no tilt file", "missing tilt file", "count mismatch",
                                  "ctf without defocus", "native without grandmodel",
                                  "no input", "missing dataset"])
def test_bad_inputs_report_an_error_and_add_no_layer(case, viewer, qtbot, dataset, tmp_path,
                                                     notes):
    widget = _widget(viewer, qtbot)
    expected = {
        "no tilt file": "no stack.tlt beside the stack",
        "missing tilt file": "no such tilt file",
        "count mismatch": "4 projections but 3 tilt angles",
        "ctf without defocus": "CTF correction needs the defocus",
        "native without grandmodel": "native frame needs the grandmodel",
        "no input": "choose a dataset folder",
        "missing dataset": "no such dataset folder",
    }[case]
    if case == "no tilt file":
        widget.set_stack(_stack(tmp_path, dataset, angles=None))
    elif case == "missing tilt file":
        widget.set_stack(_stack(tmp_path, dataset), tmp_path / "nowhere.tlt")
    elif case == "count mismatch":
        widget.set_stack(_stack(tmp_path, dataset, angles=ANGLES[:3]))
        assert "3 tilt angles" in widget.input_info.text()
    elif case == "ctf without defocus":
        widget.set_stack(_stack(tmp_path, dataset))
        widget.ctf_check.setChecked(True)  # disabled in the GUI; forced here
    elif case == "native without grandmodel":
        widget.set_stack(_stack(tmp_path, dataset))
        widget.frame_combo.setCurrentText("native")
    elif case == "missing dataset":
        widget.set_dataset(tmp_path / "nowhere")
    widget.start_reconstruction()
    text = widget.status.status.text()
    assert text.startswith("Failed: ") and expected in text, text
    assert notes["error"] and notes["error"][-1].startswith("Reconstruct: ")
    assert expected in notes["error"][-1]
    assert len(viewer.layers) == 0 and widget.last_output is None
    assert widget.run_button.isEnabled() and not widget.runner.busy
    assert not widget.save_button.isEnabled()


def test_an_unavailable_device_is_an_error_not_a_crash(viewer, qtbot, dataset, notes):
    try:
        import torch
    except ImportError:
        expected = "needs PyTorch"
    else:
        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present")
        expected = "no CUDA GPU"
    widget = _widget(viewer, qtbot, dataset)
    widget.device_combo.setCurrentText("cuda")
    widget.start_reconstruction()
    assert expected in widget.status.status.text() and notes["error"]
    assert len(viewer.layers) == 0 and widget.run_button.isEnabled()


def test_a_stack_with_its_tlt_reconstructs_in_the_shrec2020_frame(viewer, qtbot, dataset,
                                                                  tmp_path, notes):
    widget = _widget(viewer, qtbot)
    stack = _stack(tmp_path, dataset)
    widget.set_stack(stack)
    widget.defocus_spin.setValue(3.0)  # typed defocus: CTF correction allowed
    widget.ctf_check.setChecked(True)
    assert widget.start_reconstruction()
    assert not notes["error"], notes["error"]
    layer = viewer.layers[LAYER_RECONSTRUCTION]  # a stack's own frame is shrec2020
    assert layer.data.shape == (64, 64, 64)
    np.testing.assert_allclose(layer.translate, 0.0)  # no grandmodel: no offset
    assert "dataset" not in layer.metadata
    assert layer.metadata["napari_shrec"]["params"]["ctf_correction"]
    assert "CTF phase-flipped" in widget.status.status.text()
    # the request function runs without Qt and matches the layer
    output = reconstruct_tilt_series(ReconstructRequest(
        source=stack, weighting="ramp", ctf_correction=True, defocus_um=3.0, device="cpu"))
    np.testing.assert_allclose(layer.data, output.volume, rtol=1e-5, atol=1e-6)
    assert output.plan.own_frame and output.plan.grandmodel_z_offset == 0


def test_cancel_leaves_no_new_layer(viewer, qtbot, dataset, notes):
    widget = _widget(viewer, qtbot, dataset)
    assert widget.start_reconstruction()
    before = [layer.name for layer in viewer.layers]
    first = viewer.layers[LAYER_RECONSTRUCTION]
    widget.frame_combo.setCurrentText("shrec2020")
    widget.runner.progressed.connect(lambda *_: widget.cancel())
    assert widget.start_reconstruction()
    assert "Cancelled" in widget.status.status.text()
    assert [layer.name for layer in viewer.layers] == before
    assert viewer.layers[LAYER_RECONSTRUCTION] is first and not notes["error"]
    assert widget.last_output.plan.frame == "native"
    assert widget.run_button.isEnabled() and not widget.runner.busy


def test_threaded_run_locks_the_inputs_and_adds_the_layer(qtbot, dataset, notes):
    set_threading(True)
    try:
        viewer = ViewerModel()
        widget = _widget(viewer, qtbot, dataset)
        assert widget.start_reconstruction()
        assert widget.runner.wait(60)
        assert [layer.name for layer in viewer.layers] == [LAYER_RECONSTRUCTION], \
            widget.status.status.text()
        np.testing.assert_allclose(viewer.layers[0].data, _direct(dataset, "native")[0],
                                   rtol=1e-5, atol=1e-6)
        assert widget.run_button.isEnabled() and widget.save_button.isEnabled()
        assert not notes["error"]
        widget._on_busy_changed(True)  # what a running task shows
        assert not widget.run_button.isEnabled() and not widget.save_button.isEnabled()
        assert not widget._input_boxes[0].isEnabled()
        widget._on_busy_changed(False)
    finally:
        set_threading(None)


def test_save_writes_an_mrc_and_refuses_to_overwrite(viewer, qtbot, dataset, tmp_path, notes,
                                                     monkeypatch):
    widget = _widget(viewer, qtbot, dataset)
    target = tmp_path / "out" / "rec.mrc"
    assert not widget.save_reconstruction(target)  # nothing reconstructed yet
    assert "reconstruct first" in widget.status.status.text()
    widget.frame_combo.setCurrentText("shrec2020")
    assert widget.start_reconstruction()
    layer = widget.last_layer
    assert reconstruct_module.default_save_path(widget.last_output) == \
        dataset / "reconstruction_shrec2020.mrc"
    notes["error"].clear()

    assert widget.save_reconstruction(target)
    written = read_mrc(target, mmap=False)
    np.testing.assert_allclose(written.data, layer.data)
    np.testing.assert_allclose(written.voxel_size_nm, (1.0, 1.0, 1.0))
    assert layer.metadata["napari_shrec"]["saved_to"] == str(target)
    assert "Saved" in widget.status.status.text() and not notes["error"]
    stamp = target.stat().st_mtime_ns
    # a second time: refused without overwrite, replaced with it
    assert not widget.save_reconstruction(target)
    assert "already exists" in widget.status.status.text() and notes["error"]
    assert target.stat().st_mtime_ns == stamp
    assert widget.save_reconstruction(target, overwrite=True)

    # the Save… button asks before replacing; "No" writes nothing
    monkeypatch.setattr(reconstruct_module.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(target), ""))
    asked: list[str] = []

    def no(*args, **kwargs):
        asked.append(args[2])
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", no)
    stamp = target.stat().st_mtime_ns
    widget.save_button.click()
    assert asked and "already exists" in asked[0]
    assert target.stat().st_mtime_ns == stamp and "Not saved" in widget.status.status.text()
    fresh = tmp_path / "fresh.mrc"
    monkeypatch.setattr(reconstruct_module.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(fresh), ""))
    widget.save_button.click()
    assert fresh.is_file() and len(asked) == 1

"""The Annotate dock widget on a bare ViewerModel (offscreen Qt), plus one real napari window on
the Xvfb display (real key presses and mouse clicks on the canvas, in a subprocess).

The tomogram is a small MRC file (24 × 40 × 48 voxels of 0.8 nm) holding a few soft balls, opened
as the reader opens it; clicks are simulated the way napari's own tests do (mouse events with a
world position handed to the layer's mouse callbacks, which run napari's add mode).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Labels, Layer, Points  # noqa: E402
from napari.utils._proxies import ReadOnlyWrapper  # noqa: E402
from napari.utils.interactions import (  # noqa: E402
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from napari.utils.key_bindings import KeymapHandler  # noqa: E402

from napari_shrec._reader import read_dataset_layers, read_mrc_layers  # noqa: E402
from napari_shrec.core.classes import SHREC21_TABLE  # noqa: E402
from napari_shrec.core.particles import ParticleList  # noqa: E402
from napari_shrec.core.phantom import sphere_phantom  # noqa: E402
from napari_shrec.core.volume import Volume  # noqa: E402
from napari_shrec.io.annotations import list_autosaves, tomogram_identity  # noqa: E402
from napari_shrec.io.dataset import write_dataset  # noqa: E402
from napari_shrec.io.mrc import write_mrc  # noqa: E402
from napari_shrec.io.particles import read_particles, write_particles  # noqa: E402
from napari_shrec.layers import class_diameter_vox, labels_colormap  # noqa: E402
from napari_shrec.widgets.annotate import (  # noqa: E402
    ANNOTATION_METADATA_KEY,
    CLASS_KEYS,
    AnnotateWidget,
)

pytestmark = pytest.mark.napari

VS = 0.8  # nm per voxel
SHAPE = (24, 40, 48)  # z, y, x
BLOB = np.array([12.0, 18.4, 25.7])  # a ball of radius 6 voxels, off the grid
BLOB_RADIUS = 6.0
NAMES = list(SHREC21_TABLE.names)


def _ball(centre, radius, shape=SHAPE):
    grid = np.indices(shape, dtype=np.float64)
    dist = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3)))
    return np.clip(radius + 0.5 - dist, 0.0, 1.0)


@pytest.fixture(scope="module")
def tomogram_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    vol = _ball(BLOB, BLOB_RADIUS) + 0.7 * _ball([6.0, 8.0, 8.0], 3.0)
    vol = (vol + rng.normal(0, 0.1, SHAPE)).astype(np.float32)
    path = tmp_path_factory.mktemp("annotate") / "tomo.mrc"
    write_mrc(path, Volume(vol, (VS, VS, VS)))
    return path


@pytest.fixture
def viewer(qtbot):
    vm = ViewerModel()
    yield vm
    vm.layers.clear()


@pytest.fixture
def notes(monkeypatch):
    shown: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr("napari.utils.notifications.show_error", shown["error"].append)
    monkeypatch.setattr("napari.utils.notifications.show_info", shown["info"].append)
    return shown


def _open_tomogram(viewer, path) -> Image:
    data, kwargs, kind = read_mrc_layers(path)[0]
    layer = Layer.create(data, kwargs, kind)
    viewer.layers.append(layer)
    return layer


def _widget(viewer, qtbot, tmp_path, **kwargs) -> AnnotateWidget:
    widget = AnnotateWidget(viewer, autosave_directory=tmp_path / "autosave", **kwargs)
    widget.autosave_delay_ms = 20
    qtbot.addWidget(widget)
    return widget


@pytest.fixture
def setup(viewer, qtbot, tmp_path, tomogram_file):
    """(viewer, widget, tomogram layer, annotation layer): a new annotation layer in add mode."""
    tomo = _open_tomogram(viewer, tomogram_file)
    widget = _widget(viewer, qtbot, tmp_path)
    layer = widget.new_annotation_layer()
    return viewer, widget, tomo, layer


def _keys(viewer, layer) -> KeymapHandler:
    """napari's key dispatch with ``layer`` active (as the canvas does it)."""
    handler = KeymapHandler()
    handler.keymap_providers = [layer, viewer]
    return handler


@dataclass
class _MouseEvent:
    type: str
    is_dragging: bool = False
    modifiers: list = field(default_factory=list)
    position: tuple = (0.0, 0.0, 0.0)  # world (nm)
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))  # canvas pixels
    view_direction: object = None
    up_direction: object = None
    dims_displayed: list = field(default_factory=lambda: [1, 2])


def _click(viewer, layer, y_nm: float, x_nm: float) -> None:
    """A left click at world (y, x) nm on the displayed slice, through the layer's mouse
    callbacks (napari's add mode runs in them)."""
    position = (float(viewer.dims.point[0]), float(y_nm), float(x_nm))
    for kind, run in (("mouse_press", mouse_press_callbacks),
                      ("mouse_release", mouse_release_callbacks)):
        event = ReadOnlyWrapper(_MouseEvent(kind, position=position,
                                            dims_displayed=list(viewer.dims.displayed)),
                                exceptions=("handled",))
        run(layer, event)


# ------------------------------------------------------------------------------ the layer
def test_a_new_annotation_layer_matches_the_tomogram_and_the_class_colours(setup):
    viewer, widget, tomo, layer = setup
    assert layer.name == "tomo annotations" and layer.mode == "add"
    np.testing.assert_allclose(layer.scale, [VS, VS, VS])
    np.testing.assert_allclose(layer.translate, tomo.translate)
    assert list(layer.features.columns[:3]) == ["class", "score", "source"]
    assert list(layer.features["class"].cat.categories) == NAMES
    assert list(layer.features["source"].cat.categories) == ["ground truth", "predicted",
                                                             "manual"]
    meta = layer.metadata[ANNOTATION_METADATA_KEY]
    assert meta["tomogram"] == tomogram_identity(tomo.metadata["source"])
    assert meta["tomogram_layer"] == "tomo"
    # a point of every class has the class-mask colour of that class, and its diameter
    labels = labels_colormap(SHREC21_TABLE)
    for name in ("1s3x", "1bxn", "4d8q", "fiducial"):
        widget.set_class(name)
        layer.add([3.0, 4.0, 5.0])
        np.testing.assert_allclose(layer.face_color[-1], labels[SHREC21_TABLE.id_of(name)],
                                   atol=1e-6)
        assert layer.size[-1] == pytest.approx(class_diameter_vox(name, VS))
    assert layer.size[1] == pytest.approx(2 * 6.159 / VS, rel=1e-3)  # 1bxn: r = 6.16 nm


def test_number_and_step_keys_set_the_class_of_the_next_point(setup):
    viewer, widget, tomo, layer = setup
    keys = _keys(viewer, layer)
    expected = {"1": NAMES[0], "3": NAMES[2], "9": NAMES[8], "0": NAMES[9]}
    for key, name in expected.items():
        assert keys.press_key(key)
        assert widget.current_class == name
        assert widget.class_combo.currentData() == name
        assert widget.class_buttons[name].isChecked()
        layer.add([1.0, 2.0, 3.0])
        assert layer.features["class"].iloc[-1] == name
    assert layer.features["class"].tolist() == list(expected.values())
    keys.press_key("]")
    assert widget.current_class == NAMES[10]
    keys.press_key(".")
    assert widget.current_class == NAMES[11]
    keys.press_key("[")
    keys.press_key(",")
    assert widget.current_class == NAMES[9]
    keys.press_key("1")
    keys.press_key("[")  # wraps around to the last class
    assert widget.current_class == NAMES[-1]
    # napari's own 1 (delete) / 2 (add mode) / 3 (select mode) are replaced on this layer
    layer.selected_data = {0}
    keys.press_key("2")
    assert len(layer.data) == 4 and layer.mode == "add"
    # a key never changes points already there (the selected one included)
    assert layer.features["class"].tolist() == list(expected.values())
    assert CLASS_KEYS == ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")


def test_selecting_a_point_does_not_change_the_next_class_or_source(setup):
    viewer, widget, tomo, layer = setup
    widget.set_class("4cr2")
    layer.add([1.0, 2.0, 3.0])
    feats = layer.features.copy()
    feats.loc[0, "source"] = "predicted"
    feats.loc[0, "score"] = 0.9
    feats.loc[0, "class"] = "1s3x"
    layer.features = feats
    layer.selected_data = {0}  # napari copies the point's features into feature_defaults …
    layer.selected_data = set()
    layer.add([2.0, 2.0, 3.0])  # … but the next point is still the widget's class, manual
    row = layer.features.iloc[-1]
    assert (row["class"], row["source"]) == ("4cr2", "manual") and np.isnan(row["score"])


def test_points_added_through_the_layer_api_keep_their_coordinates(setup):
    viewer, widget, tomo, layer = setup
    widget.set_class("3cf3")
    layer.add([[5.3, 10.25, 11.75], [7.0, 1.5, 2.5]])
    np.testing.assert_array_equal(layer.data, [[5.3, 10.25, 11.75], [7.0, 1.5, 2.5]])
    assert layer.features["class"].tolist() == ["3cf3", "3cf3"]
    assert layer.features["source"].tolist() == ["manual", "manual"]
    assert layer.features["score"].isna().all()
    np.testing.assert_allclose(layer.size, class_diameter_vox("3cf3", VS))
    assert widget.class_counts()["3cf3"] == 2
    assert widget.class_buttons["3cf3"].text().endswith("3cf3  2")
    assert widget.counts_label.text() == "2 points: 2 manual"


# ------------------------------------------------------------------------------ clicks
def test_a_click_adds_a_point_on_the_displayed_slice(setup):
    viewer, widget, tomo, layer = setup
    widget.set_class("2cg9")
    viewer.dims.set_point(0, 9 * VS)
    _click(viewer, layer, 14.2 * VS, 30.6 * VS)
    assert len(layer.data) == 1
    np.testing.assert_allclose(layer.data[0], [9.0, 14.2, 30.6], atol=1e-9)
    assert layer.features["class"].iloc[0] == "2cg9"
    assert layer.features["source"].iloc[0] == "manual"
    assert "Added 2cg9 at (30.6, 14.2, 9.0)" in widget.status.text()
    # a dims position between two slices (another layer with a finer z step): the point goes
    # on the tomogram slice napari shows there (nearest), not at a fraction of a slice
    viewer.add_image(np.zeros((96, 4, 4), np.float32), scale=(VS / 4, VS, VS), units="nm",
                     name="finer")
    viewer.dims.set_point(0, 9.25 * VS)
    assert viewer.dims.point[0] == pytest.approx(9.25 * VS)
    _click(viewer, layer, 20.0 * VS, 20.0 * VS)
    np.testing.assert_allclose(layer.data[1], [9.0, 20.0, 20.0], atol=1e-9)


def test_a_click_on_a_translated_tomogram(viewer, qtbot, tmp_path, tomogram_file):
    tomo = _open_tomogram(viewer, tomogram_file)
    tomo.translate = (4 * VS, -2 * VS, 3 * VS)
    widget = _widget(viewer, qtbot, tmp_path)
    layer = widget.new_annotation_layer()
    np.testing.assert_allclose(layer.translate, tomo.translate)
    viewer.dims.set_point(0, (7 + 4) * VS)
    _click(viewer, layer, (10 - 2) * VS, (12 + 3) * VS)
    np.testing.assert_allclose(layer.data[0], [7.0, 10.0, 12.0], atol=1e-9)


def test_a_click_outside_the_tomogram_adds_nothing(setup):
    viewer, widget, tomo, layer = setup
    viewer.dims.set_point(0, 3 * VS)
    _click(viewer, layer, -8.0 * VS, 10 * VS)
    assert len(layer.data) == 0
    assert "outside the tomogram" in widget.status.text()
    assert not widget._undo  # nothing to undo either


def test_3d_view_turns_adding_off(setup, notes):
    viewer, widget, tomo, layer = setup
    assert layer.mode == "add" and widget.add_mode_button.isChecked()
    viewer.dims.ndisplay = 3
    assert layer.mode == "pan_zoom"
    assert not widget.add_mode_button.isEnabled()
    assert "3D view" in widget.status.text() and "Ctrl+Y" in widget.status.text()
    assert any("3D view" in n for n in notes["info"])
    layer.mode = "add"  # asked again in 3D: refused
    assert layer.mode == "pan_zoom"
    _click(viewer, layer, 10 * VS, 10 * VS)
    assert len(layer.data) == 0
    viewer.dims.ndisplay = 2
    layer.mode = "add"
    assert layer.mode == "add"
    _click(viewer, layer, 10 * VS, 10 * VS)
    assert len(layer.data) == 1


def test_a_click_taken_in_3d_add_mode_is_taken_back(setup):
    """If something puts the layer in add mode in 3D anyway, a click adds nothing."""
    viewer, widget, tomo, layer = setup
    viewer.dims.ndisplay = 3
    with layer.events.mode.blocker(widget._on_mode_changed):
        layer.mode = "add"
    assert layer.mode == "add"
    _click(viewer, layer, 10 * VS, 10 * VS)
    assert len(layer.data) == 0
    assert "3D view" in widget.status.text()


def test_snap_moves_a_click_onto_the_blob_centre(setup):
    viewer, widget, tomo, layer = setup
    widget.set_class("1bxn")  # radius 6.16 nm = 7.7 voxels
    widget.snap_check.setChecked(True)
    widget.polarity_combo.setCurrentText("auto")
    viewer.dims.set_point(0, 12 * VS)
    click = BLOB[1:] + [2.5, -3.0]
    _click(viewer, layer, click[0] * VS, click[1] * VS)
    assert layer.data[0][0] == 12.0  # on the clicked slice
    np.testing.assert_allclose(layer.data[0][1:], BLOB[1:], atol=0.5)
    assert "snapped" in widget.status.text()
    assert widget._polarity[id(tomo)] == "bright"
    # also across slices: a click two slices off the centre lands on the 3D centre
    widget.snap_z_check.setChecked(True)
    viewer.dims.set_point(0, 14 * VS)
    _click(viewer, layer, (BLOB[1] + 2) * VS, (BLOB[2] - 1) * VS)
    assert np.linalg.norm(layer.data[1] - BLOB) < 1.0
    # far from any blob: the click stays where it was
    widget.set_class("1s3x")
    viewer.dims.set_point(0, 20 * VS)
    _click(viewer, layer, 34 * VS, 42 * VS)
    np.testing.assert_allclose(layer.data[2], [20.0, 34.0, 42.0], atol=1e-9)
    assert "not snapped" in widget.status.text()
    # one undo step per click
    assert widget.undo() and len(layer.data) == 2


# ------------------------------------------------------------------------------ edits
def test_change_class_delete_undo_redo(setup):
    viewer, widget, tomo, layer = setup
    keys = _keys(viewer, layer)
    widget.set_class("1s3x")
    layer.add([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    layer.selected_data = {0, 2}
    keys.press_key("5")
    keys.press_key("c")  # the selected points get the current class (and its size)
    assert layer.features["class"].tolist() == ["2cg9", "1s3x", "2cg9"]
    assert layer.size[0] == pytest.approx(class_diameter_vox("2cg9", VS))
    assert widget.class_counts()["2cg9"] == 2 and widget.class_counts()["1s3x"] == 1
    layer.selected_data = {1}
    layer.remove_selected()  # what napari's Delete key does
    assert len(layer.data) == 2
    keys.press_key("Control-Z")
    assert len(layer.data) == 3
    np.testing.assert_array_equal(layer.data[1], [4.0, 5.0, 6.0])
    assert layer.features["class"].tolist() == ["2cg9", "1s3x", "2cg9"]
    np.testing.assert_allclose(layer.face_color[1], labels_colormap()[1], atol=1e-6)
    keys.press_key("Control-Z")  # the class change
    assert layer.features["class"].tolist() == ["1s3x"] * 3
    assert layer.size[0] == pytest.approx(class_diameter_vox("1s3x", VS))
    keys.press_key("Control-Shift-Z")
    assert layer.features["class"].tolist() == ["2cg9", "1s3x", "2cg9"]
    # the widget's Delete button, then Undo
    layer.selected_data = {0, 1}
    assert widget.delete_selected() == 2
    assert layer.features["class"].tolist() == ["2cg9"]
    widget.undo_button.click()
    assert len(layer.data) == 3
    # moving points (napari's drag) is undoable too
    moved = np.array(layer.data, copy=True)
    moved[0] += 1.0
    layer.data = moved
    assert widget.undo()
    np.testing.assert_array_equal(layer.data[0], [1.0, 2.0, 3.0])
    # after every undo the next point is still the widget's class
    layer.add([2.0, 2.0, 2.0])
    assert layer.features["class"].iloc[-1] == widget.current_class == "2cg9"
    for _ in range(10):
        widget.undo()
    assert len(layer.data) == 0
    assert not widget.undo() and widget.status.text() == "Nothing to undo"


# ------------------------------------------------------------------------------ curation
@pytest.fixture
def predictions(setup):
    viewer, widget, tomo, layer = setup
    picks = ParticleList.from_arrays(
        ["1bxn", "4cr2", "1s3x", "1bxn", "3cf3"],
        [[10, 10, 5], [20, 12, 6], [30, 14, 7], [40, 16, 8], [12, 30, 9]],
        scores=[0.9, 0.2, 0.6, 0.45, 0.8], voxel_size_nm=VS)
    path = Path(widget.autosave_directory).parent / "picks.csv"
    write_particles(path, picks)
    pred = widget.load_predictions(path)
    return viewer, widget, tomo, layer, pred


def test_score_threshold_hides_low_predictions(predictions):
    viewer, widget, tomo, layer, pred = predictions
    assert widget.predictions_layer() is pred and pred.name == "picks"
    np.testing.assert_allclose(pred.scale, tomo.scale)
    assert pred.features["source"].tolist() == ["predicted"] * 5
    assert widget.threshold_spin.minimum() == pytest.approx(0.2)
    assert widget.threshold_spin.maximum() == pytest.approx(0.9)
    widget.set_score_threshold(0.5)
    assert pred.shown.tolist() == [True, False, True, False, True]
    assert widget.threshold_info.text().startswith("3 of 5 predicted points shown")
    widget.threshold_slider.setValue(1000)
    assert widget.score_threshold() == pytest.approx(0.9)
    assert pred.shown.tolist() == [True, False, False, False, False]
    widget.threshold_slider.setValue(0)
    assert pred.shown.all()


def test_accept_and_reject_predictions(predictions):
    viewer, widget, tomo, layer, pred = predictions
    pred.translate = (0.0, 0.0, 0.0)
    widget.set_score_threshold(0.5)
    pred.selected_data = {0, 1, 4}  # 1 is hidden (score 0.2): not accepted
    assert widget.accept_selected() == 2
    assert len(pred.data) == 3 and len(layer.data) == 2
    assert layer.features["class"].tolist() == ["1bxn", "3cf3"]
    assert layer.features["score"].tolist() == [0.9, 0.8]
    assert layer.features["source"].tolist() == ["predicted", "predicted"]
    np.testing.assert_allclose(layer.data, [[5, 10, 10], [9, 30, 12]])
    np.testing.assert_allclose(layer.size, [class_diameter_vox("1bxn", VS),
                                            class_diameter_vox("3cf3", VS)])
    assert widget.counts_label.text() == "2 points: 2 predicted"
    keys = _keys(viewer, pred)
    pred.selected_data = {1}  # "1s3x", score 0.6
    keys.press_key("n")
    assert pred.features["class"].tolist() == ["4cr2", "1bxn"]
    widget.undo()  # the reject
    assert pred.features["class"].tolist() == ["4cr2", "1s3x", "1bxn"]
    widget.undo()  # the accept: both layers come back
    assert len(pred.data) == 5 and len(layer.data) == 0
    # a predictions layer elsewhere in the world: accepted points keep their world position
    pred.translate = (2 * VS, 0.0, -1 * VS)
    pred.selected_data = {0}
    keys.press_key("y")
    np.testing.assert_allclose(layer.data[0], [5 + 2, 10, 10 - 1])


# ------------------------------------------------------------------------------ files
def _annotated(widget, layer):
    widget.set_class("1bxn")
    layer.add([[3.0, 10.5, 20.25], [5.0, 7.0, 8.0]])
    widget.set_class("4cr2")
    layer.add([11.0, 30.0, 40.0])


@pytest.mark.parametrize("name,relion", [("a.txt", 4), ("a.star", 4), ("a.star", 5),
                                         ("a.csv", 4)])
def test_save_load_round_trip(setup, tmp_path, viewer, qtbot, name, relion):
    viewer_, widget, tomo, layer = setup
    _annotated(widget, layer)
    path = tmp_path / name
    assert widget.save_annotations(path, relion_version=relion)
    text = path.read_text()
    if name.endswith(".star"):
        assert ("_rlnCenteredCoordinateXAngst" in text) == (relion == 5)
    back = read_particles(path, tomogram_shape_xyz=(48, 40, 24), voxel_size_nm=VS)
    assert back.class_names.tolist() == ["1bxn", "1bxn", "4cr2"]
    np.testing.assert_allclose(back.coords_zyx(), layer.data, atol=1e-6)
    # into a fresh annotation layer on the same tomogram
    other = widget.new_annotation_layer("reloaded", activate=False)
    assert widget.load_annotations(path) == 3
    assert widget.annotation_layer() is other
    np.testing.assert_allclose(other.data, layer.data, atol=1e-6)
    assert other.features["class"].tolist() == ["1bxn", "1bxn", "4cr2"]
    assert other.features["source"].tolist() == ["manual"] * 3
    assert widget.undo() and len(other.data) == 0  # a load is one undo step


def test_saving_never_replaces_a_file_unasked(setup, tmp_path, notes):
    viewer, widget, tomo, layer = setup
    _annotated(widget, layer)
    path = tmp_path / "picks.csv"
    path.write_text("precious\n")
    assert not widget.save_annotations(path)
    assert path.read_text() == "precious\n"
    assert "already exists" in widget.status.text() and notes["error"]
    assert widget.save_annotations(path, overwrite=True)
    assert read_particles(path).table["source"].tolist() == ["manual"] * 3


def test_loading_a_star_file_picked_at_another_pixel_size(setup, tmp_path):
    viewer, widget, tomo, layer = setup
    picks = ParticleList.from_arrays(["1bxn"], [[10.0, 8.0, 4.0]], voxel_size_nm=2 * VS)
    write_particles(tmp_path / "bin2.star", picks)  # coordinates of a 2× binned tomogram
    assert widget.load_annotations(tmp_path / "bin2.star") == 1
    np.testing.assert_allclose(layer.data[0], [8.0, 16.0, 20.0])


def test_load_errors_are_reported_not_raised(setup, tmp_path, notes):
    viewer, widget, tomo, layer = setup
    bad = tmp_path / "bad.txt"
    bad.write_text("1bxn 1 2 three\n")
    assert widget.load_annotations(bad) == 0
    assert "bad.txt" in widget.status.text() and notes["error"]
    assert widget.load_annotations(tmp_path / "missing.csv") == 0


# ------------------------------------------------------------------------------ autosave
def test_autosave_appears_and_restores(viewer, qtbot, tmp_path, tomogram_file):
    _open_tomogram(viewer, tomogram_file)
    widget = _widget(viewer, qtbot, tmp_path)
    layer = widget.new_annotation_layer()
    second = widget.new_annotation_layer("second set", activate=False)
    widget.set_annotation_layer(layer)
    _annotated(widget, layer)
    ident = tomogram_identity(tomogram_file)
    qtbot.waitUntil(lambda: [r.n_points for r in list_autosaves(
        ident, tmp_path / "autosave")] == [0, 3], timeout=3000)
    records = {r.layer_name: r for r in list_autosaves(ident, tmp_path / "autosave")}
    assert set(records) == {"tomo annotations", "second set"}
    assert records["tomo annotations"].csv_path != records["second set"].csv_path
    assert "Autosaved" in widget.autosave_info.text()
    saved = read_particles(records["tomo annotations"].csv_path)
    assert saved.table["source"].tolist() == ["manual"] * 3
    np.testing.assert_allclose(saved.coords_zyx(), layer.data)
    # an edit after the autosave is autosaved too (debounced)
    layer.selected_data = {2}
    widget.delete_selected()
    qtbot.waitUntil(lambda: records["tomo annotations"].csv_path.read_text().count("\n") == 3,
                    timeout=3000)
    data = np.array(layer.data, copy=True)
    widget.close()
    del second

    # "crash": a new viewer opens the same tomogram file; the widget restores both layers
    viewer2 = ViewerModel()
    _open_tomogram(viewer2, tomogram_file)
    widget2 = _widget(viewer2, qtbot, tmp_path)
    restored = viewer2.layers["tomo annotations"]
    assert isinstance(restored, Points) and "second set" in viewer2.layers
    np.testing.assert_allclose(restored.data, data)
    assert restored.features["class"].tolist() == ["1bxn", "1bxn"]
    np.testing.assert_allclose(restored.scale, [VS] * 3)
    assert widget2.annotation_layer() is not None
    assert "Restored 2 annotation layers (2 points)" in widget2.status.text()
    # restoring again does not duplicate what is open
    assert widget2.restore_autosaves(force=True) == []
    assert "already open" in widget2.status.text()
    viewer2.layers.clear()


def test_a_volume_without_a_file_restores_only_on_request(viewer, qtbot, tmp_path):
    viewer.add_image(np.zeros(SHAPE, np.float32), name="memory", scale=(VS,) * 3, units="nm")
    widget = _widget(viewer, qtbot, tmp_path)
    layer = widget.new_annotation_layer()
    layer.add([1.0, 2.0, 3.0])
    assert len(widget.flush_autosave()) == 1
    viewer2 = ViewerModel()
    viewer2.add_image(np.zeros(SHAPE, np.float32), name="memory", scale=(VS,) * 3, units="nm")
    widget2 = _widget(viewer2, qtbot, tmp_path)
    assert "memory annotations" not in viewer2.layers
    widget2.restore_button.click()
    assert len(viewer2.layers["memory annotations"].data) == 1


def test_a_renamed_layer_moves_its_autosave(setup, tmp_path, qtbot):
    viewer, widget, tomo, layer = setup
    layer.add([1.0, 2.0, 3.0])
    widget.flush_autosave()
    ident = layer.metadata[ANNOTATION_METADATA_KEY]["tomogram"]
    assert [r.layer_name for r in list_autosaves(ident, tmp_path / "autosave")] == [
        "tomo annotations"]
    layer.name = "ribosomes"
    widget.flush_autosave()
    records = list_autosaves(ident, tmp_path / "autosave")
    assert [(r.layer_name, r.n_points) for r in records] == [("ribosomes", 1)]


def test_paste_is_undoable(setup):
    viewer, widget, tomo, layer = setup
    keys = _keys(viewer, layer)
    layer.add([[1.0, 2.0, 3.0], [1.0, 5.0, 6.0]])
    layer.selected_data = {0, 1}
    viewer.dims.set_point(0, 1 * VS)  # copied on the slice they lie on …
    keys.press_key("Control-C")
    viewer.dims.set_point(0, 4 * VS)
    keys.press_key("Control-V")  # … pasted onto the displayed slice
    assert len(layer.data) == 4 and widget.class_counts()[widget.current_class] == 4
    np.testing.assert_allclose(layer.data[2:], [[4.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert layer.selected_data == {2, 3}
    assert widget.undo() and len(layer.data) == 2


def test_autosave_can_be_switched_off(setup, tmp_path, qtbot):
    viewer, widget, tomo, layer = setup
    widget.autosave_check.setChecked(False)
    layer.add([1.0, 2.0, 3.0])
    qtbot.wait(100)
    assert not list((tmp_path / "autosave").rglob("*.csv"))


# ------------------------------------------------------------------------------ overlays
@pytest.fixture
def dataset(tmp_path):
    phantom = sphere_phantom((16, 40, 48), 5, seed=4)
    rng = np.random.default_rng(0)
    recon = np.zeros((24, 40, 48), np.float32)  # the grandmodel slab at z 4…19
    recon[4:20] = phantom.density
    recon += rng.normal(0, 0.1, recon.shape).astype(np.float32)
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles, voxel_size_nm=VS,
                           grandmodel_z_offset=4,
                           volumes={"grandmodel": phantom.density,
                                    "class_mask": phantom.class_mask,
                                    "occupancy_mask": phantom.occupancy_mask,
                                    "reconstruction": recon})
    return folder, phantom


def test_dataset_overlays_toggle_aligned_with_the_tomogram(viewer, qtbot, tmp_path, dataset):
    folder, phantom = dataset
    data, kwargs, kind = next(t for t in read_dataset_layers(folder)
                              if t[1]["name"] == "ds reconstruction")
    tomo = Layer.create(data, kwargs, kind)
    viewer.layers.append(tomo)
    widget = _widget(viewer, qtbot, tmp_path)
    ann = widget.new_annotation_layer()
    assert widget.dataset_edit.text() == str(folder)
    widget.overlay_checks["ground_truth"].setChecked(True)
    widget.overlay_checks["class_mask"].setChecked(True)
    widget.overlay_checks["grandmodel"].setChecked(True)
    gt, mask, gm = (viewer.layers[f"ds {t}"] for t in ("ground truth", "class mask",
                                                       "grandmodel"))
    assert isinstance(gt, Points) and isinstance(mask, Labels) and isinstance(gm, Image)
    # every overlay lies on the tomogram: particle i of the grandmodel frame is at
    # reconstruction voxel (z + 4, y, x)
    for p in phantom.particles.coords_zyx():
        np.testing.assert_allclose(gt.data_to_world(p), tomo.data_to_world(p + [4, 0, 0]))
        np.testing.assert_allclose(mask.data_to_world(p), tomo.data_to_world(p + [4, 0, 0]))
    # class colours of the mask are the points' colours; overlays sit under the annotations
    name = str(phantom.particles.class_names[0])
    np.testing.assert_allclose(mask.colormap.map(SHREC21_TABLE.id_of(name))[:3],
                               gt.face_color[0][:3], atol=1e-6)
    assert viewer.layers.index(ann) == len(viewer.layers) - 1
    widget.overlay_checks["class_mask"].setChecked(False)
    assert not mask.visible and "ds class mask" in viewer.layers
    widget.overlay_checks["class_mask"].setChecked(True)
    assert mask.visible and viewer.layers["ds class mask"] is mask


def test_overlay_without_a_dataset_is_explained(setup):
    viewer, widget, tomo, layer = setup
    widget.overlay_checks["grandmodel"].setChecked(True)
    assert "dataset folder" in widget.status.text()
    assert len(viewer.layers) == 2


def test_widget_without_layers_and_a_plain_points_layer(viewer, qtbot, tmp_path):
    widget = _widget(viewer, qtbot, tmp_path)
    assert widget.annotation_layer() is None and not widget.save_button.isEnabled()
    plain = viewer.add_points(np.array([[1.0, 2.0, 3.0]]), name="plain")
    widget.set_annotation_layer(plain)
    assert plain.features["class"].tolist() == [NAMES[0]]
    assert plain.features["source"].tolist() == ["manual"]
    widget.set_class("1u6g")
    plain.add([2.0, 3.0, 4.0])
    assert plain.features["class"].tolist() == [NAMES[0], "1u6g"]
    np.testing.assert_allclose(plain.face_color[1], labels_colormap()[7], atol=1e-6)
    assert isinstance(plain.features, pd.DataFrame)


# ------------------------------------------------------------------------------ real window
_REAL_WINDOW = textwrap.dedent(
    """
    import sys
    import numpy as np
    import napari
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    try:
        viewer.open(sys.argv[1], plugin="napari-shrec")
        _, widget = viewer.window.add_plugin_dock_widget("napari-shrec", "Annotate")
        widget.autosave_directory = sys.argv[2]
        layer = widget.new_annotation_layer()
        viewer.dims.set_point(0, 9 * 0.8)
        for _ in range(10):
            QApplication.processEvents()
        canvas = viewer.window._qt_viewer.canvas.native
        QTest.keyClick(canvas, Qt.Key.Key_4)
        QTest.keyClick(canvas, Qt.Key.Key_BracketRight)
        centre = QPoint(canvas.width() // 2, canvas.height() // 2)
        QTest.mouseMove(canvas, centre)
        QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         centre)
        for _ in range(10):
            QApplication.processEvents()
        print("CLASS", widget.current_class)
        print("POINTS", len(layer.data))
        print("POINT", " ".join(f"{v:.4f}" for v in layer.data[0]))
        print("EXPECTED", " ".join(f"{v:.4f}" for v in layer.world_to_data(
            viewer.cursor.position)))
        print("POINTCLASS", layer.features["class"].iloc[0])
        QTest.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        print("AFTERUNDO", len(layer.data))
    finally:
        viewer.close()
    """
)


def test_real_window_keys_and_a_click_on_the_canvas(tmp_path, tomogram_file, shrec_plugin):
    display = os.environ.get("DISPLAY")
    if not display:
        pytest.skip("no X display (pytest-xvfb not active)")
    script = tmp_path / "annotate_window.py"
    script.write_text(_REAL_WINDOW)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display}
    proc = subprocess.run([sys.executable, str(script), str(tomogram_file),
                           str(tmp_path / "autosave")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
               if line.split(" ", 1)[0] in ("CLASS", "POINTS", "POINT", "EXPECTED",
                                            "POINTCLASS", "AFTERUNDO"))
    assert out["CLASS"] == "2cg9"  # key 4 → 3h84 (the 4th class), then ] → the 5th
    assert out["POINTS"] == "1" and out["POINTCLASS"] == "2cg9"
    point = np.array(out["POINT"].split(), dtype=float)
    expected = np.array(out["EXPECTED"].split(), dtype=float)
    assert point[0] == 9.0  # the displayed slice
    np.testing.assert_allclose(point[1:], expected[1:], atol=1e-3)
    assert out["AFTERUNDO"] == "0"

"""The Structures dock widget on a bare ViewerModel (offscreen Qt): real sources, real maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.core.classes import SHREC20_TABLE  # noqa: E402
from napari_shrec.widgets.structures import (  # noqa: E402
    COL_BOUNDING,
    COL_SOURCE,
    COL_SPHERICITY,
    COL_T1_VOLUME,
    COL_VOLUME,
    StructuresWidget,
)

pytestmark = pytest.mark.napari

SHARED_IDS = ("1s3x", "3qm1", "3gl1", "3h84", "2cg9", "3d2f", "1u6g", "3cf3", "1bxn", "1qvr")
SUBSET = ["1s3x", "3qm1", "4d8q"]  # two small atomic models and one surrogate: fast


@pytest.fixture
def viewer(qtbot):
    set_threading(False)
    yield ViewerModel()
    set_threading(None)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SHREC_CACHE_DIR", str(folder))  # never the real home cache
    return folder


@pytest.fixture
def notes(monkeypatch):
    """Messages shown as napari notifications: {"error": [...], "warning": [...]}."""
    shown: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr("napari.utils.notifications.show_error", shown["error"].append)
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown["warning"].append)
    return shown


def _widget(viewer, qtbot, structures_dir=None, download=False):
    widget = StructuresWidget(viewer)
    qtbot.addWidget(widget)
    widget.download_check.setChecked(download)
    if structures_dir is not None:
        widget.set_sources([structures_dir / "pdb"])
    return widget


def _built(viewer, qtbot, structures_dir):
    widget = _widget(viewer, qtbot, structures_dir)
    widget.set_checked_classes(SUBSET)
    widget.start_build()
    return widget


def test_table_shows_each_class_source(structures_dir, cache, viewer, qtbot, notes):
    widget = _widget(viewer, qtbot)
    assert widget.table.rowCount() == len(SHREC20_TABLE) == 12
    assert widget.cache_label.text() == str(cache)
    assert widget.voxel_spin.value() == 1.0 and widget.surrogates_check.isChecked()
    for spin in (widget.voxel_spin, widget.resolution_spin, widget.bfactor_spin):
        assert spin.toolTip()
    # no sources, downloads off: every class falls back to its surrogate
    assert {widget.cell_text(c.name, COL_SOURCE) for c in SHREC20_TABLE} == {"surrogate"}
    widget.download_check.setChecked(True)  # refreshed by the switch: to be downloaded
    assert widget.cell_text("1s3x", COL_SOURCE) == "download"
    widget.download_check.setChecked(False)

    widget.set_sources([structures_dir / "pdb"])
    for name in SHARED_IDS:
        assert widget.cell_text(name, COL_SOURCE) == "atomic-model", name
    for name in ("4cr2", "4d8q"):
        assert widget.cell_text(name, COL_SOURCE) == "surrogate"
        tip = widget.table.item(widget.row_of(name), COL_SOURCE).toolTip()
        assert "downloads are off" in tip
    assert widget.cell_text("1bxn", COL_T1_VOLUME).replace(".", "").isdigit()  # Table 1 shown
    widget.surrogates_check.setChecked(False)
    assert widget.cell_text("4d8q", COL_SOURCE) == "missing"
    # removing the source goes back to surrogates
    widget.surrogates_check.setChecked(True)
    widget.source_list.item(0).setSelected(True)
    widget.remove_selected_sources()
    assert widget.sources() == []
    assert widget.cell_text("1s3x", COL_SOURCE) == "surrogate"
    assert not notes["error"]


def test_build_fills_statistics_and_marks_surrogates(structures_dir, cache, viewer, qtbot,
                                                     notes):
    widget = _built(viewer, qtbot, structures_dir)
    assert sorted(widget.maps) == sorted(SUBSET)
    for name in SUBSET:
        volume = float(widget.cell_text(name, COL_VOLUME))
        assert volume == pytest.approx(widget.maps[name].metrics.volume_nm3)
        assert volume > 50
        assert 0 < float(widget.cell_text(name, COL_SPHERICITY)) <= 1
        assert float(widget.cell_text(name, COL_BOUNDING)) > 0
    # ours within 10 % of Table 1 for the atomic model
    assert float(widget.cell_text("1s3x", COL_VOLUME)) == pytest.approx(
        float(widget.cell_text("1s3x", COL_T1_VOLUME)), rel=0.1)
    assert widget.cell_text("1s3x", COL_SOURCE) == "atomic-model"
    assert widget.cell_text("4d8q", COL_SOURCE) == "surrogate"
    assert "SURROGATE" in widget.table.item(widget.row_of("4d8q"), COL_SOURCE).toolTip()
    assert widget.maps["4d8q"].is_surrogate and not widget.maps["1s3x"].is_surrogate
    # unbuilt classes keep an empty statistics column
    assert widget.cell_text("1bxn", COL_VOLUME) == ""
    # the fallback is reported
    assert widget.last_output.fallbacks == ["4d8q"]
    assert "4d8q" in widget.status.status.text() and "surrogate" in widget.status.status.text()
    assert any("4d8q" in message for message in notes["warning"])
    assert widget.save_button.isEnabled() and not notes["error"]
    # a second build with the same settings adds to the maps (from the cache)
    widget.start_build(["3gl1"])
    assert sorted(widget.maps) == sorted([*SUBSET, "3gl1"])
    assert widget.last_output.fallbacks == []
    assert list(cache.glob("maps/1s3x-*.mrc"))  # cached in the tmp cache, not at home


def test_preview_adds_one_layer_and_replaces_it(structures_dir, cache, viewer, qtbot, notes):
    widget = _built(viewer, qtbot, structures_dir)
    widget.table.selectRow(widget.row_of("1s3x"))  # selecting a built row previews it
    assert [layer.name for layer in viewer.layers] == ["structure: 1s3x"]
    layer = viewer.layers["structure: 1s3x"]
    np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.0))
    assert layer.rendering == "iso"
    assert layer.iso_threshold == pytest.approx(widget.maps["1s3x"].metrics.threshold_v)
    assert layer.metadata["napari_shrec"]["structure"]["name"] == "1s3x"
    np.testing.assert_array_equal(layer.data, widget.maps["1s3x"].potential)
    widget.preview("1s3x")  # again: replaced, not piled up
    assert [lyr.name for lyr in viewer.layers] == ["structure: 1s3x"]
    widget.table.selectRow(widget.row_of("4d8q"))
    assert [lyr.name for lyr in viewer.layers] == ["structure: 4d8q"]
    # other layers are left alone
    viewer.add_image(np.zeros((4, 4, 4)), name="tomogram")
    widget.preview("3qm1")
    assert [lyr.name for lyr in viewer.layers] == ["tomogram", "structure: 3qm1"]
    # an unbuilt class is an error message, not a crash
    assert widget.preview("1bxn") is None
    assert "build the map of 1bxn first" in notes["error"][-1]
    widget.view3d_check.setChecked(True)
    assert viewer.dims.ndisplay == 3
    viewer.dims.ndisplay = 2
    assert not widget.view3d_check.isChecked()


def test_preview_scale_follows_the_voxel_size(structures_dir, cache, viewer, qtbot):
    widget = _widget(viewer, qtbot, structures_dir)
    widget.voxel_spin.setValue(0.5)
    widget.start_build(["1s3x"])
    layer = widget.preview("1s3x")
    np.testing.assert_allclose(layer.scale, (0.5, 0.5, 0.5))


def test_save_refuses_to_overwrite_unless_confirmed(structures_dir, cache, tmp_path, viewer,
                                                    qtbot, monkeypatch, notes):
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    widget = _built(viewer, qtbot, structures_dir)
    out = tmp_path / "maps"
    written = widget.save_maps(out)
    assert (out / "1s3x.mrc").is_file() and (out / "structures.json").is_file()
    assert len(written) == len(SUBSET) + 1
    index = json.loads((out / "structures.json").read_text())
    assert index["maps"]["4d8q"]["surrogate"] is True
    assert index["maps"]["1s3x"]["surrogate"] is False
    with pytest.raises(FileExistsError):
        widget.save_maps(out)
    # through the button: the dialog asks; "No" leaves the files alone, "Yes" replaces them
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    answers = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: answers.pop(0))
    before = (out / "structures.json").stat().st_mtime_ns
    answers.append(QMessageBox.StandardButton.No)
    widget.save_button.click()
    assert (out / "structures.json").stat().st_mtime_ns == before
    assert "Not saved" in widget.status.status.text()
    answers.append(QMessageBox.StandardButton.Yes)
    widget.save_button.click()
    assert "Saved 3 maps" in widget.status.status.text()
    assert not answers and not notes["error"]


def test_bad_sources_and_unavailable_structures_are_reported(tmp_path, cache, viewer, qtbot,
                                                             notes):
    widget = _widget(viewer, qtbot)
    missing = tmp_path / "nowhere"
    assert not widget.add_source(missing)  # refused with a message
    assert "does not exist" in notes["error"][-1] and str(missing) in notes["error"][-1]
    assert widget.sources() == []
    widget.set_sources([missing])  # e.g. a folder deleted meanwhile
    assert "does not exist" in notes["error"][-1]
    assert widget.cell_text("1s3x", COL_SOURCE) == "?"
    widget.start_build(["1s3x"])
    assert "does not exist" in notes["error"][-1]
    assert widget.status.status.text().startswith("Failed")
    assert widget.maps == {}
    # no file, no download, no surrogate: StructureUnavailableError, shown with its cause
    widget.set_sources([])
    widget.surrogates_check.setChecked(False)
    widget.start_build(["1s3x"])
    assert "surrogates are off" in notes["error"][-1]
    assert widget.status.status.text().startswith("Failed") and widget.maps == {}
    widget.set_checked_classes([])
    widget.start_build()
    assert "tick at least one class" in notes["error"][-1]
    assert widget.build_button.isEnabled()


def test_checked_rows_choose_what_is_built_and_cancel_keeps_nothing(structures_dir, cache,
                                                                    viewer, qtbot):
    widget = _widget(viewer, qtbot, structures_dir)
    assert len(widget.checked_classes()) == 12  # all ticked by default
    widget.set_checked_classes(["3qm1"])
    assert widget.table.item(widget.row_of("1s3x"), 0).checkState() == Qt.CheckState.Unchecked
    widget.start_build()
    assert list(widget.maps) == ["3qm1"]
    # cancelled at the first progress report: no new map, status says so
    widget.runner.progressed.connect(lambda *_: widget.runner.cancel())
    widget.start_build(["1s3x", "3gl1"])
    assert list(widget.maps) == ["3qm1"]
    assert widget.status.status.text().startswith("Cancelled")


def test_build_in_a_worker_thread(structures_dir, cache, qtbot):
    set_threading(True)
    try:
        viewer = ViewerModel()
        widget = _widget(viewer, qtbot, structures_dir)
        widget.start_build(["1s3x"])
        assert not widget.build_button.isEnabled()
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=20000)
        assert widget.build_button.isEnabled()
        assert list(widget.maps) == ["1s3x"] and widget.cell_text("1s3x", COL_VOLUME)
    finally:
        set_threading(None)

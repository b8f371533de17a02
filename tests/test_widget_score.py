"""The Score dock widget on a bare ViewerModel (offscreen Qt): real scoring, real layers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402

from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.core.particles import ParticleList  # noqa: E402
from napari_shrec.core.phantom import sphere_phantom  # noqa: E402
from napari_shrec.core.score import ScoreParams, score_submission  # noqa: E402
from napari_shrec.io.dataset import write_dataset  # noqa: E402
from napari_shrec.io.mrc import write_mrc  # noqa: E402
from napari_shrec.layers import particles_to_points_layer  # noqa: E402
from napari_shrec.widgets.score import OUTCOME_COLORS, ScoreWidget  # noqa: E402

pytestmark = pytest.mark.napari


@pytest.fixture(scope="module")
def phantom():
    return sphere_phantom((24, 64, 64), 20, seed=5)


def _picks(truth: ParticleList) -> ParticleList:
    """Hit every other particle (one misclassified, one twice), plus one background pick."""
    names, coords = [], []
    for i, row in enumerate(truth.table.itertuples()):
        if i % 2:
            continue
        name = "4d8q" if i == 0 else row.class_name
        names.append(name)
        coords.append((row.x + 0.4, row.y, row.z))
        if i == 2:
            names.append(row.class_name)
            coords.append((row.x, row.y - 0.4, row.z))
    names.append("1s3x")
    coords.append((1.0, 1.0, 1.0))
    return ParticleList.from_arrays(names, coords, scores=np.linspace(1, 0, len(names)))


@pytest.fixture
def viewer(qtbot):
    set_threading(False)
    yield ViewerModel()
    set_threading(None)


def _add(viewer, layer_tuple):
    data, kwargs, kind = layer_tuple
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def _widget_on_dataset(tmp_path, phantom, viewer, qtbot):
    """A dataset folder of the phantom, a "picks" prediction layer and a Score widget aimed at
    both; returns (layer, widget)."""
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"occupancy_mask": phantom.occupancy_mask})
    layer = _add(viewer, particles_to_points_layer(_picks(phantom.particles), "picks",
                                                   source="predicted"))
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.dataset_edit.setText(str(folder))
    return layer, widget


def test_scores_a_dataset_folder_and_writes_outcomes_back(tmp_path, phantom, viewer, qtbot):
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"occupancy_mask": phantom.occupancy_mask,
                                    "class_mask": phantom.class_mask})
    picks = _picks(phantom.particles)
    layer = _add(viewer, particles_to_points_layer(picks, "picks", source="predicted"))
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.checked_prediction_names() == ["picks"]
    widget.dataset_edit.setText(str(folder))
    widget.start_scoring()

    expected = score_submission(phantom.particles, phantom.occupancy_mask, picks,
                                ScoreParams(mode="native"))
    result = widget.last_output.results[0]
    assert widget.last_output.mode == "native"
    assert (result.TP, result.FP, result.FN, result.MH) == (expected.TP, expected.FP,
                                                            expected.FN, expected.MH)
    assert expected.FP == 1 and expected.MH == 1 and expected.TP == 10
    assert "picks" in widget.report.toPlainText() and "F1 Score" in widget.report.toPlainText()
    assert not widget.confusion_label.pixmap().isNull()
    # per-point features on the prediction layer
    assert layer.features["outcome"].tolist() == expected.outcome.tolist()
    assert layer.features["hit_particle"].tolist() == expected.hit_particle.tolist()
    assert layer.features["outcome"].tolist()[0] == "misclassified"
    # hidden layer of the missed particles, in the ground-truth frame
    missed = viewer.layers["missed particles (picks)"]
    assert not missed.visible and len(missed.data) == expected.FN
    np.testing.assert_allclose(missed.data, phantom.particles.coords_zyx()[expected.missed_indices])
    # colour by outcome, then back to class
    widget.color_by.setCurrentText("outcome")
    fp_index = layer.features["outcome"].tolist().index("FP")
    np.testing.assert_allclose(layer.face_color[fp_index], OUTCOME_COLORS["FP"])
    widget.color_by.setCurrentText("class")
    assert layer.face_color[fp_index][:3].tolist() != list(OUTCOME_COLORS["FP"][:3])
    # re-running replaces the missed layer instead of piling up
    widget.start_scoring()
    assert [lyr.name for lyr in viewer.layers].count("missed particles (picks)") == 1


def test_scores_against_layers_through_world_coordinates(phantom, viewer, qtbot):
    # ground truth shown 10 voxels down in z (as SHREC'20 grandmodels sit inside a reconstruction)
    offset = (10.0, 0.0, 0.0)
    _add(viewer, particles_to_points_layer(phantom.particles, "truth", translate_zyx_vox=offset))
    occ = viewer.add_labels(phantom.occupancy_mask, name="occupancy", translate=offset)
    occ.metadata = {"kind": "occupancy_mask"}
    picks = _picks(phantom.particles)
    shifted = picks.copy()
    shifted.table["z"] = shifted.table["z"] + 10  # picked on the reconstruction frame
    _add(viewer, particles_to_points_layer(shifted, "picks", source="predicted"))
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.gt_source.setCurrentText("Layers")
    widget.gt_points_combo.setCurrentText("truth")
    widget.occupancy_combo.setCurrentText("occupancy")
    widget.set_predictions(["picks"])
    widget.start_scoring()
    expected = score_submission(phantom.particles, phantom.occupancy_mask, picks)
    result = widget.last_output.results[0]
    assert (result.TP, result.FP, result.FN) == (expected.TP, expected.FP, expected.FN)
    missed = viewer.layers["missed particles (picks)"]
    np.testing.assert_allclose(missed.translate, offset)


def test_errors_are_reported_not_raised(tmp_path, viewer, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.start_scoring()
    assert "tick at least one prediction" in shown[-1]
    _add(viewer, particles_to_points_layer(
        ParticleList.from_arrays(["ribosome"], [[1, 1, 1]]), "odd", source="predicted"))
    widget.set_predictions(["odd"])
    widget.dataset_edit.setText(str(tmp_path / "missing"))
    widget.start_scoring()
    assert "no such dataset folder" in shown[-1]
    phantom = sphere_phantom((16, 32, 32), 4, seed=1)
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"occupancy_mask": phantom.occupancy_mask})
    widget.dataset_edit.setText(str(folder))
    widget.start_scoring()  # unknown class label → a clear error naming it
    assert "ribosome" in shown[-1]
    assert widget.status.status.text().startswith("Failed")
    widget.unknown_check.setChecked(True)
    widget.start_scoring()
    assert widget.last_output.results[0].RR == 1


def test_scoring_in_a_worker_thread(tmp_path, phantom, qtbot):
    set_threading(True)
    try:
        viewer = ViewerModel()
        _, widget = _widget_on_dataset(tmp_path, phantom, viewer, qtbot)
        progress = []
        widget.runner.progressed.connect(lambda d, t, m: progress.append((d, t)))
        widget.start_scoring()
        assert not widget.score_button.isEnabled()  # disabled while busy
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=10000)
        assert widget.score_button.isEnabled()
        assert widget.last_output is not None and widget.last_output.results[0].TP == 10
        assert progress and progress[-1][0] == progress[-1][1]
    finally:
        set_threading(None)


def test_dataset_folder_is_filled_in_from_open_layers(tmp_path, phantom, viewer, qtbot,
                                                     shrec_plugin):
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"occupancy_mask": phantom.occupancy_mask,
                                    "grandmodel": phantom.density})
    viewer.open(str(folder), plugin="napari-shrec")
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.dataset_edit.text() == str(folder)
    # ground-truth points are not ticked as predictions by default
    assert widget.checked_prediction_names() == []


def test_dataset_with_z_offset_scores_picks_made_on_the_reconstruction(tmp_path, phantom, viewer,
                                                                       qtbot):
    folder = tmp_path / "model_9"
    folder.mkdir()
    write_mrc(folder / "occupancy_mask.mrc", phantom.occupancy_mask.astype(np.float32))
    write_mrc(folder / "reconstruction.mrc", np.zeros((64, 64, 64), np.float32))
    lines = [f"{r.class_name} {int(r.x)} {int(r.y)} {int(r.z)} 0 0 0"
             for r in phantom.particles.table.itertuples()]
    (folder / "particle_locations.txt").write_text("\n".join(lines) + "\n")
    offset = (64 - 24) // 2
    picks = _picks(phantom.particles)
    picks.table["z"] = picks.table["z"] + offset  # picked on the 64-slice reconstruction
    _add(viewer, particles_to_points_layer(picks, "picks", source="predicted"))
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.dataset_edit.setText(str(folder))
    widget.start_scoring()
    out = widget.last_output
    assert out.mode == "shrec2020"
    assert out.results[0].TP == 10 and out.results[0].z_shift == 0
    widget.mode_combo.setCurrentText("native")
    widget.start_scoring()
    assert widget.last_output.results[0].TP == 10


def test_scoring_keeps_the_feature_defaults_of_points_added_later(tmp_path, phantom, viewer,
                                                                   qtbot):
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"occupancy_mask": phantom.occupancy_mask})
    picks = _picks(phantom.particles)  # last row: a "predicted" 1s3x in the background (FP)
    layer = _add(viewer, particles_to_points_layer(picks, "picks", source="predicted",
                                                   default_class="3gl1"))
    before = layer.feature_defaults.iloc[0].to_dict()
    assert (before["class"], before["source"]) == ("3gl1", "manual")
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.dataset_edit.setText(str(folder))
    widget.start_scoring()
    assert "outcome" in layer.features  # outcomes were written

    after = layer.feature_defaults.iloc[0].to_dict()
    assert (after["class"], after["source"]) == ("3gl1", "manual")
    assert after["hit_particle"] == 0
    assert after["outcome"] == "unscored"  # not the last row's "FP"
    n = len(layer.data)
    for colour_by in ("outcome", "class"):  # adding works whatever the colouring
        widget.color_by.setCurrentText(colour_by)
        layer.add([5.0, 6.0, 7.0])
        added = layer.features.iloc[-1]
        assert (added["class"], added["source"]) == ("3gl1", "manual")
        if colour_by == "outcome":
            np.testing.assert_allclose(layer.face_color[-1], (0.6, 0.6, 0.6, 1.0))  # fallback
        assert added["hit_particle"] == 0 and added["outcome"] == "unscored"
    assert len(layer.data) == n + 2


def test_outcomes_are_not_written_onto_a_layer_changed_while_scoring(tmp_path, phantom, viewer,
                                                                    qtbot, monkeypatch):
    layer, widget = _widget_on_dataset(tmp_path, phantom, viewer, qtbot)
    # a worker thread that has not finished yet: keep the task, run it after the edit
    tasks = []
    monkeypatch.setattr(widget.runner, "start",
                        lambda func, *args, **kwargs: tasks.append((func, args, kwargs)))
    widget.start_scoring()
    (func, args, kwargs), = tasks
    moved = np.array(layer.data)
    moved[0] += (0.0, 3.0, 0.0)  # same number of points, one of them moved
    layer.data = moved
    output = func(*args)
    kwargs["on_result"](output)
    assert widget.last_output is output  # the tables are shown all the same
    assert "outcome" not in layer.features and "hit_particle" not in layer.features
    assert "picks" in widget.status.status.text()
    assert "outcomes not written" in widget.status.status.text()
    # scored again without an edit: written
    tasks.clear()
    widget.start_scoring()
    (func, args, kwargs), = tasks
    kwargs["on_result"](func(*args))
    assert len(layer.features["outcome"]) == len(layer.data)


def test_layers_ground_truth_hands_the_worker_a_copy_of_the_occupancy(phantom, viewer, qtbot,
                                                                     monkeypatch):
    _add(viewer, particles_to_points_layer(phantom.particles, "truth"))
    occ = viewer.add_labels(phantom.occupancy_mask.copy(), name="occupancy")
    _add(viewer, particles_to_points_layer(_picks(phantom.particles), "picks",
                                           source="predicted"))
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.gt_source.setCurrentText("Layers")
    widget.gt_points_combo.setCurrentText("truth")
    widget.occupancy_combo.setCurrentText("occupancy")
    widget.set_predictions(["picks"])
    tasks = []
    monkeypatch.setattr(widget.runner, "start",
                        lambda func, *args, **kwargs: tasks.append((func, args, kwargs)))
    widget.start_scoring()
    gt = tasks[0][1][0]
    assert not np.shares_memory(gt.occupancy_mask, occ.data)
    occ.data[...] = 0  # painting meanwhile does not reach the worker's mask
    np.testing.assert_array_equal(gt.occupancy_mask, phantom.occupancy_mask)


def test_colouring_by_class_uses_the_scored_class_table(tmp_path, phantom, viewer, qtbot):
    import dataclasses

    from napari_shrec.core.classes import SHREC21_TABLE, ClassTable

    layer, widget = _widget_on_dataset(tmp_path, phantom, viewer, qtbot)
    widget.start_scoring()
    blue = (0.0, 0.0, 1.0)
    custom = ClassTable(dataclasses.replace(c, color=blue) if c.name == "1s3x" else c
                        for c in SHREC21_TABLE)
    widget.last_output = dataclasses.replace(widget.last_output, class_table=custom)
    widget.color_by.setCurrentText("outcome")
    widget.color_by.setCurrentText("class")
    index = layer.features["class"].tolist().index("1s3x")
    np.testing.assert_allclose(layer.face_color[index], (*blue, 1.0))


def test_cli_and_widget_agree_on_a_dataset_with_extra_classes(tmp_path, viewer, qtbot, capsys):
    import json

    from napari_shrec.cli import main

    phantom = sphere_phantom((16, 48, 48), 8, seed=6)
    truth = phantom.particles.copy()
    truth.table.loc[0, "class_name"] = "ribosome"  # beyond the SHREC tables
    folder = write_dataset(tmp_path / "ds", particles=truth,
                           volumes={"occupancy_mask": phantom.occupancy_mask})
    picks = _picks(truth)
    pick_file = tmp_path / "picks.txt"
    from napari_shrec.io.particles import write_particles

    write_particles(pick_file, picks)
    assert main(["score", "--gt", str(folder), str(pick_file), "--json",
                 str(tmp_path / "s.json")]) == 0
    cli = json.loads((tmp_path / "s.json").read_text())[0]
    _add(viewer, particles_to_points_layer(picks, "picks", source="predicted"))
    widget = ScoreWidget(viewer)
    qtbot.addWidget(widget)
    widget.dataset_edit.setText(str(folder))
    widget.start_scoring()
    result = widget.last_output.results[0]
    assert (result.TP, result.FP, result.FN, result.MH) == (cli["TP"], cli["FP"], cli["FN"],
                                                            cli["MH"])
    assert "ribosome" in result.per_class_F1

"""The Batch dock widget on a bare ViewerModel (offscreen Qt), submitting to a LocalCluster's
scheduler by address (the path a SLURM or Kubernetes scheduler takes), on tiny simulations."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.components import ViewerModel  # noqa: E402

from napari_shrec._workers import set_threading  # noqa: E402
from napari_shrec.widgets.batch import OUTPUT_NAMES, BatchWidget  # noqa: E402

pytestmark = pytest.mark.napari

TINY = dict(structure_sources=[], download_structures=False, shape_zyx=(32, 64, 64),
            n_particles=(6, 6), tilt_angles_deg=(-45.0, -15.0, 15.0, 45.0))


@pytest.fixture(scope="module")
def scheduler():
    from distributed import Client

    from napari_shrec.batch.engine import local_cluster

    with local_cluster(1, 1) as cluster, Client(cluster) as client:  # one worker: quick
        client.wait_for_workers(1, timeout=120)
        yield cluster.scheduler_address


@pytest.fixture
def widget(qtbot):
    set_threading(False)
    w = BatchWidget(ViewerModel())
    qtbot.addWidget(w)
    yield w
    set_threading(None)


@pytest.fixture
def notes(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    return shown


def test_action_switches_sections_and_default_output_names(widget):
    assert widget.action_combo.currentText() == "simulate"
    assert not widget.simulate_box.isHidden() and widget.inputs_box.isHidden()
    for action in ("reconstruct", "detect", "score"):
        widget.action_combo.setCurrentText(action)
        assert widget.simulate_box.isHidden() and not widget.inputs_box.isHidden()
        assert widget.output_edit.text() == OUTPUT_NAMES[action]
        assert widget.picks_edit.isEnabled() == (action == "score")
    widget.scheduler_edit.setText("tcp://somewhere:8786")
    assert not widget.workers_spin.isEnabled()
    assert widget.batch_params().scheduler == "tcp://somewhere:8786"


def test_bad_input_is_refused_before_any_work(widget, notes, tmp_path):
    assert not widget.start_batch()
    assert "output folder" in widget.status.status.text() and notes
    widget.action_combo.setCurrentText("detect")
    widget.inputs_edit.setPlainText(str(tmp_path / "nothing_here"))
    assert not widget.start_batch()
    assert "nothing_here" in widget.status.status.text()
    assert widget.table.rowCount() == 0


def test_batch_simulate_runs_on_the_scheduler_then_resumes(widget, notes, tmp_path, scheduler):
    widget.out_edit.setText(str(tmp_path))
    widget.n_spin.setValue(2)
    widget.seed_spin.setValue(40)
    widget.scheduler_edit.setText(scheduler)
    assert widget.start_batch(**TINY)
    assert not notes
    report = widget.last_report
    assert report is not None and report.ok
    assert [widget.status_of(r) for r in range(2)] == ["finished"] * 2
    assert widget.table.item(0, 3).text() == "100%"
    assert "2 finished" in widget.summary_label.text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0", "model_1"]
    assert all((tmp_path / f"model_{i}" / "simulation.json").is_file() for i in range(2))

    widget.n_spin.setValue(3)  # one more: the two finished ones are skipped
    assert widget.start_batch(**TINY)
    assert [widget.status_of(r) for r in range(3)] == ["skipped"] * 2 + ["finished"]
    assert widget.last_report.with_status("finished")[0].task.name == "model_2"

    widget.seed_spin.setValue(1)  # other seeds: these folders are not this batch's
    assert not widget.start_batch(**TINY)
    assert "--overwrite" in widget.status.status.text() or "overwrite" in notes[-1]

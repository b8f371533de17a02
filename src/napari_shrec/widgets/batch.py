"""Batch dock widget: simulate, reconstruct, detect or score many tomograms on dask.distributed.

The widget gathers what ``napari-shrec batch`` takes — the action; for ``simulate`` the number
of datasets, preset, base seed and output folder (one ``model_<i>`` folder per dataset, seed
base + i); for the other actions the inputs (dataset folders, files or glob patterns, one per
line, or a folder of datasets) and the output file name — and where to run: a LocalCluster of N
worker processes, or the dask scheduler at an address (``tcp://host:8786``: a dask-jobqueue
SLURM/PBS cluster, Kubernetes …). "Run" builds the task list with the
:mod:`napari_shrec.batch` plans (bad input and outputs that are not the batch's are refused
before any work) and runs :func:`~napari_shrec.batch.engine.run_batch` in a
:class:`~napari_shrec._workers.TaskRunner`; "Cancel" stops it (queued tasks are cancelled,
running ones stop at their next step). The table shows each task's status, attempts, progress
and result or cause of failure; finished outputs of an earlier run show as "skipped".

Nothing is added to the viewer: open an output with File ▸ Open (dataset folders are read by
napari-shrec's reader).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._workers import TaskRunner
from ..batch.engine import BatchEvent, BatchParams, BatchReport, run_batch
from ..batch.tasks import (
    ACTIONS,
    BatchTask,
    DetectSettings,
    ReconstructSettings,
    ScoreSettings,
    expand_inputs,
    plan_detect,
    plan_reconstruct,
    plan_score,
    plan_simulate,
)
from ..core.progress import CancelToken, ProgressCallback
from ._common import int_spin, report_error
from ._task_status import TaskStatusWidget

if TYPE_CHECKING:
    import napari

__all__ = ["BatchWidget", "COLUMNS", "OUTPUT_NAMES"]

COLUMNS = ("task", "status", "attempts", "progress", "result")
#: Default output file name of each action (simulate writes folders).
OUTPUT_NAMES = {"reconstruct": "reconstruction.mrc", "detect": "picks.txt",
                "score": "score.json"}


def _run(tasks: list[BatchTask], params: BatchParams, events: queue.Queue, *,
         progress: ProgressCallback | None = None, cancel: CancelToken | None = None
         ) -> BatchReport:
    """The worker-thread function: events go to a queue the widget drains in the main thread."""
    return run_batch(tasks, params, progress=progress, on_event=events.put, cancel=cancel)


class BatchWidget(QWidget):
    """The Batch dock widget (see the module docstring).

    Attributes:
        tasks: the task list of the last run.
        last_report: its :class:`~napari_shrec.batch.engine.BatchReport` (None before one ended).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner = TaskRunner()
        self.tasks: list[BatchTask] = []
        self.last_report: BatchReport | None = None
        self._events: queue.Queue[BatchEvent] = queue.Queue()
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.drain_events)

        # --- action
        self.action_combo = QComboBox()
        self.action_combo.addItems(list(ACTIONS))
        self.action_combo.setToolTip("What each task does to its tomogram")
        self.action_combo.currentTextChanged.connect(self._on_action_changed)

        # --- simulate
        self.n_spin = int_spin(1, 10_000, 4, "Number of datasets (one task each)")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(["small", "shrec2020"])
        self.preset_combo.setToolTip("small: 128×128×64 voxels; shrec2020: 512×512×200")
        self.seed_spin = int_spin(0, 2**31 - 1, 0, "Task i uses seed base + i")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("output folder (one model_<i> folder per dataset)")
        out_button = QPushButton("Browse…")
        out_button.clicked.connect(self._choose_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(out_button)
        self.simulate_box = QGroupBox("Simulate")
        form = QFormLayout()
        form.addRow("Datasets", self.n_spin)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Base seed", self.seed_spin)
        form.addRow("Output folder", out_row)
        self.simulate_box.setLayout(form)

        # --- inputs of the other actions
        self.inputs_edit = QPlainTextEdit()
        self.inputs_edit.setPlaceholderText("dataset folders, files or glob patterns, one per "
                                            "line (a folder of datasets stands for all of them)")
        self.inputs_edit.setMaximumHeight(80)
        add_button = QPushButton("Add folder…")
        add_button.clicked.connect(self._add_folder)
        self.output_edit = QLineEdit(OUTPUT_NAMES["reconstruct"])
        self.output_edit.setToolTip("File written into each dataset folder")
        self.picks_edit = QLineEdit("picks.txt")
        self.picks_edit.setToolTip("Particle list to score, in each dataset folder")
        self.inputs_box = QGroupBox("Inputs")
        form = QFormLayout()
        form.addRow(self.inputs_edit)
        form.addRow(add_button)
        form.addRow("Output name", self.output_edit)
        form.addRow("Picks to score", self.picks_edit)
        self.inputs_box.setLayout(form)

        # --- cluster
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText("empty: local workers; or tcp://host:8786")
        self.scheduler_edit.setToolTip("Address of a running dask scheduler (dask-jobqueue "
                                       "SLURM/PBS, Kubernetes, 'dask scheduler')")
        self.workers_spin = int_spin(1, 256, 2, "Worker processes of the local cluster")
        self.threads_spin = int_spin(0, 1024, 0, "Threads per task (0: cores / workers)")
        self.retries_spin = int_spin(0, 100, 2, "Extra attempts for a task that fails")
        self.overwrite_check = QCheckBox("Replace outputs that are not this batch's")
        self.cluster_box = QGroupBox("Cluster")
        form = QFormLayout()
        form.addRow("Scheduler", self.scheduler_edit)
        form.addRow("Local workers", self.workers_spin)
        form.addRow("Threads per task", self.threads_spin)
        form.addRow("Retries", self.retries_spin)
        form.addRow(self.overwrite_check)
        self.cluster_box.setLayout(form)

        # --- run
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(lambda *_: self.start_batch())
        self.status = TaskStatusWidget(self.runner)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(
            len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)

        layout = QVBoxLayout()
        top = QFormLayout()
        top.addRow("Action", self.action_combo)
        layout.addLayout(top)
        layout.addWidget(self.simulate_box)
        layout.addWidget(self.inputs_box)
        layout.addWidget(self.cluster_box)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary_label)
        self.setLayout(layout)
        self.runner.busy_changed.connect(self._on_busy_changed)
        self.scheduler_edit.textChanged.connect(
            lambda text: self.workers_spin.setEnabled(not text.strip()))
        self._on_action_changed(self.action_combo.currentText())

    # ------------------------------------------------------------------ parameters
    def _on_action_changed(self, action: str) -> None:
        simulate = action == "simulate"
        self.simulate_box.setVisible(simulate)
        self.inputs_box.setVisible(not simulate)
        if not simulate:
            if self.output_edit.text().strip() in OUTPUT_NAMES.values() \
                    or not self.output_edit.text().strip():
                self.output_edit.setText(OUTPUT_NAMES[action])
            self.picks_edit.setEnabled(action == "score")

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.out_edit.text())
        if folder:
            self.out_edit.setText(folder)

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder")
        if folder:
            text = self.inputs_edit.toPlainText().rstrip()
            self.inputs_edit.setPlainText(f"{text}\n{folder}" if text else folder)

    def batch_params(self) -> BatchParams:
        """Where and how to run, as set in the widget."""
        return BatchParams(scheduler=self.scheduler_edit.text().strip() or None,
                           n_workers=int(self.workers_spin.value()),
                           threads_per_task=int(self.threads_spin.value()),
                           retries=int(self.retries_spin.value()))

    def plan(self, **simulation_overrides: Any) -> list[BatchTask]:
        """The task list set in the widget (``simulation_overrides`` go to
        :func:`~napari_shrec.batch.tasks.plan_simulate`, e.g. a smaller ``shape_zyx``).

        Raises:
            ValueError, FileNotFoundError: no output folder, no inputs, an input that does not
                exist, a bad output name.
        """
        action = self.action_combo.currentText()
        overwrite = self.overwrite_check.isChecked()
        if action == "simulate":
            out = self.out_edit.text().strip()
            if not out:
                raise ValueError("choose an output folder")
            return plan_simulate(Path(out).expanduser(), int(self.n_spin.value()),
                                 preset=self.preset_combo.currentText(),
                                 seed=int(self.seed_spin.value()), overwrite=overwrite,
                                 **simulation_overrides)
        items = [line.strip() for line in self.inputs_edit.toPlainText().splitlines()
                 if line.strip()]
        if not items:
            raise ValueError("add at least one input (dataset folder, file or glob pattern)")
        inputs = expand_inputs(items)
        name = self.output_edit.text().strip()
        if action == "reconstruct":
            return plan_reconstruct(inputs, ReconstructSettings(output_name=name),
                                    overwrite=overwrite)
        if action == "detect":
            return plan_detect(inputs, DetectSettings(output_name=name), overwrite=overwrite)
        return plan_score(inputs, ScoreSettings(picks_name=self.picks_edit.text().strip(),
                                                output_name=name), overwrite=overwrite)

    # ------------------------------------------------------------------ running
    def start_batch(self, **simulation_overrides: Any) -> bool:
        """The Run button: plan, check the outputs, fill the table and run (synchronously when
        threads are off). Errors go to the status line and a notification. Returns whether a
        batch was started."""
        try:
            tasks = self.plan(**simulation_overrides)
            from ..batch.tasks import check_tasks

            check_tasks(tasks)  # refuse before any work, in the main thread
            params = self.batch_params()
        except (ValueError, OSError) as exc:
            report_error(self.status.status, "Batch", exc)
            return False
        self.tasks = tasks
        self.last_report = None
        self._events = queue.Queue()
        self._fill_table(tasks)
        self.summary_label.setText("")
        self._timer.start()
        self.runner.start(_run, tasks, params, self._events, on_result=self._on_result,
                          on_error=self._on_error, on_cancelled=self._on_cancelled,
                          description=f"Batch {self.action_combo.currentText()} "
                                      f"({len(tasks)} tasks)")
        return True

    def cancel(self) -> None:
        """Stop the batch (queued tasks are cancelled, running ones stop at their next step)."""
        self.runner.cancel()

    def _fill_table(self, tasks: list[BatchTask]) -> None:
        self.table.setRowCount(len(tasks))
        for row, task in enumerate(tasks):
            for col, text in enumerate((task.name, "pending", "0", "", str(task.output))):
                self.table.setItem(row, col, QTableWidgetItem(text))

    def _set(self, row: int, column: str, text: str) -> None:
        if 0 <= row < self.table.rowCount():
            self.table.item(row, COLUMNS.index(column)).setText(text)

    def drain_events(self) -> None:
        """Show the task events that arrived (main thread; a timer calls it while a batch
        runs)."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._show_event(event)

    def _show_event(self, event: BatchEvent) -> None:
        row = event.index
        if event.kind == "cluster":
            self.summary_label.setText(f"Running on {event.message}")
        elif event.kind == "started":
            self._set(row, "status", "running")
            self._set(row, "attempts", str(event.attempt))
            self._set(row, "result", f"on {event.worker}")
        elif event.kind == "progress" and event.total:
            self._set(row, "progress", f"{100 * event.done // event.total}%")
            self._set(row, "result", event.message)
        elif event.kind == "error":
            self._set(row, "result", f"attempt {event.attempt} failed: {event.message}")
        elif event.kind in ("finished", "skipped", "failed", "cancelled"):
            self._set(row, "status", event.kind)
            if event.kind in ("finished", "skipped"):
                self._set(row, "progress", "100%")
            self._set(row, "result", event.message)

    def status_of(self, row: int) -> str:
        """The status shown for task ``row``."""
        return self.table.item(row, COLUMNS.index("status")).text()

    def _finish(self) -> None:
        self._timer.stop()
        self.drain_events()

    def _on_result(self, report: BatchReport) -> None:
        self._finish()
        self.last_report = report
        counts = {s: len(report.with_status(s))
                  for s in ("finished", "skipped", "failed", "cancelled")}
        text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        self.summary_label.setText(f"{len(report.tasks)} tasks: {text} in "
                                   f"{report.elapsed_s:.1f} s on {report.where or 'nothing'}")
        self.status.status.setText("Done" if report.ok else
                                   f"{counts['failed']} task(s) failed: see the table")

    def _on_error(self, exc: BaseException) -> None:
        self._finish()
        report_error(self.status.status, "Batch", exc)

    def _on_cancelled(self) -> None:
        self._finish()
        self.status.status.setText("Cancelled: finished outputs are kept; Run resumes")

    def _on_busy_changed(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        for box in (self.simulate_box, self.inputs_box, self.cluster_box, self.action_combo):
            box.setEnabled(not busy)

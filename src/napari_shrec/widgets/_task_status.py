"""A one-row status display for a :class:`~napari_shrec._workers.TaskRunner`:
status label + progress bar + Cancel button (as in napari-cryoet-data-portal's progress widget).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

if TYPE_CHECKING:
    from .._workers import TaskRunner

__all__ = ["TaskStatusWidget"]


class TaskStatusWidget(QWidget):
    """Shows what a :class:`TaskRunner` is doing and lets the user cancel it.

    While a task runs: the label shows ``description: message``, the bar shows ``done/total``
    (busy indicator when ``total`` is 0) and Cancel is enabled. When idle: the bar is hidden,
    Cancel is disabled and the label shows the last outcome ("Done", "Cancelled", "Failed: …").

    Args:
        runner: the runner to follow (the widget connects to its callbacks).
        hide_when_idle: hide the whole row while no task runs.
        parent: Qt parent.
    """

    def __init__(self, runner: TaskRunner, *, hide_when_idle: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.hide_when_idle = hide_when_idle
        self.status = QLabel("Ready")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running task")
        self.cancel_button.clicked.connect(self.runner.cancel)

        layout = QHBoxLayout()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status, 1)
        layout.addWidget(self.progress, 1)
        layout.addWidget(self.cancel_button)
        self.setLayout(layout)

        runner.busy_changed.connect(self._on_busy_changed)
        runner.started.connect(self._on_started)
        runner.progressed.connect(self._on_progressed)
        runner.finished.connect(self._on_finished)
        runner.cancel_requested.connect(self._on_cancel_requested)
        self.destroyed.connect(lambda *_: self._disconnect(runner))
        self._on_busy_changed(runner.busy)

    # ------------------------------------------------------------------------------------------
    def _disconnect(self, runner: TaskRunner) -> None:
        # Runs from Qt's ``destroyed`` signal: garbage collection may already have cleared the
        # runner (no signal attributes left) or disconnected the slots; both are fine.
        try:
            runner.busy_changed.disconnect(self._on_busy_changed)
            runner.started.disconnect(self._on_started)
            runner.progressed.disconnect(self._on_progressed)
            runner.finished.disconnect(self._on_finished)
            runner.cancel_requested.disconnect(self._on_cancel_requested)
        except (AttributeError, RuntimeError, TypeError):
            pass

    def _on_busy_changed(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setEnabled(busy)
        if self.hide_when_idle:
            self.setVisible(busy)

    def _on_started(self, description: str) -> None:
        self.status.setText(description or "Working…")
        self.progress.setRange(0, 0)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)

    def _on_progressed(self, done: int, total: int, message: str) -> None:
        description = self.runner.description
        if self.runner.cancelling:
            return
        if total > 0:
            self.progress.setRange(0, int(total))
            self.progress.setValue(min(int(done), int(total)))
        else:
            self.progress.setRange(0, 0)
        text = f"{description}: {message}" if message else description
        self.status.setText(text)

    def _on_cancel_requested(self) -> None:
        description = self.runner.description
        self.status.setText(f"{description}: cancelling…" if description else "Cancelling…")
        self.cancel_button.setEnabled(False)

    def _on_finished(self, outcome: str, message: str) -> None:
        self.status.setText(message)

"""Score dock widget: score prediction Points layers against ground truth, the SHREC way.

Ground truth comes from a dataset folder (SHREC'20/'21 or napari-shrec; filled in automatically
when a dataset's layers are open) or from two layers (a ground-truth Points layer and an
occupancy Labels layer). Predictions are any Points layers. Positions are compared in napari's
world coordinates (nm), so what lies on a particle on screen is what hits it: a layer's ``scale``
and ``translate`` are applied before scoring.

The computation (:func:`run_scoring`) is a core-style function run by a
:class:`~napari_shrec._workers.TaskRunner`; the widget only gathers inputs and shows results:
the paper's tables, a confusion heatmap and F1 versus molecular weight, per-point features
``hit_particle`` and ``outcome`` on each prediction layer (colour points by them with
"Colour predictions by"), and a hidden "missed particles (…)" Points layer per submission.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .._workers import TaskRunner
from ..core.classes import ClassTable
from ..core.particles import ParticleList
from ..core.progress import CancelToken, ProgressCallback, ProgressReporter
from ..core.score import OUTCOMES, SCORE_MODES, ScoreParams, ScoreResult, score_submissions
from ..layers import class_color_cycle, particles_to_points_layer, points_layer_to_particles
from ._common import report_error, show_layer
from ._task_status import TaskStatusWidget

if TYPE_CHECKING:
    import napari

__all__ = ["ScoreWidget", "GroundTruthSpec", "ScoringOutput", "run_scoring", "OUTCOME_COLORS"]

log = logging.getLogger(__name__)

#: Colours of the per-point ``outcome`` feature (RGBA).
OUTCOME_COLORS: dict[str, tuple[float, float, float, float]] = {
    "TP": (0.20, 0.80, 0.20, 1.0),
    "misclassified": (1.00, 0.60, 0.00, 1.0),
    "duplicate": (0.25, 0.55, 1.00, 1.0),
    "FP": (0.90, 0.10, 0.10, 1.0),
    "ignored": (0.60, 0.60, 0.60, 1.0),
}
MODE_AUTO = "auto"
GT_FROM_DATASET = "Dataset folder"
GT_FROM_LAYERS = "Layers"


@dataclass
class GroundTruthSpec:
    """Where the ground truth comes from (built in the main thread, read in the worker).

    Either ``dataset_folder``, or ``particles`` + ``occupancy_mask`` already in one frame (the
    occupancy layer's data frame) with ``frame_scale_nm``/``frame_translate_nm`` describing that
    frame in world coordinates (z, y, x).
    """

    dataset_folder: Path | None = None
    particles: ParticleList | None = None
    occupancy_mask: np.ndarray | None = None
    frame_scale_nm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frame_translate_nm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    label: str = "ground truth"


@dataclass
class ScoringOutput:
    """What :func:`run_scoring` hands back to the widget."""

    results: list[ScoreResult]
    gt_particles: ParticleList
    class_table: ClassTable | None
    gt_scale_nm: tuple[float, float, float]
    gt_translate_nm: tuple[float, float, float]
    mode: str
    gt_label: str
    warnings: list[str] = field(default_factory=list)


def _world_to_frame(world_zyx_nm: np.ndarray, scale: tuple[float, float, float],
                    translate: tuple[float, float, float]) -> np.ndarray:
    return (np.asarray(world_zyx_nm, dtype=np.float64) - np.asarray(translate)) / np.asarray(scale)


def _in_frame(world_list: ParticleList, scale: tuple[float, float, float],
              translate: tuple[float, float, float]) -> ParticleList:
    """A copy of a list whose x, y, z hold world nm, converted to voxels of a frame."""
    out = world_list.copy()
    zyx = _world_to_frame(world_list.coords_zyx(), scale, translate) if len(out) else np.zeros(
        (0, 3))
    out.table["z"], out.table["y"], out.table["x"] = zyx[:, 0], zyx[:, 1], zyx[:, 2]
    out.voxel_size_nm = float(scale[2])
    return out


def run_scoring(
    gt: GroundTruthSpec,
    submissions: list[tuple[str, ParticleList]],
    mode: str = MODE_AUTO,
    count_unknown_as_misclassified: bool = False,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ScoringOutput:
    """Score submissions whose coordinates are napari world positions (nm, in x/y/z columns).

    With a dataset folder, the reconstruction frame is world / voxel size (its layer sits at
    the world origin); ``auto`` mode follows the dataset's flavour (napari-shrec → native,
    SHREC'20 → shrec2020 with the dataset's grandmodel z offset, SHREC'21 → shrec2021). With
    layers, everything is converted into the occupancy layer's frame and scored in native (or
    shrec2021) mode.
    """
    reporter = ProgressReporter(total=1, progress=progress, cancel=cancel)
    reporter.start("reading ground truth")
    warnings: list[str] = []
    if gt.dataset_folder is not None:
        from ..io.dataset import load_dataset, scoring_ground_truth

        ds = load_dataset(gt.dataset_folder)
        truth = scoring_ground_truth(ds)
        chosen = truth.default_mode if mode == MODE_AUTO else mode
        vs = float(ds.voxel_size_nm)
        frame_scale = (vs, vs, vs)
        offset = truth.z_offset
        # predictions come in the reconstruction frame (its layer sits at the world origin);
        # shrec2020 mode pads the masks by the offset itself, every other mode scores in the
        # masks' (grandmodel) frame
        frame_translate = (0.0, 0.0, 0.0) if chosen == "shrec2020" else (offset * vs, 0.0, 0.0)
        params = ScoreParams(mode=chosen,  # type: ignore[arg-type]
                             count_unknown_as_misclassified=count_unknown_as_misclassified,
                             z_offset=offset)
        occupancy = truth.occupancy_mask
        gt_particles = truth.particles
        gt_translate = (offset * vs, 0.0, 0.0)
        class_table = truth.class_table
        label = truth.description
    else:
        if gt.particles is None or gt.occupancy_mask is None:
            raise ValueError("choose a ground-truth Points layer and an occupancy Labels layer")
        chosen = "native" if mode == MODE_AUTO else mode
        if chosen == "shrec2020":
            raise ValueError("shrec2020 mode needs a SHREC'20 dataset folder (its 200-slice "
                             "masks and z offset); with layers use native mode — layers are "
                             "aligned through their positions in napari")
        params = ScoreParams(mode=chosen,  # type: ignore[arg-type]
                             count_unknown_as_misclassified=count_unknown_as_misclassified)
        occupancy = gt.occupancy_mask
        gt_particles = gt.particles
        frame_scale, frame_translate = gt.frame_scale_nm, gt.frame_translate_nm
        gt_translate = frame_translate
        class_table = None
        label = gt.label
    in_frame = [(name, _in_frame(world, frame_scale, frame_translate))
                for name, world in submissions]
    reporter.advance("ground truth read")
    results = score_submissions(gt_particles, occupancy, in_frame, params,
                                class_table=class_table, progress=progress, cancel=cancel)
    for result in results:
        warnings.extend(f"{result.submission}: {w}" for w in result.warnings)
    return ScoringOutput(results=results, gt_particles=gt_particles, class_table=class_table,
                         gt_scale_nm=frame_scale, gt_translate_nm=gt_translate, mode=chosen,
                         gt_label=label, warnings=warnings)


def _figure_pixmap(fig: Any, width_px: int) -> QPixmap:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    pixmap = QPixmap()
    pixmap.loadFromData(buffer.getvalue(), "PNG")
    if width_px > 0 and pixmap.width() > width_px:
        pixmap = pixmap.scaledToWidth(width_px, Qt.TransformationMode.SmoothTransformation)
    return pixmap


#: ``outcome`` of points added to a prediction layer after it was scored (an extra category of
#: the layer's ``outcome`` feature: napari cannot colour a missing categorical value).
UNSCORED = "unscored"


class ScoreWidget(QWidget):
    """The Score dock widget (see the module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner = TaskRunner()
        self.last_output: ScoringOutput | None = None
        self._auto_dataset: str | None = None
        self._listed: set[str] = set()
        self._scored_layers: dict[str, Any] = {}
        self._scored_data: dict[str, np.ndarray] = {}

        # --- ground truth
        self.gt_source = QComboBox()
        self.gt_source.addItems([GT_FROM_DATASET, GT_FROM_LAYERS])
        self.gt_source.setToolTip("Score against a dataset folder on disk (SHREC'20/'21 model_N "
                                  "or a napari-shrec dataset), or against open layers")
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("dataset folder (model_N, or a simulation)")
        self.dataset_edit.setToolTip("Folder with particle_locations.txt and occupancy_mask.mrc; "
                                     "filled in when a dataset's layers are open")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose a dataset folder")
        self.browse_button.clicked.connect(self._browse_dataset)
        self.gt_points_combo = QComboBox()
        self.gt_points_combo.setToolTip("Points layer with the ground-truth particles; row i is "
                                        "particle id i + 1 in the occupancy mask")
        self.occupancy_combo = QComboBox()
        self.occupancy_combo.setToolTip("Labels layer: voxel → 1-based ground-truth particle id")

        dataset_row = QHBoxLayout()
        dataset_row.addWidget(self.dataset_edit, 1)
        dataset_row.addWidget(self.browse_button)
        gt_form = QFormLayout()
        gt_form.addRow("Source", self.gt_source)
        gt_form.addRow("Dataset", dataset_row)
        gt_form.addRow("GT particles", self.gt_points_combo)
        gt_form.addRow("Occupancy", self.occupancy_combo)
        gt_box = QGroupBox("Ground truth")
        gt_box.setLayout(gt_form)

        # --- predictions and options
        self.predictions_list = QListWidget()
        self.predictions_list.setToolTip("Tick the Points layers to score (one row per "
                                         "submission in the tables)")
        self.predictions_list.setMaximumHeight(110)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([MODE_AUTO, *SCORE_MODES])
        self.mode_combo.setToolTip(
            "auto: from the dataset (SHREC'20 → shrec2020, SHREC'21 → shrec2021, ours → "
            "native). native: one frame, any size. shrec2020: 200-slice masks padded by the "
            "z offset, with the organizers' z-shift heuristic. shrec2021: 4V94 and vesicles "
            "not scored, fiducials scored.")
        self.unknown_check = QCheckBox("Count unknown class labels as misclassified")
        self.unknown_check.setToolTip("Otherwise a label outside the class table stops scoring "
                                      "with a list of the labels")
        self.score_button = QPushButton("Score")
        self.score_button.setToolTip("Score the ticked layers in the background (progress, "
                                     "Cancel); tables, plots and per-point outcomes follow")
        self.score_button.clicked.connect(self.start_scoring)
        self.status = TaskStatusWidget(self.runner)
        self.runner.busy_changed.connect(self._on_busy_changed)

        pred_box = QGroupBox("Predictions")
        pred_layout = QVBoxLayout()
        pred_layout.addWidget(self.predictions_list)
        pred_form = QFormLayout()
        pred_form.addRow("Mode", self.mode_combo)
        pred_layout.addLayout(pred_form)
        pred_layout.addWidget(self.unknown_check)
        pred_box.setLayout(pred_layout)

        # --- results
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.TypeWriter)
        self.report.setFont(mono)
        self.report.setPlaceholderText("Tables of the paper (3, 4 and 6) appear here")
        self.plot_choice = QComboBox()
        self.plot_choice.setToolTip("Submission whose confusion matrix is shown")
        self.plot_choice.currentIndexChanged.connect(self._show_confusion)
        self.confusion_label = QLabel()
        self.confusion_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.f1_label = QLabel()
        self.f1_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.color_by = QComboBox()
        self.color_by.addItems(["class", "outcome"])
        self.color_by.setToolTip("Colour the scored prediction layers by class or by outcome "
                                 "(TP green, misclassified orange, duplicate blue, FP red)")
        self.color_by.currentTextChanged.connect(self._apply_colouring)
        self.save_button = QPushButton("Save JSON…")
        self.save_button.setToolTip("Every number of every submission (docs/scoring.md schema)")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_json)

        self.report.setMinimumHeight(220)
        confusion_page = QWidget()
        confusion_layout = QVBoxLayout()
        plot_row = QHBoxLayout()
        plot_row.addWidget(QLabel("Confusion of"))
        plot_row.addWidget(self.plot_choice, 1)
        confusion_layout.addLayout(plot_row)
        confusion_layout.addWidget(self.confusion_label, 1)
        confusion_page.setLayout(confusion_layout)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.report, "Tables")
        self.tabs.addTab(confusion_page, "Confusion")
        self.tabs.addTab(self.f1_label, "F1 vs weight")

        results_box = QGroupBox("Results")
        results_layout = QVBoxLayout()
        results_layout.addWidget(self.tabs, 1)
        colour_row = QHBoxLayout()
        colour_row.addWidget(QLabel("Colour predictions by"))
        colour_row.addWidget(self.color_by, 1)
        colour_row.addWidget(self.save_button)
        results_layout.addLayout(colour_row)
        results_box.setLayout(results_layout)

        self._input_boxes = (gt_box, pred_box)
        layout = QVBoxLayout()
        layout.addWidget(gt_box)
        layout.addWidget(pred_box)
        layout.addWidget(self.score_button)
        layout.addWidget(self.status)
        layout.addWidget(results_box, 1)
        self.setLayout(layout)

        self.gt_source.currentTextChanged.connect(self._update_gt_rows)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._update_gt_rows()

    # ------------------------------------------------------------------ layer bookkeeping
    def _points_layers(self) -> list[Any]:
        from napari.layers import Points

        return [layer for layer in self.viewer.layers if isinstance(layer, Points)]

    def _labels_layers(self) -> list[Any]:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _refresh_layers(self, *_: Any) -> None:
        points = self._points_layers()
        checked = set(self.checked_prediction_names())
        self.predictions_list.clear()
        listed: set[str] = set()
        for layer in points:
            meta = layer.metadata or {}
            if meta.get("kind") == "missed_particles":
                continue
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            is_truth = meta.get("source") == "ground truth"
            # a layer listed before keeps the user's tick; a new one (e.g. the Detect
            # widget's predictions) is ticked unless it is ground truth
            new = layer.name not in self._listed
            wanted = layer.name in checked or (new and not is_truth)
            item.setCheckState(Qt.CheckState.Checked if wanted else Qt.CheckState.Unchecked)
            self.predictions_list.addItem(item)
            listed.add(layer.name)
        self._listed = listed
        self._fill_combo(self.gt_points_combo, [layer.name for layer in points],
                         prefer=[layer.name for layer in points
                                 if (layer.metadata or {}).get("source") == "ground truth"])
        labels = self._labels_layers()
        self._fill_combo(self.occupancy_combo, [layer.name for layer in labels],
                         prefer=[layer.name for layer in labels
                                 if (layer.metadata or {}).get("kind") == "occupancy_mask"])
        # the dataset of the top-most layer that names one, while the field is empty or still
        # holds what was filled in this way (a folder typed or browsed by the user is kept)
        current = self.dataset_edit.text().strip()
        if not current or current == self._auto_dataset:
            for layer in reversed(list(self.viewer.layers)):
                meta = layer.metadata or {}
                folder = meta.get("dataset")
                if folder and meta.get("kind") != "missed_particles":
                    self._auto_dataset = str(folder)
                    self.dataset_edit.setText(str(folder))
                    break

    @staticmethod
    def _fill_combo(combo: QComboBox, names: list[str], prefer: list[str]) -> None:
        current = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(names)
        if current in names:
            combo.setCurrentText(current)
        elif prefer:
            combo.setCurrentText(prefer[0])
        combo.blockSignals(False)

    def _update_gt_rows(self, *_: Any) -> None:
        from_dataset = self.gt_source.currentText() == GT_FROM_DATASET
        self.dataset_edit.setEnabled(from_dataset)
        self.browse_button.setEnabled(from_dataset)
        self.gt_points_combo.setEnabled(not from_dataset)
        self.occupancy_combo.setEnabled(not from_dataset)

    def checked_prediction_names(self) -> list[str]:
        names = []
        for row in range(self.predictions_list.count()):
            item = self.predictions_list.item(row)
            if item.checkState() == Qt.CheckState.Checked:
                names.append(item.text())
        return names

    def set_predictions(self, names: list[str]) -> None:
        """Tick exactly these prediction layers (by name)."""
        for row in range(self.predictions_list.count()):
            item = self.predictions_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names
                               else Qt.CheckState.Unchecked)

    def _browse_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder",
                                                  self.dataset_edit.text())
        if folder:
            self.dataset_edit.setText(folder)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _world_particles(layer: Any) -> ParticleList:
        """The layer's points as a ParticleList whose x, y, z are world positions in nm."""
        _check_axis_aligned(layer)
        data = np.asarray(layer.data, dtype=np.float64)[:, -3:]
        scale = np.asarray(layer.scale, dtype=np.float64)[-3:]
        translate = np.asarray(layer.translate, dtype=np.float64)[-3:]
        world = data * scale + translate if len(data) else np.zeros((0, 3))
        return points_layer_to_particles(world, layer.features)

    def _ground_truth_spec(self) -> GroundTruthSpec:
        if self.gt_source.currentText() == GT_FROM_DATASET:
            text = self.dataset_edit.text().strip()
            if not text:
                raise ValueError("choose a dataset folder (or switch Source to Layers)")
            folder = Path(text).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"no such dataset folder: {folder}")
            return GroundTruthSpec(dataset_folder=folder, label=str(folder))
        points_name = self.gt_points_combo.currentText()
        occupancy_name = self.occupancy_combo.currentText()
        if not points_name or not occupancy_name:
            raise ValueError("choose a ground-truth Points layer and an occupancy Labels layer")
        occupancy_layer = self.viewer.layers[occupancy_name]
        _check_axis_aligned(occupancy_layer)
        scale = tuple(float(v) for v in occupancy_layer.scale[-3:])
        translate = tuple(float(v) for v in occupancy_layer.translate[-3:])
        gt_world = self._world_particles(self.viewer.layers[points_name])
        return GroundTruthSpec(
            particles=_in_frame(gt_world, scale, translate),  # type: ignore[arg-type]
            # a copy: painting on the layer while a worker thread scores cannot race with it
            occupancy_mask=np.array(occupancy_layer.data, copy=True),
            frame_scale_nm=scale,  # type: ignore[arg-type]
            frame_translate_nm=translate,  # type: ignore[arg-type]
            label=f"layers {points_name!r} + {occupancy_name!r}")

    # ------------------------------------------------------------------ running
    def start_scoring(self) -> None:
        """Gather inputs and score in a worker; errors are shown as napari notifications."""
        try:
            names = self.checked_prediction_names()
            if not names:
                raise ValueError("tick at least one prediction Points layer")
            gt = self._ground_truth_spec()
            submissions = [(name, self._world_particles(self.viewer.layers[name]))
                           for name in names]
        except (ValueError, FileNotFoundError, KeyError) as exc:
            self._show_error(exc)
            return
        self._scored_layers = {name: self.viewer.layers[name] for name in names}
        # what was scored: outcomes are written back only onto layers still holding this data
        self._scored_data = {name: np.array(layer.data, copy=True)
                             for name, layer in self._scored_layers.items()}
        self.runner.start(run_scoring, gt, submissions, self.mode_combo.currentText(),
                          self.unknown_check.isChecked(), on_result=self._on_result,
                          on_error=self._show_error, description="Scoring")

    def _on_busy_changed(self, busy: bool) -> None:
        self.score_button.setEnabled(not busy)
        for box in self._input_boxes:
            box.setEnabled(not busy)
        if not busy:
            self._update_gt_rows()

    def _show_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Score", exc)

    # ------------------------------------------------------------------ results
    def _on_result(self, output: ScoringOutput) -> None:
        from ..core.score_report import format_report

        self.last_output = output
        header = (f"ground truth: {output.gt_label}; mode {output.mode}; "
                  f"{len(output.gt_particles)} particles\n\n")
        text = header + format_report(output.results)
        if output.warnings:
            text += "\nwarnings:\n" + "\n".join(f"  {w}" for w in output.warnings)
        self.report.setPlainText(text)
        self.plot_choice.blockSignals(True)
        self.plot_choice.clear()
        self.plot_choice.addItems([r.submission for r in output.results])
        self.plot_choice.blockSignals(False)
        self._show_confusion()
        self._show_f1_plot()
        stale: list[str] = []
        for result in output.results:
            layer = self._scored_layers.get(result.submission)
            if layer is not None and layer in self.viewer.layers:
                scored = self._scored_data.get(result.submission)
                if scored is not None and np.array_equal(np.asarray(layer.data), scored):
                    self._annotate_layer(layer, result)
                else:
                    log.warning("%s changed while it was scored; outcomes not written",
                                layer.name)
                    stale.append(layer.name)
            self._update_missed_layer(output, result)
        self._apply_colouring(self.color_by.currentText())
        self.save_button.setEnabled(True)
        if stale:
            self.status.status.setText(
                f"Done; {', '.join(stale)} changed while being scored: outcomes not written "
                "(score again)")

    def _plot_width(self) -> int:
        return max(self.tabs.width() - 24, 320)

    def _show_confusion(self, *_: Any) -> None:
        from ..core.score_report import confusion_figure

        if self.last_output is None or not self.last_output.results:
            return
        index = max(self.plot_choice.currentIndex(), 0)
        fig = confusion_figure(self.last_output.results[index])
        self.confusion_label.setPixmap(_figure_pixmap(fig, self._plot_width()))

    def _show_f1_plot(self) -> None:
        from ..core.score_report import f1_vs_weight_figure

        if self.last_output is None:
            return
        fig = f1_vs_weight_figure(self.last_output.results)
        self.f1_label.setPixmap(_figure_pixmap(fig, self._plot_width()))

    @staticmethod
    def _annotate_layer(layer: Any, result: ScoreResult) -> None:
        """Write ``hit_particle`` and ``outcome`` features onto a prediction layer.

        The layer's ``feature_defaults`` (class, source, … of points added later) are kept:
        assigning ``features`` makes napari take them from the last row, so they are saved
        first and assigned back. New points get ``hit_particle`` 0 and ``outcome``
        :data:`UNSCORED` (grey when coloured by outcome)."""
        if len(layer.data) != len(result.outcome):
            log.warning("%s changed while it was scored; outcomes not written", layer.name)
            return
        defaults = layer.feature_defaults
        saved = defaults.iloc[0].to_dict() if len(defaults) else {}
        features = layer.features.copy() if len(layer.features.columns) else pd.DataFrame(
            index=pd.RangeIndex(len(layer.data)))
        features["hit_particle"] = result.hit_particle.astype(np.int64)
        features["outcome"] = pd.Categorical(result.outcome.astype(str),
                                             categories=[*OUTCOMES, UNSCORED])
        layer.features = features
        # reassign the whole row: napari ignores edits made in place on feature_defaults
        layer.feature_defaults = {**saved, "hit_particle": 0, "outcome": UNSCORED}
        summary = {key: getattr(result, key) for key in ("RR", "TP", "FP", "FN", "MH", "RO",
                                                          "F1", "mean_class_F1")}
        layer.metadata = {**(layer.metadata or {}), "score": summary}

    def _update_missed_layer(self, output: ScoringOutput, result: ScoreResult) -> None:
        name = f"missed particles ({result.submission})"
        missed = output.gt_particles.subset(result.missed_indices)
        vs = output.gt_scale_nm
        translate_vox = tuple(t / s for t, s in zip(output.gt_translate_nm, vs))
        layer_data = particles_to_points_layer(
            missed, name, class_table=output.class_table, source="ground truth",
            voxel_size_nm=vs, translate_zyx_vox=translate_vox, visible=False,
            metadata={"kind": "missed_particles", "submission": result.submission,
                      "napari_shrec": {"ground_truth": output.gt_label, "mode": output.mode,
                                       "n_missed": int(len(missed))}})
        # replaced in place by name (keeping its position and the visibility the user chose)
        show_layer(self.viewer, layer_data)

    def _apply_colouring(self, mode: str) -> None:
        """Colour the scored layers by ``outcome`` or back by ``class``."""
        grey = [(0.6, 0.6, 0.6, 1.0)]
        for layer in self._scored_layers.values():
            if layer not in self.viewer.layers:
                continue
            if mode == "outcome" and "outcome" in layer.features:
                layer.face_color_cycle = {"colormap": dict(OUTCOME_COLORS), "fallback_color": grey}
                layer.face_color = "outcome"
            elif mode == "class" and "class" in layer.features:
                names = [str(c) for c in pd.Categorical(layer.features["class"]).categories]
                table = self.last_output.class_table if self.last_output is not None else None
                layer.face_color_cycle = class_color_cycle(names, table)
                layer.face_color = "class"

    def _save_json(self) -> None:
        from ..core.score_report import write_json

        if self.last_output is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save scores as JSON", "scores.json",
                                              "JSON (*.json)")
        if path:
            # the dialog already asked before replacing an existing file
            write_json(path, self.last_output.results, overwrite=True)


def _check_axis_aligned(layer: Any) -> None:
    """Refuse layers rotated or sheared in napari (their voxels are not on the world axes)."""
    affine = np.asarray(layer.affine.affine_matrix, dtype=np.float64)
    rotate = np.asarray(layer.rotate, dtype=np.float64)
    shear = np.asarray(layer.shear, dtype=np.float64)
    if not (np.allclose(affine, np.eye(affine.shape[0])) and np.allclose(rotate,
            np.eye(rotate.shape[0])) and np.allclose(shear, 0)):
        raise ValueError(f"layer {layer.name!r} is rotated, sheared or has an affine transform; "
                         "the scorer needs axis-aligned layers")



"""Annotate dock widget: point-and-click particle annotation on a tomogram, and curation of picks.

One **annotation layer** is a napari Points layer on a tomogram (Image layer): ``data`` holds
positions in voxels (z, y, x) of that tomogram (the layer takes the tomogram's ``scale``, nm,
and ``translate``), and ``features`` hold ``class`` (categorical over the class table),
``score`` (NaN for manual points) and ``source`` (``manual`` / ``predicted`` /
``ground truth``), plus ``phi theta psi``. Points are coloured by class with the class-mask
colours and sized by the class's equivalent-sphere diameter, exactly as the reader's particle
layers (:func:`napari_shrec.layers.particles_to_points_layer`).

Adding points. Select the annotation layer, switch it to add mode (P, or "Add points") and
click on the tomogram in 2D: the point lands on the displayed slice (its slicing coordinate is
the tomogram's slice index, not a fraction of it) with the widget's current class. With *Snap*,
the click moves to the local density centre within the class radius
(:func:`napari_shrec.core.snap.snap_point`, on a low-passed window read around the click: the
tomogram is never read whole). In 3D view, adding is off: a click there has no depth, so the
layer leaves add mode with a message (and a point added in 3D add mode is taken back).

Keys (on an annotation layer, i.e. while it is the selected layer; they replace napari's Points
keys 1–5 = delete/add/select/pan/transform, which stay available as Delete, P, S, Z):

======================  ==================================================================
1 … 9, 0                class of the next point: the first ten classes of the list
] or .  /  [ or ,       next / previous class (all classes)
C                       give the selected points the current class
Ctrl+Z / Ctrl+Shift+Z   undo / redo (adds, deletes, moves, pastes, class changes, accept/reject)
Delete, Backspace       delete the selected points (napari's own; undoable)
Y / N (predictions)     accept / reject the selected predicted points
======================  ==================================================================

Curation. A predictions layer (any Points layer, e.g. a detector's picks opened with the
reader or *Load predictions…*) gets a score threshold: predicted points below it are hidden
(``shown``). *Accept* moves the selected, shown predictions into the annotation layer (class,
score kept, ``source`` "predicted"); *Reject* removes them from the predictions layer. Both are
undoable.

Files. *Save…* writes the annotation layer as SHREC txt, RELION STAR (3/4: voxel coordinates;
5: centred Å, using the tomogram's shape and voxel size) or CSV (every feature); *Load…* adds a
particle file's points to it (RELION 5 files are converted with the tomogram's shape and voxel
size; RELION 3/4 files picked at another pixel size are rescaled). Every annotation layer is
**autosaved** a second after each change to a sidecar in the user cache
(:mod:`napari_shrec.io.annotations`), and restored when the same tomogram is chosen again
(once per tomogram and widget), or with *Restore autosave*.

Dataset overlays. For a tomogram that belongs to a dataset folder (reader, Simulate and
Reconstruct layers say which; or browse to one), the grandmodel, class mask (Labels, class
colours) and ground-truth particles can be toggled; they are added just above the tomogram,
aligned with it (grandmodel z offset), named as the dataset reader names them.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.classes import SHREC21_TABLE, ClassTable
from ..core.particles import ParticleList
from ..layers import (
    PARTICLE_SOURCES,
    class_color,
    class_color_cycle,
    class_diameter_vox,
    particles_to_features,
    particles_to_points_layer,
    points_layer_to_particles,
)
from ._common import confirm_replace, float_spin, report_error, show_layer

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Points

    from ..layers import LayerDataTuple

__all__ = [
    "AnnotateWidget",
    "annotation_layer_data",
    "CLASS_KEYS",
    "NEXT_CLASS_KEYS",
    "PREVIOUS_CLASS_KEYS",
    "OVERLAYS",
    "POLARITY_CHOICES",
    "ANNOTATION_METADATA_KEY",
]

log = logging.getLogger(__name__)

#: Keys giving the first ten classes of the list (1 = first … 0 = tenth).
CLASS_KEYS: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
NEXT_CLASS_KEYS: tuple[str, ...] = ("]", ".")
PREVIOUS_CLASS_KEYS: tuple[str, ...] = ("[", ",")
#: Dataset overlays: key → title (as the dataset reader names its layers: "<folder> <title>").
OVERLAYS: dict[str, str] = {"grandmodel": "grandmodel", "class_mask": "class mask",
                            "ground_truth": "ground truth"}
POLARITY_CHOICES: tuple[str, ...] = ("auto", "bright", "dark")
#: Key of the annotation provenance in a layer's metadata.
ANNOTATION_METADATA_KEY = "napari_shrec_annotation"
_UNDO_LIMIT = 100
_AUTOSAVE_MAX_WAIT_S = 10.0
_THRESHOLD_STEPS = 1000
_SOURCE_MANUAL = "manual"
_SOURCE_PREDICTED = "predicted"

_KEY_NAMES: dict[str, str] = {"]": "BracketRight", "[": "BracketLeft", ".": "Period",
                              ",": "Comma"}


def _keybinding(text: str) -> int:
    """An app-model key code for a key given as text ("1", "]", "Ctrl+Z", "Ctrl+Shift+Z")."""
    from app_model.types import KeyCode, KeyMod

    parts = text.split("+")
    key = parts[-1]
    mods = 0
    for mod in parts[:-1]:
        mods |= {"Ctrl": KeyMod.CtrlCmd, "Shift": KeyMod.Shift, "Alt": KeyMod.Alt}[mod]
    if key.isdigit():
        code = getattr(KeyCode, f"Digit{key}")
    elif key in _KEY_NAMES:
        code = getattr(KeyCode, _KEY_NAMES[key])
    else:
        code = getattr(KeyCode, f"Key{key.upper()}")
    return int(mods | code)


# ---------------------------------------------------------------------------------------------
# pure helpers (no Qt)
# ---------------------------------------------------------------------------------------------
def annotation_layer_data(
    particles: ParticleList,
    name: str,
    *,
    scale: Sequence[float],
    translate: Sequence[float] = (0.0, 0.0, 0.0),
    class_table: ClassTable | None = None,
    default_class: str | None = None,
    source: str = _SOURCE_MANUAL,
    metadata: dict[str, Any] | None = None,
) -> LayerDataTuple:
    """The Points layer-data tuple of an annotation layer on a tomogram.

    Built by :func:`napari_shrec.layers.particles_to_points_layer` (same features, colours
    and sizes as the reader's particle layers), with the tomogram's own ``scale`` (nm per voxel,
    z y x) and ``translate`` (nm) so that ``data`` are voxels (z, y, x) of the tomogram.

    Args:
        particles: the points (voxels x, y, z of the tomogram); may be empty.
        name: layer name.
        scale, translate: the tomogram layer's (last three axes).
        class_table: classes and colours (default ``SHREC21_TABLE``).
        default_class: class of the next point (default: the table's first class).
        source: ``source`` of the given points that have none ("manual", "predicted",
            "ground truth").
        metadata: merged into the layer metadata.
    """
    table = SHREC21_TABLE if class_table is None else class_table
    scale3 = tuple(float(s) for s in list(scale)[-3:])
    translate3 = tuple(float(t) for t in list(translate)[-3:])
    if default_class is None:
        default_class = table.names[0] if len(table.names) else "unknown"
    data, kwargs, kind = particles_to_points_layer(
        particles, name, class_table=table, source=source, voxel_size_nm=scale3,
        default_class=default_class, metadata=metadata, opacity=0.7)
    kwargs["scale"] = scale3
    kwargs["translate"] = translate3
    defaults = dict(kwargs["feature_defaults"])
    defaults.update({"class": default_class, "source": _SOURCE_MANUAL, "score": np.nan})
    kwargs["feature_defaults"] = defaults
    kwargs["border_width"] = 0.08
    return (data, kwargs, kind)


@dataclass
class _Snapshot:
    """The state of a Points layer an undo step restores."""

    data: np.ndarray
    features: pd.DataFrame
    size: np.ndarray

    @classmethod
    def of(cls, layer: Points) -> _Snapshot:
        return cls(np.array(layer.data, dtype=np.float64, copy=True), layer.features.copy(),
                   np.array(layer.size, dtype=np.float64, copy=True))


def _swatch(rgba: Sequence[float], size: int = 12) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor.fromRgbF(*[float(c) for c in rgba[:3]], 1.0))
    return QIcon(pixmap)


def _dataset_folder_of(metadata: dict[str, Any] | None) -> str | None:
    meta = metadata or {}
    folder = meta.get("dataset")
    if not folder and isinstance(meta.get("napari_shrec"), dict):
        folder = meta["napari_shrec"].get("simulation_folder")
    return str(folder) if folder else None


def _layer_file(layer: Any) -> str | None:
    """The file a layer's data came from: ``metadata["source"]`` (napari-shrec readers and
    widgets put the file there), else napari's ``source.path`` when it is a file (for a dataset
    folder it is the folder, shared by all its layers)."""
    meta = layer.metadata or {}
    src = meta.get("source")
    if isinstance(src, str) and src and Path(src).suffix and not Path(src).is_dir():
        return src
    path = getattr(getattr(layer, "source", None), "path", None)
    if path and Path(path).is_file():
        return str(path)
    return None


# ---------------------------------------------------------------------------------------------
# the widget
# ---------------------------------------------------------------------------------------------
class AnnotateWidget(QWidget):
    """The Annotate dock widget (see the module docstring).

    Args:
        napari_viewer: the viewer.
        autosave_directory: root folder of the autosave sidecars (default:
            :func:`napari_shrec.io.annotations.autosave_dir`).

    Attributes:
        class_table: the class table (SHREC'20 + SHREC'21 classes).
        autosave_delay_ms: quiet time after a change before the autosave is written.
        last_autosave: the :class:`~napari_shrec.io.annotations.AutosaveRecord` written last.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, *,
                 autosave_directory: str | os.PathLike | None = None) -> None:
        super().__init__()
        # napari hands plugin widgets a PublicOnlyProxy of the viewer, whose every attribute
        # access returns a new proxy: layers would never be identical to those in events
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.class_table: ClassTable = SHREC21_TABLE
        self.autosave_directory = autosave_directory
        self.autosave_delay_ms = 1000
        self.last_autosave: Any = None
        self._class_names: list[str] = list(self.class_table.names)
        self._current_class: str = self._class_names[0]
        self._bound: dict[int, Points] = {}        # annotation layers hooked up
        self._tracked: dict[int, Points] = {}      # layers whose edits are undoable
        self._pending: dict[int, _Snapshot] = {}   # state before a napari edit in progress
        self._undo: list[list[tuple[Points, _Snapshot]]] = []
        self._redo: list[list[tuple[Points, _Snapshot]]] = []
        self._quiet = 0
        self._dirty: dict[int, Points] = {}
        self._dirty_since: float | None = None
        self._autosave_names: dict[int, tuple[str, str]] = {}
        self._restored: set[str] = set()
        self._polarity: dict[int, str] = {}
        self._dataset_cache: tuple[str, Any] | None = None
        self._auto_dataset: str | None = None
        self._refreshing = False
        self._last_click: tuple[int, np.ndarray] | None = None
        self._setting_defaults = False
        self._score_range: tuple[float, float] = (0.0, 1.0)

        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.timeout.connect(self.flush_autosave)

        self._build_ui()
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._on_layers_changed)
        events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._on_layers_changed)
        self._on_layers_changed()

    # ================================================================== UI
    def _build_ui(self) -> None:
        # --- tomogram & layer
        self.tomogram_combo = QComboBox()
        self.tomogram_combo.setToolTip("The tomogram (Image layer) to annotate: new annotation "
                                       "layers take its scale (nm) and position; snapping reads "
                                       "its voxels")
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The annotation Points layer: features class, score, "
                                    "source; points coloured by class")
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Create an empty annotation layer on the tomogram and switch "
                                   "it to add mode")
        self.new_button.clicked.connect(lambda: self.new_annotation_layer())
        self.add_mode_button = QPushButton("Add points (P)")
        self.add_mode_button.setCheckable(True)
        self.add_mode_button.setToolTip("Click on the tomogram to add points of the current "
                                        "class (2D view only). Same as selecting the layer and "
                                        "pressing P")
        self.add_mode_button.toggled.connect(self._on_add_mode_button)
        self.tomogram_info = QLabel("No tomogram")
        self.tomogram_info.setWordWrap(True)
        layer_row = QHBoxLayout()
        layer_row.addWidget(self.layer_combo, 1)
        layer_row.addWidget(self.new_button)
        form = QFormLayout()
        form.addRow("Tomogram", self.tomogram_combo)
        form.addRow("Annotations", layer_row)
        form.addRow(self.tomogram_info)
        form.addRow(self.add_mode_button)
        box_layer = QGroupBox("Tomogram && layer")
        box_layer.setLayout(form)

        # --- class
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("Class of the next point. Keys on the annotation layer: "
                                    "1…9, 0 = first ten classes; ] or . next, [ or , previous")
        self.prev_class_button = QToolButton()
        self.prev_class_button.setText("◀")
        self.prev_class_button.setToolTip("Previous class ([ or ,)")
        self.prev_class_button.clicked.connect(lambda: self.step_class(-1))
        self.next_class_button = QToolButton()
        self.next_class_button.setText("▶")
        self.next_class_button.setToolTip("Next class (] or .)")
        self.next_class_button.clicked.connect(lambda: self.step_class(1))
        self.apply_class_button = QPushButton("Set selected (C)")
        self.apply_class_button.setToolTip("Give the selected points of the annotation layer the "
                                           "current class (key C)")
        self.apply_class_button.clicked.connect(lambda: self.set_selected_class())
        class_row = QHBoxLayout()
        class_row.addWidget(self.prev_class_button)
        class_row.addWidget(self.class_combo, 1)
        class_row.addWidget(self.next_class_button)
        self.class_grid = QGridLayout()
        self.class_grid.setHorizontalSpacing(2)
        self.class_grid.setVerticalSpacing(0)
        self.class_buttons: dict[str, QToolButton] = {}
        self.counts_label = QLabel("0 points")
        self.counts_label.setToolTip("Points of the annotation layer by source")
        counts_row = QHBoxLayout()
        counts_row.addWidget(self.counts_label, 1)
        counts_row.addWidget(self.apply_class_button)
        class_layout = QVBoxLayout()
        class_layout.addLayout(class_row)
        class_layout.addLayout(self.class_grid)
        class_layout.addLayout(counts_row)
        box_class = QGroupBox("Class of the next point (key · class · count)")
        box_class.setLayout(class_layout)
        self.class_box = box_class
        self.class_combo.currentIndexChanged.connect(self._on_class_combo)

        # --- snap
        self.snap_check = QCheckBox("Snap clicks to the density centre")
        self.snap_check.setToolTip("Move each clicked point to the centre of the density blob "
                                   "within the class radius (low-passed tomogram, read around "
                                   "the click only)")
        self.snap_z_check = QCheckBox("Snap across slices too (3D)")
        self.snap_z_check.setToolTip("Let the snap move the point off the displayed slice too "
                                     "(along z in the usual view). Off: it stays on the slice "
                                     "you clicked")
        self.sigma_spin = float_spin(0.0, 50.0, 0.0, 1, 0.5,
                                     "Gaussian low-pass sigma (nm) before snapping; 0 = auto "
                                     "(half the class radius)", " nm")
        self.sigma_spin.setSpecialValueText("auto")
        self.polarity_combo = QComboBox()
        self.polarity_combo.addItems(list(POLARITY_CHOICES))
        self.polarity_combo.setToolTip("bright: particles brighter than the background "
                                       "(simulations, napari-shrec reconstructions); dark: the "
                                       "usual cryo-ET contrast; auto: from the tomogram's "
                                       "histogram")
        snap_params = QHBoxLayout()
        snap_params.addWidget(QLabel("Low-pass"))
        snap_params.addWidget(self.sigma_spin)
        snap_params.addWidget(QLabel("Particles"))
        snap_params.addWidget(self.polarity_combo)
        snap_params.addStretch(1)
        snap_layout = QVBoxLayout()
        snap_layout.addWidget(self.snap_check)
        snap_layout.addWidget(self.snap_z_check)
        snap_layout.addLayout(snap_params)
        box_snap = QGroupBox("Snap")
        box_snap.setLayout(snap_layout)

        # --- curation
        self.predictions_combo = QComboBox()
        self.predictions_combo.setToolTip("Points layer of predictions to curate (e.g. a "
                                          "detector's picks)")
        self.load_predictions_button = QPushButton("Load…")
        self.load_predictions_button.setToolTip("Open a particle file (SHREC txt, STAR, CSV) as "
                                                "a predictions layer on the tomogram")
        self.load_predictions_button.clicked.connect(self._load_predictions_dialog)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, _THRESHOLD_STEPS)
        self.threshold_slider.setToolTip("Hide predicted points scoring below the threshold")
        self.threshold_spin = float_spin(0.0, 1.0, 0.0, 3, 0.01,
                                         "Score threshold: predicted points below it are "
                                         "hidden")
        self.threshold_info = QLabel("")
        self.accept_button = QPushButton("Accept selected (Y)")
        self.accept_button.setToolTip("Move the selected, shown predicted points into the "
                                      "annotation layer (class and score kept, source "
                                      "'predicted'); key Y on the predictions layer")
        self.accept_button.clicked.connect(lambda: self.accept_selected())
        self.reject_button = QPushButton("Reject selected (N)")
        self.reject_button.setToolTip("Remove the selected predicted points from the predictions "
                                      "layer; key N on the predictions layer")
        self.reject_button.clicked.connect(lambda: self.reject_selected())
        pred_row = QHBoxLayout()
        pred_row.addWidget(self.predictions_combo, 1)
        pred_row.addWidget(self.load_predictions_button)
        thr_row = QHBoxLayout()
        thr_row.addWidget(self.threshold_slider, 1)
        thr_row.addWidget(self.threshold_spin)
        acc_row = QHBoxLayout()
        acc_row.addWidget(self.accept_button)
        acc_row.addWidget(self.reject_button)
        cur_form = QFormLayout()
        cur_form.addRow("Predictions", pred_row)
        cur_form.addRow("Min score", thr_row)
        cur_form.addRow(self.threshold_info)
        cur_form.addRow(acc_row)
        box_cur = QGroupBox("Curation")
        box_cur.setLayout(cur_form)
        self.predictions_combo.currentIndexChanged.connect(self._on_predictions_combo)
        self.threshold_slider.valueChanged.connect(self._on_threshold_slider)
        self.threshold_spin.valueChanged.connect(self._on_threshold_spin)

        # --- files
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write the annotation layer: .txt SHREC (x y z voxels), "
                                    ".star RELION, .csv (every feature); asks before replacing")
        self.save_button.clicked.connect(self._save_dialog)
        self.relion_combo = QComboBox()
        self.relion_combo.addItems(["RELION 4", "RELION 5"])
        self.relion_combo.setToolTip("STAR flavour: RELION 3/4 voxel coordinates, or RELION 5 "
                                     "centred coordinates in Å (uses the tomogram's shape and "
                                     "voxel size)")
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Add the points of a particle file (SHREC txt, STAR, CSV) "
                                    "to the annotation layer (undoable)")
        self.load_button.clicked.connect(self._load_dialog)
        self.autosave_check = QCheckBox("Autosave")
        self.autosave_check.setChecked(True)
        self.autosave_check.setToolTip("Write every annotation layer to a sidecar file in the "
                                       "user cache a second after each change")
        self.autosave_check.toggled.connect(self._on_autosave_toggled)
        self.restore_button = QPushButton("Restore autosave")
        self.restore_button.setToolTip("Re-create the autosaved annotation layers of this "
                                       "tomogram that are not open")
        self.restore_button.clicked.connect(lambda: self.restore_autosaves(force=True))
        self.autosave_info = QLabel("")
        self.autosave_info.setWordWrap(True)
        files_row = QHBoxLayout()
        files_row.addWidget(self.save_button)
        files_row.addWidget(self.relion_combo)
        files_row.addWidget(self.load_button)
        auto_row = QHBoxLayout()
        auto_row.addWidget(self.autosave_check)
        auto_row.addWidget(self.restore_button)
        auto_row.addStretch(1)
        files_layout = QVBoxLayout()
        files_layout.addLayout(files_row)
        files_layout.addLayout(auto_row)
        files_layout.addWidget(self.autosave_info)
        box_files = QGroupBox("Files")
        box_files.setLayout(files_layout)

        # --- dataset overlays
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("dataset folder (filled in from the tomogram)")
        self.dataset_edit.setToolTip("A SHREC or napari-shrec dataset folder the tomogram "
                                     "belongs to")
        self.dataset_edit.editingFinished.connect(self._on_dataset_edited)
        self.dataset_browse = QPushButton("Browse…")
        self.dataset_browse.setToolTip("Choose the dataset folder (its grandmodel, class mask "
                                       "and ground truth become overlays)")
        self.dataset_browse.clicked.connect(self._browse_dataset)
        self.overlay_checks: dict[str, QCheckBox] = {}
        overlay_row = QHBoxLayout()
        for key, title in OVERLAYS.items():
            check = QCheckBox(title.capitalize())
            check.setToolTip(f"Show the dataset's {title}, aligned with the tomogram")
            check.toggled.connect(lambda on, k=key: self.show_overlay(k, on))
            self.overlay_checks[key] = check
            overlay_row.addWidget(check)
        ds_row = QHBoxLayout()
        ds_row.addWidget(self.dataset_edit, 1)
        ds_row.addWidget(self.dataset_browse)
        ds_layout = QVBoxLayout()
        ds_layout.addLayout(ds_row)
        ds_layout.addLayout(overlay_row)
        box_ds = QGroupBox("Dataset overlays")
        box_ds.setLayout(ds_layout)

        # --- edit row, status
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last edit (Ctrl+Z on the annotation layer)")
        self.undo_button.clicked.connect(lambda: self.undo())
        self.redo_button = QPushButton("Redo")
        self.redo_button.setToolTip("Redo (Ctrl+Shift+Z on the annotation layer)")
        self.redo_button.clicked.connect(lambda: self.redo())
        self.delete_button = QPushButton("Delete selected")
        self.delete_button.setToolTip("Delete the selected points of the annotation layer "
                                      "(Delete / Backspace)")
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        edit_row = QHBoxLayout()
        edit_row.addWidget(self.undo_button)
        edit_row.addWidget(self.redo_button)
        edit_row.addWidget(self.delete_button)
        self.status = QLabel("Choose a tomogram, then New")
        self.status.setWordWrap(True)

        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (box_layer, box_class, box_snap, box_cur, box_files, box_ds):
            layout.addWidget(box)
        layout.addLayout(edit_row)
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(inner)
        self._scroll, self._inner = scroll, inner
        self._fit_width()
        outer = QVBoxLayout()
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setLayout(outer)

        for combo in (self.tomogram_combo, self.layer_combo, self.class_combo,
                      self.predictions_combo):
            # long layer names and class descriptions must not widen the dock
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
        self.tomogram_combo.currentIndexChanged.connect(self._on_tomogram_combo)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_combo)
        self._rebuild_classes()
        self._update_buttons()

    # ================================================================== layers and combos
    def _image_layers(self) -> list[Image]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim >= 3 and not layer.rgb]

    def _points_layers(self) -> list[Points]:
        from napari.layers import Points

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Points) and layer.ndim >= 3]

    @staticmethod
    def _fill_combo(combo: QComboBox, names: list[str], keep: str | None,
                    empty: str | None = None) -> None:
        combo.blockSignals(True)
        combo.clear()
        if empty is not None:
            combo.addItem(empty)
        combo.addItems(names)
        if keep is not None and keep in names:
            combo.setCurrentText(keep)
        combo.blockSignals(False)

    def _layer_by_name(self, name: str | None) -> Any:
        if not name or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _on_layers_changed(self, event: Any = None) -> None:
        """Refill the combos (keeping the choices) when layers come, go or are renamed."""
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
        if self._refreshing:
            return
        old_tomo = self.tomogram_combo.currentText()
        old_layer = self.layer_combo.currentText()
        self._refreshing = True
        try:
            images = [layer.name for layer in reversed(self._image_layers())]
            self._fill_combo(self.tomogram_combo, images, old_tomo)
            points = [layer.name for layer in reversed(self._points_layers())]
            self._fill_combo(self.layer_combo, points, old_layer, empty="(none)")
            if not old_layer or old_layer not in points:
                self.layer_combo.setCurrentIndex(0)
        finally:
            self._refreshing = False
        if self.tomogram_combo.currentText() != old_tomo or event is None:
            self._on_tomogram_combo()
        if self.layer_combo.currentText() != old_layer:
            self._on_layer_combo()
        self._fill_predictions()
        self._update_buttons()

    def _fill_predictions(self) -> None:
        """Refill the predictions combo: every 3D Points layer but the annotation layer; a
        vanished choice falls back to the top-most layer holding predicted points."""
        old = self.predictions_combo.currentText()
        ann = self.layer_combo.currentText()
        others = [layer.name for layer in reversed(self._points_layers()) if layer.name != ann]
        self._refreshing = True
        try:
            self._fill_combo(self.predictions_combo, others, old, empty="(none)")
            if not old or old not in others:
                self.predictions_combo.setCurrentText(self._guess_predictions(others)
                                                      or "(none)")
        finally:
            self._refreshing = False
        if self.predictions_combo.currentText() != old:
            self._on_predictions_combo()

    def _guess_predictions(self, names: list[str]) -> str | None:
        for name in names:
            layer = self._layer_by_name(name)
            feats = layer.features if layer is not None else None
            if feats is None or not len(feats) or id(layer) in self._bound:
                continue
            if "source" in feats.columns and (feats["source"].astype(str)
                                              == _SOURCE_PREDICTED).any():
                return name
        return None

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        key = id(layer)
        if key in self._dirty:
            self._write_autosave(layer)
            self._dirty.pop(key, None)
        self._bound.pop(key, None)
        self._tracked.pop(key, None)
        self._pending.pop(key, None)

    # ------------------------------------------------------------------ tomogram
    def tomogram_layer(self) -> Image | None:
        """The chosen tomogram (Image layer), or None."""
        return self._layer_by_name(self.tomogram_combo.currentText())

    def set_tomogram(self, layer: Any) -> None:
        """Choose the tomogram (an Image layer or its name)."""
        name = layer if isinstance(layer, str) else layer.name
        self.tomogram_combo.setCurrentText(name)
        self._on_tomogram_combo()

    def _on_tomogram_combo(self, *_: Any) -> None:
        if self._refreshing:
            return
        tomo = self.tomogram_layer()
        if tomo is None:
            self.tomogram_info.setText("No tomogram: open one (File ▸ Open) or simulate one")
            self._update_buttons()
            return
        shape = tuple(int(s) for s in tomo.data.shape[-3:]) if not tomo.multiscale else \
            tuple(int(s) for s in tomo.data[0].shape[-3:])
        vs = self._voxel_size(tomo)
        self.tomogram_info.setText(
            f"{shape[2]} × {shape[1]} × {shape[0]} voxels (x, y, z) of "
            f"{vs[2]:g} nm")
        self._refresh_dataset_from(tomo)
        # the annotation layer of this tomogram, when one is bound to it
        ident = self._tomogram_identity(tomo)
        current = self.annotation_layer()
        if current is None or self._layer_tomogram(current) != ident:
            for layer in reversed(self._points_layers()):
                if self._layer_tomogram(layer) == ident:
                    self.set_annotation_layer(layer)
                    break
        if ident not in self._restored and not ident.startswith("layer:"):
            self._restored.add(ident)  # automatically once; a volume without a file: button
            self.restore_autosaves()
        self._update_buttons()

    @staticmethod
    def _voxel_size(layer: Any) -> tuple[float, float, float]:
        """(z, y, x) voxel size (nm) of a layer: its scale (napari-shrec layers are in nm)."""
        z, y, x = (float(s) for s in np.asarray(layer.scale, dtype=float)[-3:])
        return (z, y, x)

    def _tomogram_identity(self, tomo: Any) -> str:
        from ..io.annotations import tomogram_identity

        return tomogram_identity(_layer_file(tomo), tomo.name)

    @staticmethod
    def _layer_tomogram(layer: Any) -> str | None:
        meta = (layer.metadata or {}).get(ANNOTATION_METADATA_KEY)
        return meta.get("tomogram") if isinstance(meta, dict) else None

    @staticmethod
    def _tomogram_volume(tomo: Any) -> Any:
        return tomo.data[0] if tomo.multiscale else tomo.data

    # ------------------------------------------------------------------ annotation layer
    def annotation_layer(self) -> Points | None:
        """The chosen annotation layer, or None."""
        layer = self._layer_by_name(self.layer_combo.currentText())
        return layer if layer is not None and id(layer) in self._bound else None

    def set_annotation_layer(self, layer: Any) -> Points:
        """Make a Points layer (or its name) the annotation layer: it gets the class, score and
        source features when it lacks them, the class key bindings, undo and autosave."""
        from napari.layers import Points

        if isinstance(layer, str):
            layer = self.viewer.layers[layer]
        if not isinstance(layer, Points):
            raise TypeError(f"{getattr(layer, 'name', layer)!r} is not a Points layer")
        self._bind(layer)
        self.layer_combo.blockSignals(True)
        self.layer_combo.setCurrentText(layer.name)
        self.layer_combo.blockSignals(False)
        self._fill_predictions()
        self._rebuild_classes()
        self._apply_defaults(layer)
        self._refresh_counts()
        self._update_buttons()
        return layer

    def _on_layer_combo(self, *_: Any) -> None:
        if self._refreshing:
            return
        layer = self._layer_by_name(self.layer_combo.currentText())
        if layer is not None:
            self.set_annotation_layer(layer)
        else:
            self._fill_predictions()
            self._rebuild_classes()
            self._refresh_counts()
            self._update_buttons()

    def _unique_name(self, base: str) -> str:
        name, n = base, 2
        while name in self.viewer.layers:
            name = f"{base} {n}"
            n += 1
        return name

    def new_annotation_layer(self, name: str | None = None, *,
                             particles: ParticleList | None = None,
                             activate: bool = True) -> Points:
        """Create an annotation layer on the tomogram (empty, or holding ``particles``: voxels
        of the tomogram) and make it the annotation layer. Without a tomogram the layer gets
        1 nm voxels at the origin. ``activate``: select it and switch it to add mode (2D)."""
        from napari.layers import Layer

        tomo = self.tomogram_layer()
        if tomo is not None:
            scale = self._voxel_size(tomo)
            translate = tuple(float(t) for t in np.asarray(tomo.translate, dtype=float)[-3:])
            base = f"{tomo.name} annotations"
            ident = self._tomogram_identity(tomo)
        else:
            scale, translate, base = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), "annotations"
            ident = "layer:(no tomogram)"
        name = name or self._unique_name(base)
        meta = {ANNOTATION_METADATA_KEY: {
            "tomogram": ident, "tomogram_layer": tomo.name if tomo is not None else None,
            "created": datetime.now().astimezone().isoformat(timespec="seconds")}}
        if tomo is not None and _dataset_folder_of(tomo.metadata):
            meta["dataset"] = _dataset_folder_of(tomo.metadata)
        tup = annotation_layer_data(
            particles if particles is not None else ParticleList.empty(voxel_size_nm=scale[2]),
            name, scale=scale, translate=translate, class_table=self.class_table,
            default_class=self._current_class, metadata=meta)
        layer = Layer.create(*tup)
        self.viewer.layers.append(layer)
        self.set_annotation_layer(layer)
        if activate:
            self.viewer.layers.selection.active = layer
            if self.viewer.dims.ndisplay == 2:
                layer.mode = "add"
        self.status.setText(f"New annotation layer '{layer.name}': click on the tomogram to add "
                            f"{self._current_class} points")
        return layer

    def _ensure_features(self, layer: Points) -> None:
        """Give a Points layer the annotation features (class, score, source, phi, theta, psi)
        and class colours when it lacks them."""
        feats = layer.features.copy()
        n = len(layer.data)
        changed = False
        names = list(self.class_table.names)
        if "class" not in feats.columns:
            feats["class"] = pd.Categorical([self._current_class] * n, categories=names)
            changed = True
        elif not isinstance(feats["class"].dtype, pd.CategoricalDtype):
            values = [str(v) for v in feats["class"].astype(object)]
            cats = names + [v for v in dict.fromkeys(values) if v not in names]
            feats["class"] = pd.Categorical(values, categories=cats)
            changed = True
        else:
            missing = [c for c in names if c not in feats["class"].cat.categories]
            if missing:
                feats["class"] = feats["class"].cat.add_categories(missing)
                changed = True
        if "score" not in feats.columns:
            feats["score"] = np.full(n, np.nan)
            changed = True
        if "source" not in feats.columns:
            feats["source"] = pd.Categorical([_SOURCE_MANUAL] * n, categories=PARTICLE_SOURCES)
            changed = True
        for col in ("phi", "theta", "psi"):
            if col not in feats.columns:
                feats[col] = np.zeros(n)
                changed = True
        if changed:
            with self._quietly():
                layer.features = feats
        cats = [str(c) for c in layer.features["class"].cat.categories]
        mode = str(getattr(layer.face_color_mode, "value", layer.face_color_mode))
        properties = getattr(getattr(layer, "_face", None), "color_properties", None)
        if mode != "cycle" or getattr(properties, "name", None) != "class":
            layer.face_color_cycle = class_color_cycle(cats, self.class_table)
            layer.face_color = "class"

    def _bind(self, layer: Points) -> None:
        """Hook an annotation layer up: features, keys, undo, autosave."""
        key = id(layer)
        if key in self._bound:
            return
        self._ensure_features(layer)
        meta = dict(layer.metadata or {})
        if not isinstance(meta.get(ANNOTATION_METADATA_KEY), dict):
            tomo = self.tomogram_layer()
            meta[ANNOTATION_METADATA_KEY] = {
                "tomogram": self._tomogram_identity(tomo) if tomo is not None
                else "layer:(no tomogram)",
                "tomogram_layer": tomo.name if tomo is not None else None}
            layer.metadata = meta
        self._bound[key] = layer
        self._track(layer)
        me = weakref.ref(self)

        def call(method: str, *args: Any) -> Callable[[Any], None]:
            def handler(_layer: Any) -> None:
                widget = me()
                if widget is not None:
                    getattr(widget, method)(*args)
            handler.__doc__ = f"napari-shrec Annotate: {method}{args if args else ''}"
            return handler

        for i, k in enumerate(CLASS_KEYS):
            layer.bind_key(_keybinding(k), call("set_class_index", i), overwrite=True)
        for k in NEXT_CLASS_KEYS:
            layer.bind_key(_keybinding(k), call("step_class", 1), overwrite=True)
        for k in PREVIOUS_CLASS_KEYS:
            layer.bind_key(_keybinding(k), call("step_class", -1), overwrite=True)
        layer.bind_key(_keybinding("C"), call("set_selected_class"), overwrite=True)

        layer.bind_key(_keybinding("Ctrl+V"), call("paste", layer), overwrite=True)

        def record_click(layer: Any, event: Any) -> Any:
            """Remember where an add-mode click is released (napari adds the point there
            right after), so the added point is known to come from a click."""
            yield
            while event.type == "mouse_move":
                yield
            widget = me()
            if widget is not None and str(getattr(layer.mode, "value", layer.mode)) == "add":
                widget._last_click = (id(layer), np.asarray(
                    layer.world_to_data(event.position), dtype=float))

        layer.mouse_drag_callbacks.insert(0, record_click)
        layer.events.feature_defaults.connect(self._on_defaults_changed)
        layer.events.features.connect(self._on_features_changed)
        layer.events.mode.connect(self._on_mode_changed)
        layer.events.name.connect(self._on_annotation_renamed)
        self._autosave_names[key] = (self._layer_tomogram(layer) or "", layer.name)
        self._mark_dirty(layer)  # an annotation layer is autosaved from the start

    def _track(self, layer: Points) -> None:
        """Record the edits of a layer for undo (annotation and predictions layers)."""
        key = id(layer)
        if key in self._tracked:
            return
        self._tracked[key] = layer
        layer.events.data.connect(self._on_data)
        me = weakref.ref(self)

        def undo(_layer: Any) -> None:
            if (widget := me()) is not None:
                widget.undo()

        def redo(_layer: Any) -> None:
            if (widget := me()) is not None:
                widget.redo()

        layer.bind_key(_keybinding("Ctrl+Z"), undo, overwrite=True)
        layer.bind_key(_keybinding("Ctrl+Shift+Z"), redo, overwrite=True)

    # ================================================================== classes
    @property
    def class_names(self) -> list[str]:
        """The classes offered, in key order: the class table's, then any other class of the
        annotation layer."""
        return list(self._class_names)

    @property
    def current_class(self) -> str:
        """The class of the next point."""
        return self._current_class

    def _rebuild_classes(self) -> None:
        """The class list (table classes, then the annotation layer's other classes) into the
        combo and the class buttons; rebuilt only when the list changes."""
        names = list(self.class_table.names)
        layer = self.annotation_layer()
        if layer is not None and "class" in layer.features.columns:
            col = layer.features["class"]
            extra = (col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype)
                     else pd.unique(col.astype(str)))
            names += [str(c) for c in extra if str(c) not in names]
        if self._current_class not in names:
            self._current_class = names[0]
        if names == self._class_names and self.class_buttons:
            self._refresh_counts()
            return
        self._class_names = names
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        for i, name in enumerate(names):
            key = CLASS_KEYS[i] if i < len(CLASS_KEYS) else " "
            desc = self.class_table.by_name(name).description if name in self.class_table else ""
            text = f"{key}  {name}" + (f" — {desc}" if desc else "")
            self.class_combo.addItem(_swatch(class_color(name, self.class_table)), text, name)
        self.class_combo.setCurrentIndex(names.index(self._current_class))
        self.class_combo.blockSignals(False)
        # one button per class: key, name, live count; click = choose the class
        for button in self.class_buttons.values():
            self.class_grid.removeWidget(button)
            button.hide()
            button.setParent(None)
            button.deleteLater()
        self.class_buttons = {}
        columns = 2
        rows = math.ceil(len(names) / columns)
        for i, name in enumerate(names):
            button = QToolButton(self.class_box)
            button.setCheckable(True)
            button.setAutoRaise(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setIcon(_swatch(class_color(name, self.class_table)))
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            desc = self.class_table.by_name(name).description if name in self.class_table else ""
            key = CLASS_KEYS[i] if i < len(CLASS_KEYS) else None
            button.setToolTip(f"{name}{' — ' + desc if desc else ''}"
                              f"{'; key ' + key if key else '; keys ] / [ step to it'}"
                              "; the number is the count of points of this class")
            button.clicked.connect(lambda _=False, n=name: self.set_class(n))
            self.class_grid.addWidget(button, i % rows, i // rows)
            self.class_buttons[name] = button
        self._refresh_counts()

    def set_class(self, name: str) -> None:
        """Make ``name`` the class of the next point (the combo, the buttons and the annotation
        layer's ``feature_defaults`` follow; selected points keep their class)."""
        if name not in self._class_names:
            raise ValueError(f"unknown class {name!r}; known: {', '.join(self._class_names)}")
        self._current_class = name
        index = self._class_names.index(name)
        if self.class_combo.currentIndex() != index:
            self.class_combo.blockSignals(True)
            self.class_combo.setCurrentIndex(index)
            self.class_combo.blockSignals(False)
        layer = self.annotation_layer()
        if layer is not None:
            self._apply_defaults(layer)
        self._refresh_counts()
        self.status.setText(f"Next point: {name}")

    def set_class_index(self, index: int) -> None:
        """Class number ``index`` (0-based) of the list (keys 1…9, 0 → 0…9)."""
        if 0 <= index < len(self._class_names):
            self.set_class(self._class_names[index])

    def step_class(self, step: int) -> None:
        """The next (+1) or previous (−1) class, wrapping around."""
        index = self._class_names.index(self._current_class)
        self.set_class(self._class_names[(index + step) % len(self._class_names)])

    def _on_class_combo(self, index: int) -> None:
        if 0 <= index < len(self._class_names):
            self.set_class(self._class_names[index])

    def _class_size(self, layer: Points, name: str) -> float:
        """Display diameter (voxels of ``layer``) of a class."""
        return class_diameter_vox(name, self._voxel_size(layer)[2], self.class_table)

    def _class_radius_vox(self, tomo: Any, name: str) -> float:
        return 0.5 * class_diameter_vox(name, self._voxel_size(tomo)[2], self.class_table)

    def _apply_defaults(self, layer: Points) -> None:
        """The next point's features: the current class, source manual, no score; its size."""
        defaults = layer.feature_defaults
        row = defaults.iloc[0].to_dict() if len(defaults) else {}
        row.update({"class": self._current_class, "source": _SOURCE_MANUAL, "score": np.nan})
        self._setting_defaults = True
        try:
            col = layer.features["class"]
            if isinstance(col.dtype, pd.CategoricalDtype) and \
                    self._current_class not in col.cat.categories:
                feats = layer.features.copy()
                feats["class"] = feats["class"].cat.add_categories([self._current_class])
                with self._quietly():
                    layer.features = feats
            layer.feature_defaults = row
            with layer.block_update_properties():
                layer.current_size = self._class_size(layer, self._current_class)
        finally:
            self._setting_defaults = False

    def _on_defaults_changed(self, event: Any) -> None:
        """napari copies a selected point's features into ``feature_defaults``; the next point
        keeps the widget's class, source "manual" and no score all the same."""
        if self._setting_defaults:
            return
        layer = event.source
        defaults = layer.feature_defaults
        if not len(defaults):
            return
        row = defaults.iloc[0]
        score = pd.to_numeric(pd.Series([row.get("score")]), errors="coerce").iloc[0]
        same = (str(row.get("class")) == self._current_class
                and str(row.get("source")) == _SOURCE_MANUAL
                and not np.isfinite(score))
        if not same:
            self._apply_defaults(layer)

    # ================================================================== counts
    def _on_features_changed(self, event: Any = None) -> None:
        layer = event.source if event is not None else None
        if layer is self.annotation_layer():
            self._refresh_counts()

    def class_counts(self) -> dict[str, int]:
        """{class: number of points} of the annotation layer (classes without points: 0)."""
        counts = dict.fromkeys(self._class_names, 0)
        layer = self.annotation_layer()
        if layer is not None and len(layer.data) and "class" in layer.features.columns:
            for name, n in layer.features["class"].astype(str).value_counts().items():
                counts[str(name)] = int(n)
        return counts

    def _refresh_counts(self) -> None:
        counts = self.class_counts()
        for i, name in enumerate(self._class_names):
            button = self.class_buttons.get(name)
            if button is None:
                continue
            key = CLASS_KEYS[i] if i < len(CLASS_KEYS) else "·"
            button.setText(f"{key}  {name}  {counts.get(name, 0)}")
            font = button.font()
            font.setBold(name == self._current_class)
            button.setFont(font)
            button.setChecked(name == self._current_class)
        layer = self.annotation_layer()
        if layer is None:
            self.counts_label.setText("No annotation layer: New, or choose a Points layer")
            return
        n = len(layer.data)
        parts = []
        if n and "source" in layer.features.columns:
            by_source = layer.features["source"].astype(str).value_counts()
            parts = [f"{int(by_source[s])} {s}" for s in PARTICLE_SOURCES if s in by_source]
        self.counts_label.setText(f"{n} point{'s' if n != 1 else ''}"
                                  + (f": {', '.join(parts)}" if parts else ""))

    # ================================================================== edits, undo
    class _Quiet:
        def __init__(self, widget: AnnotateWidget) -> None:
            self.widget = widget

        def __enter__(self) -> None:
            self.widget._quiet += 1

        def __exit__(self, *exc: Any) -> None:
            self.widget._quiet -= 1

    def _quietly(self) -> AnnotateWidget._Quiet:
        """Edits made inside are not recorded for undo nor post-processed."""
        return AnnotateWidget._Quiet(self)

    def _on_data(self, event: Any) -> None:
        layer = event.source
        action = str(getattr(event.action, "value", event.action))
        key = id(layer)
        if self._quiet:
            if action in ("added", "removed", "changed"):
                self._mark_dirty(layer)
            return
        if action in ("adding", "removing", "changing"):
            self._pending[key] = _Snapshot.of(layer)
            return
        if action not in ("added", "removed", "changed"):
            return
        before = self._pending.pop(key, None)
        if action == "added" and key in self._bound:
            if not self._after_points_added(layer, event, before):
                return  # taken back (3D view)
        if before is not None:
            self._push_undo([(layer, before)])
        self._mark_dirty(layer)
        if key in self._bound:
            self._refresh_counts()
        if layer is self.predictions_layer():
            self._apply_threshold()

    def _push_undo(self, entry: list[tuple[Points, _Snapshot]]) -> None:
        self._undo.append(entry)
        del self._undo[:-_UNDO_LIMIT]
        self._redo.clear()
        self._update_buttons()

    def _restore(self, layer: Points, snap: _Snapshot) -> None:
        with self._quietly():
            layer.selected_data = set()
            layer.data = snap.data.copy()
            layer.features = snap.features.copy()
            if len(snap.size):
                layer.size = snap.size.copy()
            layer.refresh()
        if id(layer) in self._bound:
            self._apply_defaults(layer)
        self._mark_dirty(layer)

    def _swap(self, source: list, target: list, verb: str, what: str) -> bool:
        while source:
            entry = source.pop()
            live = [(layer, snap) for layer, snap in entry if layer in self.viewer.layers]
            if not live:
                continue
            target.append([(layer, _Snapshot.of(layer)) for layer, _ in live])
            for layer, snap in live:
                self._restore(layer, snap)
            self._refresh_counts()
            self._apply_threshold()
            self.status.setText(f"{verb}: {', '.join(layer.name for layer, _ in live)}")
            self._update_buttons()
            return True
        self.status.setText(f"Nothing to {what}")
        self._update_buttons()
        return False

    def undo(self) -> bool:
        """Undo the last edit of the annotation or predictions layers (adds, deletes, moves,
        class changes, loads, accept/reject). Returns whether something was undone."""
        return self._swap(self._undo, self._redo, "Undone", "undo")

    def redo(self) -> bool:
        """Redo the last undone edit. Returns whether something was redone."""
        return self._swap(self._redo, self._undo, "Redone", "redo")

    def _edit(self, layers: list[Points], change: Callable[[], None]) -> None:
        """Apply ``change`` to ``layers`` as one undo step."""
        entry = [(layer, _Snapshot.of(layer)) for layer in layers]
        with self._quietly():
            change()
        self._push_undo(entry)
        for layer in layers:
            self._mark_dirty(layer)
            if id(layer) in self._bound:
                self._apply_defaults(layer)
        self._refresh_counts()
        self._apply_threshold()

    def delete_selected(self) -> int:
        """Delete the selected points of the annotation layer (undoable); returns how many."""
        layer = self.annotation_layer()
        if layer is None or not layer.selected_data:
            self.status.setText("Nothing selected to delete")
            return 0
        n = len(layer.selected_data)
        self._edit([layer], layer.remove_selected)
        self.status.setText(f"Deleted {n} point{'s' if n != 1 else ''}")
        return n

    def paste(self, layer: Points | None = None) -> int:
        """Paste the points copied with Ctrl+C onto the displayed slice (as napari's Ctrl+V,
        whose own version changes the data without a data event and fails on napari 0.9's
        slices): one undo step; returns how many points were pasted."""
        layer = layer if layer is not None else self.annotation_layer()
        clip = getattr(layer, "_clipboard", None) or {}
        if layer is None or not len(clip.get("data", ())):
            self.status.setText("Nothing to paste: select points and press Ctrl+C first")
            return 0
        data = np.array(clip["data"], dtype=float, copy=True)
        _, hidden = self._slicing_axes(layer)
        try:  # to the displayed slice, as napari does
            now = np.asarray(layer._data_slice.point, dtype=float)
            then = np.asarray(clip["indices"].point, dtype=float)
            shift = (now - then)[hidden]
            if np.all(np.isfinite(shift)):
                data[:, hidden] += shift
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            pass
        features = pd.DataFrame(clip["features"]).reset_index(drop=True)
        n0 = len(layer.data)
        self._edit([layer], lambda: self._append_points(layer, data, features))
        layer.selected_data = set(range(n0, len(layer.data)))
        self.status.setText(f"Pasted {len(data)} point{'s' if len(data) != 1 else ''}")
        return len(data)

    def set_selected_class(self, name: str | None = None) -> int:
        """Give the selected points of the annotation layer the class ``name`` (default: the
        current class) and its size (undoable); returns how many points changed."""
        layer = self.annotation_layer()
        name = self._current_class if name is None else name
        if layer is None or not layer.selected_data:
            self.status.setText("Select points first (select mode: S), then C")
            return 0
        if name not in self._class_names:
            raise ValueError(f"unknown class {name!r}")
        index = np.asarray(sorted(layer.selected_data), dtype=int)

        def change() -> None:
            feats = layer.features.copy()
            if name not in feats["class"].cat.categories:
                feats["class"] = feats["class"].cat.add_categories([name])
            feats.loc[index, "class"] = name
            sizes = np.array(layer.size, dtype=float, copy=True)
            sizes[index] = self._class_size(layer, name)
            layer.features = feats
            layer.size = sizes
            layer.refresh()

        self._edit([layer], change)
        self.status.setText(f"{len(index)} point{'s' if len(index) != 1 else ''} → {name}")
        return int(len(index))

    def _append_points(self, layer: Points, coords_zyx: np.ndarray,
                       features: pd.DataFrame) -> None:
        """Append points with their features (categories merged) to a layer; sizes by class."""
        n0 = len(layer.data)
        old = layer.features.copy()
        new = features.reset_index(drop=True).copy()
        for col in old.columns:
            if col not in new.columns:
                new[col] = layer.feature_defaults[col].iloc[0] if col in \
                    layer.feature_defaults.columns else np.nan
        new = new[list(old.columns)]
        for col in old.columns:
            if isinstance(old[col].dtype, pd.CategoricalDtype):
                cats = [str(c) for c in old[col].cat.categories]
                cats += [v for v in dict.fromkeys(new[col].astype(str)) if v not in cats]
                old[col] = old[col].cat.set_categories(cats)
                new[col] = pd.Categorical(new[col].astype(str), categories=cats)
        merged = pd.concat([old, new], ignore_index=True)
        sizes = np.concatenate([np.asarray(layer.size, dtype=float),
                                [self._class_size(layer, str(c)) for c in new["class"]]])
        old_data = np.asarray(layer.data, dtype=float).reshape(n0, layer.ndim)
        layer.data = np.concatenate([old_data,
                                     np.asarray(coords_zyx, dtype=float).reshape(-1, 3)])
        layer.features = merged
        layer.size = sizes
        layer.refresh()

    # ------------------------------------------------------------------ adding by clicks
    def _after_points_added(self, layer: Points, event: Any, before: _Snapshot | None) -> bool:
        """Points just added to an annotation layer: sizes by class; clicks (add mode) land on
        the displayed slice and are snapped; in 3D view a click is taken back. Returns False
        when the points were taken back."""
        n_new = len(layer.data) - (len(before.data) if before is not None else 0)
        if n_new <= 0:
            return True
        new = np.arange(len(layer.data) - n_new, len(layer.data))
        click, self._last_click = self._last_click, None
        by_click = (click is not None and click[0] == id(layer) and n_new == 1
                    and np.allclose(np.asarray(layer.data[new[0]], dtype=float), click[1]))
        if by_click and self.viewer.dims.ndisplay == 3:
            self._take_back(layer, before)
            self._refuse_3d()
            return False
        feats = layer.features
        name = str(feats["class"].iloc[new[0]]) if "class" in feats.columns else \
            self._current_class
        placed: tuple[np.ndarray, str] | None = None
        if by_click:
            placed = self._place_click(layer, np.asarray(layer.data[new[0]], dtype=float), name)
            if placed is None:
                self._take_back(layer, before)
                return False
        with self._quietly():
            sizes = np.array(layer.size, dtype=float, copy=True)
            for i in new:
                sizes[i] = self._class_size(layer, str(feats["class"].iloc[i]))
            layer.size = sizes
            if placed is not None:
                data = np.array(layer.data, dtype=float, copy=True)
                data[new[0]] = placed[0]
                layer.data = data
                layer.selected_data = {int(new[0])}
                self.status.setText(placed[1])
            layer.refresh()
        return True

    def _take_back(self, layer: Points, before: _Snapshot | None) -> None:
        """Remove points napari just added (the state before the add comes back)."""
        if before is not None:
            self._restore(layer, before)

    def _slicing_axes(self, layer: Points) -> tuple[list[int], list[int]]:
        """(displayed, not displayed) axes of ``layer`` (its last 3 dims) in the viewer."""
        offset = self.viewer.dims.ndim - layer.ndim
        displayed = [a - offset for a in self.viewer.dims.displayed if a - offset >= 0]
        hidden = [a for a in range(layer.ndim) if a not in displayed]
        return displayed, hidden

    def _place_click(self, layer: Points, point: np.ndarray, name: str
                     ) -> tuple[np.ndarray, str] | None:
        """A clicked point (data coordinates of ``layer``) on the displayed slice of the
        tomogram, snapped when asked. Returns (point, status message), or None for a click
        outside the tomogram (nothing is added)."""
        tomo = self.tomogram_layer()
        displayed, hidden = self._slicing_axes(layer)
        world = np.asarray(layer.data_to_world(point), dtype=float)
        if tomo is None or tomo.ndim != layer.ndim:
            out = np.array(point, dtype=float)
            out[hidden] = np.round(out[hidden])
            return out, f"Added {name} at {self._fmt(out)}"
        t = np.asarray(tomo.world_to_data(world), dtype=float)
        volume = self._tomogram_volume(tomo)
        shape = np.asarray(volume.shape[-3:], dtype=float)
        t[hidden] = np.round(t[hidden])
        if np.any(t < -0.5) or np.any(t > shape - 0.5):
            self.status.setText(f"Not added: the click at {self._fmt(t)} (x y z voxels) is "
                                f"outside the tomogram '{tomo.name}'")
            return None
        message = f"Added {name} at {self._fmt(t)} (x y z voxels)"
        if self.snap_check.isChecked():
            t, message = self._snap(tomo, volume, t, name, displayed, hidden)
        if self._same_frame(layer, tomo):
            return np.asarray(t, dtype=float), message  # exact: no round trip through nm
        out = np.asarray(layer.world_to_data(tomo.data_to_world(t)), dtype=float)
        return out, message

    @staticmethod
    def _same_frame(a: Any, b: Any) -> bool:
        """Whether two layers map data to world alike (same scale and translate, no affine)."""
        try:
            return (np.array_equal(np.asarray(a.scale)[-3:], np.asarray(b.scale)[-3:])
                    and np.array_equal(np.asarray(a.translate)[-3:],
                                       np.asarray(b.translate)[-3:])
                    and np.allclose(a.affine.affine_matrix, np.eye(a.ndim + 1))
                    and np.allclose(b.affine.affine_matrix, np.eye(b.ndim + 1))
                    and np.allclose(a.rotate, np.eye(a.ndim))
                    and np.allclose(b.rotate, np.eye(b.ndim))
                    and np.allclose(a.shear, 0) and np.allclose(b.shear, 0))
        except (AttributeError, ValueError):
            return False

    @staticmethod
    def _fmt(zyx: np.ndarray) -> str:
        z, y, x = (float(v) for v in np.asarray(zyx)[-3:])
        return f"({x:.1f}, {y:.1f}, {z:.1f})"

    def _snap(self, tomo: Any, volume: Any, t: np.ndarray, name: str, displayed: list[int],
              hidden: list[int]) -> tuple[np.ndarray, str]:
        from ..core.snap import guess_polarity, snap_point

        radius = self._class_radius_vox(tomo, name)
        sigma_nm = float(self.sigma_spin.value())
        sigma = sigma_nm / self._voxel_size(tomo)[2] if sigma_nm > 0 else None
        polarity = self.polarity_combo.currentText()
        if polarity == "auto":
            key = id(tomo)
            if key not in self._polarity:
                self._polarity[key] = guess_polarity(volume)
            polarity = self._polarity[key]
        axes = displayed + (hidden if self.snap_z_check.isChecked() else [])
        try:
            result = snap_point(volume, t, radius, lowpass_sigma_vox=sigma, polarity=polarity,
                                axes=axes)
        except ValueError as exc:
            return t, f"Added {name} at {self._fmt(t)}; not snapped: {exc}"
        if not result.moved:
            return t, (f"Added {name} at {self._fmt(t)}: no {polarity} density peak within "
                       f"{radius:.1f} voxels, not snapped")
        return result.point_zyx, (f"Added {name} at {self._fmt(result.point_zyx)}, snapped "
                                  f"{result.shift_vox:.1f} voxels ({polarity} peak)")

    def _refuse_3d(self) -> None:
        message = ("Adding points is off in 3D view (a click has no depth there, the point "
                   "would land at a wrong z): switch to 2D (Ctrl+Y) to add points")
        self.status.setText(message)
        try:
            from napari.utils.notifications import show_info

            show_info(message)
        except Exception:  # no notification manager (bare scripts)
            log.info(message)

    def _on_mode_changed(self, event: Any) -> None:
        layer = event.source
        mode = str(getattr(layer.mode, "value", layer.mode))
        if mode == "add" and self.viewer.dims.ndisplay == 3:
            layer.mode = "pan_zoom"
            self._refuse_3d()
        if layer is self.annotation_layer():
            self.add_mode_button.blockSignals(True)
            self.add_mode_button.setChecked(str(getattr(layer.mode, "value", layer.mode))
                                            == "add")
            self.add_mode_button.blockSignals(False)

    def _on_ndisplay(self, *_: Any) -> None:
        three_d = self.viewer.dims.ndisplay == 3
        if three_d:
            for layer in self._bound.values():
                if str(getattr(layer.mode, "value", layer.mode)) == "add":
                    layer.mode = "pan_zoom"
                    self._refuse_3d()
        self._update_buttons()

    def _on_add_mode_button(self, on: bool) -> None:
        layer = self.annotation_layer()
        if layer is None:
            return
        if on and self.viewer.dims.ndisplay == 3:
            self._refuse_3d()
            self.add_mode_button.setChecked(False)
            return
        if on:
            self.viewer.layers.selection.active = layer
        layer.mode = "add" if on else "pan_zoom"

    # ================================================================== curation
    def predictions_layer(self) -> Points | None:
        """The chosen predictions layer, or None."""
        layer = self._layer_by_name(self.predictions_combo.currentText())
        return layer if layer is not None and layer is not self.annotation_layer() else None

    def set_predictions(self, layer: Any) -> None:
        """Choose the predictions layer (a Points layer or its name)."""
        name = layer if isinstance(layer, str) else layer.name
        self.predictions_combo.setCurrentText(name)
        self._on_predictions_combo()

    def _predicted_mask(self, layer: Points) -> np.ndarray:
        feats = layer.features
        n = len(layer.data)
        if "source" in feats.columns:
            return (feats["source"].astype(str) == _SOURCE_PREDICTED).to_numpy()
        if "score" in feats.columns:
            return np.isfinite(pd.to_numeric(feats["score"], errors="coerce").to_numpy())
        return np.zeros(n, dtype=bool)

    def _scores(self, layer: Points) -> np.ndarray:
        if "score" not in layer.features.columns:
            return np.full(len(layer.data), np.nan)
        return pd.to_numeric(layer.features["score"], errors="coerce").to_numpy(dtype=float)

    def _on_predictions_combo(self, *_: Any) -> None:
        if self._refreshing:
            return
        layer = self.predictions_layer()
        if layer is not None:
            self._track(layer)
            me = weakref.ref(self)

            def accept(_layer: Any) -> None:
                if (widget := me()) is not None:
                    widget.accept_selected()

            def reject(_layer: Any) -> None:
                if (widget := me()) is not None:
                    widget.reject_selected()

            layer.bind_key(_keybinding("Y"), accept, overwrite=True)
            layer.bind_key(_keybinding("N"), reject, overwrite=True)
            scores = self._scores(layer)[self._predicted_mask(layer)]
            scores = scores[np.isfinite(scores)]
            lo, hi = (float(scores.min()), float(scores.max())) if scores.size else (0.0, 1.0)
            if hi <= lo:
                hi = lo + 1.0
            self._score_range = (lo, hi)
            self.threshold_spin.blockSignals(True)
            self.threshold_spin.setRange(lo, hi)
            self.threshold_spin.setSingleStep((hi - lo) / 100.0)
            self.threshold_spin.setValue(lo)
            self.threshold_spin.blockSignals(False)
            self.threshold_slider.blockSignals(True)
            self.threshold_slider.setValue(0)
            self.threshold_slider.blockSignals(False)
        self._apply_threshold()
        self._update_buttons()

    def score_threshold(self) -> float:
        """The score threshold (predicted points below it are hidden)."""
        return float(self.threshold_spin.value())

    def set_score_threshold(self, value: float) -> None:
        """Hide the predicted points of the predictions layer that score below ``value``."""
        self.threshold_spin.setValue(float(value))
        self._apply_threshold()

    def _on_threshold_slider(self, step: int) -> None:
        lo, hi = self._score_range
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setValue(lo + (hi - lo) * step / _THRESHOLD_STEPS)
        self.threshold_spin.blockSignals(False)
        self._apply_threshold()

    def _on_threshold_spin(self, value: float) -> None:
        lo, hi = self._score_range
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round((value - lo) / (hi - lo) * _THRESHOLD_STEPS)))
        self.threshold_slider.blockSignals(False)
        self._apply_threshold()

    def _apply_threshold(self) -> None:
        layer = self.predictions_layer()
        if layer is None:
            self.threshold_info.setText("No predictions layer")
            return
        predicted = self._predicted_mask(layer)
        scores = self._scores(layer)
        threshold = self.score_threshold()
        with np.errstate(invalid="ignore"):
            low = predicted & np.isfinite(scores) & (scores < threshold)
        shown = ~low
        if len(shown) == len(layer.data) and not np.array_equal(layer.shown, shown):
            layer.shown = shown
            layer.selected_data = {i for i in layer.selected_data if shown[i]}
            layer.refresh()
        n_pred = int(predicted.sum())
        self.threshold_info.setText(f"{int((predicted & shown).sum())} of {n_pred} predicted "
                                    f"points shown (score ≥ {threshold:.3g})")

    def _selected_shown(self, layer: Points) -> list[int]:
        shown = np.asarray(layer.shown, dtype=bool)
        return sorted(i for i in layer.selected_data if i < len(shown) and shown[i])

    def accept_selected(self) -> int:
        """Move the selected, shown points of the predictions layer into the annotation layer
        (their class and score kept, source "predicted"); one undo step. Returns how many."""
        pred, ann = self.predictions_layer(), self.annotation_layer()
        if pred is None or ann is None:
            self.status.setText("Choose an annotation layer and a predictions layer first")
            return 0
        index = self._selected_shown(pred)
        if not index:
            self.status.setText("Select predicted points first (select mode: S)")
            return 0
        coords = np.asarray([ann.world_to_data(pred.data_to_world(pred.data[i]))
                             for i in index], dtype=float).reshape(-1, 3)
        pf = pred.features.iloc[index].reset_index(drop=True)
        n = len(index)
        classes = (pf["class"].astype(str).tolist() if "class" in pf.columns
                   else [self._current_class] * n)
        feats = pd.DataFrame({
            "class": classes,
            "score": pd.to_numeric(pf["score"], errors="coerce").to_numpy(dtype=float)
            if "score" in pf.columns else np.full(n, np.nan),
            "source": [_SOURCE_PREDICTED] * n,
        })
        for col in ("phi", "theta", "psi"):
            feats[col] = pf[col].to_numpy(dtype=float) if col in pf.columns else 0.0

        def change() -> None:
            self._append_points(ann, coords, feats)
            pred.selected_data = set()
            pred.remove(index)

        self._edit([ann, pred], change)
        self._rebuild_classes_if_needed(classes)
        self.status.setText(f"Accepted {n} predicted point{'s' if n != 1 else ''} into "
                            f"'{ann.name}'")
        return n

    def reject_selected(self) -> int:
        """Remove the selected, shown points of the predictions layer (one undo step)."""
        pred = self.predictions_layer()
        if pred is None:
            self.status.setText("Choose a predictions layer first")
            return 0
        index = self._selected_shown(pred)
        if not index:
            self.status.setText("Select predicted points first (select mode: S)")
            return 0

        def change() -> None:
            pred.selected_data = set()
            pred.remove(index)

        self._edit([pred], change)
        self.status.setText(f"Rejected {len(index)} predicted point"
                            f"{'s' if len(index) != 1 else ''}")
        return len(index)

    def _rebuild_classes_if_needed(self, names: Sequence[str]) -> None:
        if any(str(n) not in self._class_names for n in names):
            self._rebuild_classes()

    # ================================================================== files
    def _tomogram_shape_xyz(self) -> tuple[int, int, int] | None:
        tomo = self.tomogram_layer()
        if tomo is None:
            return None
        shape = self._tomogram_volume(tomo).shape[-3:]
        return (int(shape[2]), int(shape[1]), int(shape[0]))

    def save_annotations(self, path: str | os.PathLike, *, relion_version: int | None = None,
                         overwrite: bool = False) -> bool:
        """Write the annotation layer to ``path``: .txt SHREC, .star RELION (``relion_version``
        4 or 5; default: the widget's choice), .csv. Coordinates are voxels of the tomogram
        (RELION 5: Å from the tomogram centre, with its shape and voxel size). An existing file
        is replaced only with ``overwrite``. Errors go to the status line and a notification.
        Returns whether the file was written."""
        from .._writer import write_points_layer
        from ..io.particles import particle_format_from_path

        layer = self.annotation_layer()
        try:
            if layer is None:
                raise ValueError("no annotation layer to save: New, or choose a Points layer")
            target = Path(path).expanduser()
            fmt = particle_format_from_path(target)
            options: dict[str, Any] = {}
            if fmt == "star":
                version = relion_version or (5 if self.relion_combo.currentIndex() == 1 else 4)
                options["relion_version"] = int(version)
                tomo = self.tomogram_layer()
                if tomo is not None:
                    options["tomo_name"] = tomo.name.replace(" ", "_")
                if version == 5:
                    shape = self._tomogram_shape_xyz()
                    if shape is None:
                        raise ValueError("RELION 5 STAR files need the tomogram's shape: choose "
                                         "the tomogram")
                    options["tomogram_shape_xyz"] = shape
                    options["voxel_size_nm"] = self._voxel_size(layer)[2]
            data, state, _ = layer.as_layer_data_tuple()
            written = write_points_layer(target, data, state, format=fmt, overwrite=overwrite,
                                         **options)
        except (OSError, ValueError) as exc:
            report_error(self.status, "Annotate", exc)
            return False
        meta = dict(layer.metadata or {})
        ann = dict(meta.get(ANNOTATION_METADATA_KEY) or {})
        ann["saved_to"] = written[0]
        meta[ANNOTATION_METADATA_KEY] = ann
        layer.metadata = meta
        self.status.setText(f"Saved {len(layer.data)} points to {written[0]}")
        return True

    def _read_for_tomogram(self, path: str | os.PathLike) -> ParticleList:
        """A particle file in voxels of the tomogram: RELION 5 centred coordinates converted
        with its shape and voxel size; files picked at another voxel size rescaled."""
        from ..io.particles import particle_format_from_path, read_particles

        p = Path(path).expanduser()
        fmt = particle_format_from_path(p)
        tomo = self.tomogram_layer()
        vs = self._voxel_size(tomo)[2] if tomo is not None else None
        shape = self._tomogram_shape_xyz()
        if fmt == "star":
            head = p.read_text(encoding="utf-8", errors="replace")[:1 << 16] if p.is_file() \
                else ""
            if "_rlnCenteredCoordinateXAngst" in head:
                if shape is None or vs is None:
                    raise ValueError(f"{p}: a RELION 5 file needs the tomogram's shape and "
                                     "voxel size: choose the tomogram first")
                return read_particles(p, voxel_size_nm=vs, tomogram_shape_xyz=shape)
        particles = read_particles(p, tomogram_shape_xyz=shape)
        own = particles.voxel_size_nm
        if fmt == "star" and own and vs and not math.isclose(own, vs, rel_tol=1e-3):
            factor = own / vs
            for col in ("x", "y", "z"):
                particles.table[col] = particles.table[col] * factor
            log.info("%s: picked at %g nm, rescaled ×%g to the tomogram's %g nm", p, own,
                     factor, vs)
        particles.voxel_size_nm = vs
        return particles

    def load_annotations(self, path: str | os.PathLike) -> int:
        """Add the points of a particle file (SHREC txt, STAR, CSV; voxels of the tomogram)
        to the annotation layer (created when there is none), as one undo step. Points get
        the file's ``source`` column where it has one, else "predicted" when the file has
        scores, else "manual". Returns how many points were added (0 on errors, which go to
        the status line and a notification)."""
        from ..io.particles import ParticleFileError

        try:
            particles = self._read_for_tomogram(path)
        except (OSError, ValueError, ParticleFileError) as exc:
            report_error(self.status, "Annotate", exc)
            return 0
        layer = self.annotation_layer() or self.new_annotation_layer(activate=False)
        has_scores = len(particles) > 0 and bool(particles.table["score"].notna().any())
        feats = particles_to_features(particles, class_table=self.class_table,
                                      source=_SOURCE_PREDICTED if has_scores else _SOURCE_MANUAL)
        coords = particles.coords_zyx() if len(particles) else np.zeros((0, 3))
        self._edit([layer], lambda: self._append_points(layer, coords, feats))
        self._rebuild_classes_if_needed(feats["class"].astype(str).tolist())
        self.status.setText(f"Loaded {len(particles)} points from {Path(path).name} into "
                            f"'{layer.name}'")
        return len(particles)

    def load_predictions(self, path: str | os.PathLike) -> Points | None:
        """Open a particle file as a predictions layer on the tomogram (its scale and
        position) and choose it for curation. Returns the layer (None on errors)."""
        from napari.layers import Layer

        from ..io.particles import ParticleFileError

        try:
            particles = self._read_for_tomogram(path)
        except (OSError, ValueError, ParticleFileError) as exc:
            report_error(self.status, "Annotate", exc)
            return None
        tomo = self.tomogram_layer()
        scale = self._voxel_size(tomo) if tomo is not None else (1.0, 1.0, 1.0)
        translate = tuple(np.asarray(tomo.translate, dtype=float)[-3:]) if tomo is not None \
            else (0.0, 0.0, 0.0)
        has_scores = len(particles) > 0 and bool(particles.table["score"].notna().any())
        data, kwargs, kind = annotation_layer_data(
            particles, self._unique_name(Path(path).stem), scale=scale, translate=translate,
            class_table=self.class_table,
            source=_SOURCE_PREDICTED if has_scores else _SOURCE_MANUAL,
            metadata={"source_file": str(path)})
        layer = Layer.create(data, kwargs, kind)
        self.viewer.layers.append(layer)
        self.set_predictions(layer)
        self.status.setText(f"Loaded {len(particles)} predictions from {Path(path).name}")
        return layer

    def _save_dialog(self) -> None:
        layer = self.annotation_layer()
        if layer is None:
            self.status.setText("No annotation layer to save")
            return
        start = Path.home() / f"{layer.name.replace(' ', '_')}.star"
        path, _ = QFileDialog.getSaveFileName(
            self, "Save annotations", str(start),
            "RELION STAR (*.star);;SHREC particle list (*.txt);;CSV (*.csv)",
            options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return
        target = Path(path)
        overwrite = target.exists()
        if not confirm_replace(self, target):
            self.status.setText(f"Not saved: {target.name} already exists")
            return
        self.save_annotations(target, overwrite=overwrite)

    def _open_dialog(self, title: str) -> str:
        path, _ = QFileDialog.getOpenFileName(
            self, title, str(Path.home()),
            "Particle lists (*.star *.txt *.csv);;All files (*)")
        return path

    def _load_dialog(self) -> None:
        path = self._open_dialog("Add points from a particle file")
        if path:
            self.load_annotations(path)

    def _load_predictions_dialog(self) -> None:
        path = self._open_dialog("Open predictions")
        if path:
            self.load_predictions(path)

    # ------------------------------------------------------------------ autosave
    def _mark_dirty(self, layer: Points) -> None:
        if id(layer) not in self._bound or not self.autosave_check.isChecked():
            return
        self._dirty[id(layer)] = layer
        now = time.monotonic()
        if self._dirty_since is None:
            self._dirty_since = now
        if now - self._dirty_since > _AUTOSAVE_MAX_WAIT_S:
            self.flush_autosave()
        else:
            self._autosave_timer.start(int(self.autosave_delay_ms))

    def _on_autosave_toggled(self, on: bool) -> None:
        if on:
            for layer in self._bound.values():
                self._mark_dirty(layer)
        else:
            self._autosave_timer.stop()
            self._dirty.clear()
            self._dirty_since = None
            self.autosave_info.setText("Autosave is off")

    def _autosave_identity(self, layer: Points) -> str:
        return self._layer_tomogram(layer) or "layer:(no tomogram)"

    def _write_autosave(self, layer: Points) -> Any:
        from ..io.annotations import remove_autosave, write_autosave

        ident = self._autosave_identity(layer)
        vs = self._voxel_size(layer)
        particles = points_layer_to_particles(layer.data, layer.features, voxel_size_nm=vs[2],
                                              include_source=True)
        info = {"scale": [float(s) for s in vs],
                "translate": [float(t) for t in np.asarray(layer.translate, dtype=float)[-3:]],
                "current_class": self._current_class,
                "tomogram_layer": (layer.metadata.get(ANNOTATION_METADATA_KEY) or {}).get(
                    "tomogram_layer")}
        record = write_autosave(particles, ident, layer.name, info=info,
                                directory=self.autosave_directory)
        previous = self._autosave_names.get(id(layer))
        if previous is not None and previous != (ident, layer.name) and previous[1]:
            remove_autosave(previous[0], previous[1], self.autosave_directory)
        self._autosave_names[id(layer)] = (ident, layer.name)
        self.last_autosave = record
        return record

    def flush_autosave(self) -> list[Path]:
        """Write the autosave of every changed annotation layer now; returns the CSV paths."""
        self._autosave_timer.stop()
        written: list[Path] = []
        layers = list(self._dirty.values())
        self._dirty.clear()
        self._dirty_since = None
        for layer in layers:
            try:
                record = self._write_autosave(layer)
            except (OSError, ValueError) as exc:
                report_error(self.status, "Annotate autosave", exc)
                continue
            written.append(record.csv_path)
        if written:
            record = self.last_autosave
            self.autosave_info.setText(
                f"Autosaved {record.n_points} points of '{record.layer_name}' at "
                f"{datetime.now().strftime('%H:%M:%S')}")
            self.autosave_info.setToolTip(str(record.csv_path))
        return written

    def _on_annotation_renamed(self, event: Any) -> None:
        self._mark_dirty(event.source)

    def restore_autosaves(self, *, force: bool = False) -> list[Points]:
        """Re-create the autosaved annotation layers of the chosen tomogram that are not open
        (a layer of the same name open in the viewer is left as it is). Returns the layers
        restored. ``force``: also report when there is nothing to restore."""
        from ..io.annotations import list_autosaves, read_autosave
        from ..io.particles import ParticleFileError

        tomo = self.tomogram_layer()
        ident = self._tomogram_identity(tomo) if tomo is not None else "layer:(no tomogram)"
        self._restored.add(ident)
        restored: list[Points] = []
        skipped: list[str] = []
        for record in list_autosaves(ident, self.autosave_directory):
            if record.layer_name in self.viewer.layers:
                skipped.append(record.layer_name)
                continue
            try:
                particles = read_autosave(record)
            except (OSError, ValueError, ParticleFileError) as exc:
                report_error(self.status, "Annotate restore", exc)
                continue
            wanted = record.info.get("current_class")
            if isinstance(wanted, str) and wanted in self._class_names:
                self._current_class = wanted
            layer = self.new_annotation_layer(record.layer_name, particles=particles,
                                              activate=False)
            self._autosave_names[id(layer)] = (ident, layer.name)
            restored.append(layer)
        if restored:
            self.set_class(self._current_class)
            n = sum(len(layer.data) for layer in restored)
            self.status.setText(f"Restored {len(restored)} annotation layer"
                                f"{'s' if len(restored) != 1 else ''} ({n} points) from the "
                                "autosave")
        elif force:
            self.status.setText("Nothing to restore" + (
                f": {', '.join(skipped)} already open" if skipped else
                " for this tomogram"))
        return restored

    # ================================================================== dataset overlays
    def _refresh_dataset_from(self, tomo: Any) -> None:
        current = self.dataset_edit.text().strip()
        if current and current != self._auto_dataset:
            return  # typed or browsed: kept
        folder = _dataset_folder_of(tomo.metadata)
        if not folder:
            from ..io.dataset import is_dataset_folder

            path = _layer_file(tomo)
            if path and is_dataset_folder(Path(path).parent):
                folder = str(Path(path).parent)
        self._auto_dataset = folder
        self.dataset_edit.setText(folder or "")
        self._sync_overlay_checks()

    def set_dataset(self, folder: str | os.PathLike) -> None:
        """Use ``folder`` (a dataset folder) for the overlays."""
        self.dataset_edit.setText(str(Path(folder).expanduser()))
        self._on_dataset_edited()

    def _on_dataset_edited(self) -> None:
        self._dataset_cache = None
        self._sync_overlay_checks()

    def _browse_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder",
                                                  self.dataset_edit.text())
        if folder:
            self.set_dataset(folder)

    def _dataset(self) -> Any:
        from ..io.dataset import load_dataset

        text = self.dataset_edit.text().strip()
        if not text:
            raise ValueError("no dataset folder: browse to one (a SHREC model_N or a "
                             "napari-shrec simulation)")
        if self._dataset_cache is None or self._dataset_cache[0] != text:
            self._dataset_cache = (text, load_dataset(Path(text).expanduser()))
        return self._dataset_cache[1]

    def _overlay_name(self, key: str) -> str:
        folder = Path(self.dataset_edit.text().strip()).expanduser()
        return f"{folder.name or folder} {OVERLAYS[key]}"

    def _sync_overlay_checks(self) -> None:
        has = bool(self.dataset_edit.text().strip())
        for key, check in self.overlay_checks.items():
            layer = self._layer_by_name(self._overlay_name(key)) if has else None
            check.blockSignals(True)
            check.setChecked(bool(layer is not None and layer.visible))
            check.setEnabled(has)
            check.blockSignals(False)

    def _grandmodel_translate_nm(self, ds: Any) -> tuple[float, float, float]:
        """World position (nm, z y x) of the grandmodel frame's voxel 0 over the tomogram."""
        tomo = self.tomogram_layer()
        vs = float(ds.voxel_size_nm)
        if tomo is None:
            return (float(ds.grandmodel_z_offset) * vs, 0.0, 0.0)
        t = np.asarray(tomo.translate, dtype=float)[-3:]
        meta = tomo.metadata or {}
        if meta.get("frame") == "grandmodel":
            return (float(t[0]), float(t[1]), float(t[2]))
        offset = int(meta.get("grandmodel_z_offset", ds.grandmodel_z_offset))
        return (float(t[0] + offset * self._voxel_size(tomo)[0]), float(t[1]), float(t[2]))

    def show_overlay(self, key: str, visible: bool = True) -> Any:
        """Show (adding it when needed) or hide a dataset overlay: ``key`` one of
        ``"grandmodel"``, ``"class_mask"``, ``"ground_truth"``. Returns the layer (None when
        hidden and never added, or on errors, which go to the status line)."""
        from ..layers import (
            class_mask_to_labels_layer,
            particles_to_points_layer,
            volume_to_image_layer,
        )

        if key not in OVERLAYS:
            raise ValueError(f"unknown overlay {key!r}; one of {', '.join(OVERLAYS)}")
        check = self.overlay_checks[key]
        if check.isChecked() != bool(visible):
            check.blockSignals(True)
            check.setChecked(bool(visible))
            check.blockSignals(False)
        if not self.dataset_edit.text().strip():
            if visible:
                self.status.setText("Choose a dataset folder for the overlays")
            return None
        name = self._overlay_name(key)
        existing = self._layer_by_name(name)
        if existing is not None:
            existing.visible = bool(visible)
            return existing
        if not visible:
            return None
        try:
            ds = self._dataset()
            vs = float(ds.voxel_size_nm)
            base = self._grandmodel_translate_nm(ds)
            offset_vox = tuple(b / vs for b in base)
            meta = {"dataset": str(ds.folder), "frame": "grandmodel",
                    "grandmodel_z_offset": int(ds.grandmodel_z_offset)}
            if key == "grandmodel":
                tup = volume_to_image_layer(ds.read_volume("grandmodel"), name,
                                            translate_zyx_vox=offset_vox, voxel_size_nm=vs,
                                            metadata={**meta, "volume": "grandmodel"},
                                            opacity=0.6, blending="additive",
                                            colormap="magenta")
            elif key == "class_mask":
                tup = class_mask_to_labels_layer(ds.read_class_mask("class_mask"), name,
                                                 class_table=ds.class_table,
                                                 translate_zyx_vox=offset_vox, voxel_size_nm=vs,
                                                 metadata={**meta, "volume": "class_mask"})
            else:
                tup = particles_to_points_layer(ds.particles, name, class_table=ds.class_table,
                                                source="ground truth", voxel_size_nm=vs,
                                                translate_zyx_vox=offset_vox, metadata=meta)
        except (OSError, ValueError, KeyError) as exc:
            report_error(self.status, "Annotate overlay", exc)
            check.blockSignals(True)
            check.setChecked(False)
            check.blockSignals(False)
            return None
        tomo = self.tomogram_layer()
        index = self.viewer.layers.index(tomo) + 1 if tomo is not None else None
        active = self.viewer.layers.selection.active
        layer = show_layer(self.viewer, tup, new_index=index)
        layer.visible = True
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        self.status.setText(f"Showing {name}")
        return layer

    # ================================================================== misc
    def _update_buttons(self) -> None:
        has_layer = self.annotation_layer() is not None
        has_pred = self.predictions_layer() is not None
        self.add_mode_button.setEnabled(has_layer and self.viewer.dims.ndisplay == 2)
        self.apply_class_button.setEnabled(has_layer)
        self.delete_button.setEnabled(has_layer)
        self.save_button.setEnabled(has_layer)
        self.undo_button.setEnabled(bool(self._undo))
        self.redo_button.setEnabled(bool(self._redo))
        for widget in (self.threshold_slider, self.threshold_spin, self.reject_button):
            widget.setEnabled(has_pred)
        self.accept_button.setEnabled(has_pred and has_layer)

    def _fit_width(self) -> None:
        """As wide as the content (no horizontal scrolling); scrolled vertically when short."""
        self._inner.ensurePolished()
        self._scroll.setMinimumWidth(self._inner.minimumSizeHint().width()
                                     + self._scroll.verticalScrollBar().sizeHint().width() + 4)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self._fit_width()  # napari's style sheet (fonts, paddings) applies once docked
        super().showEvent(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self.flush_autosave()
        super().closeEvent(event)


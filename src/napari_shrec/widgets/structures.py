"""Structures dock widget: where each class's structure comes from, its potential map and shape.

The table lists the SHREC'20 classes (paper Table 1) with the source each would be built from
(:meth:`~napari_shrec.core.structures.StructureLibrary.locate`: an atomic model, a map, a download
from the RCSB, the offline surrogate shape, or missing), refreshed whenever the sources or the
download/surrogate switches change. "Build maps" runs
:meth:`~napari_shrec.core.structures.StructureLibrary.build` for the ticked classes in a
:class:`~napari_shrec._workers.TaskRunner` (progress, Cancel) and fills in our shape statistics
beside the paper's; classes that fell back to their surrogate are marked and reported. Selecting a
built row (or "Preview") shows its map as one iso-surface Image layer ``structure: <name>`` in nm;
"Save maps…" writes the built maps as ``<name>.mrc`` + ``structures.json``.

The work itself (:func:`build_structures`) is a core-style function; the widget only gathers
inputs and shows results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._workers import TaskRunner
from ..core.classes import SHREC20_TABLE, ClassTable, ParticleClass
from ..core.progress import CancelToken, ProgressCallback
from ..core.structure_sources import default_cache_dir
from ..core.structures import (
    StructureLibrary,
    StructureMap,
    StructureParams,
)
from ._common import report_error
from ._task_status import TaskStatusWidget

if TYPE_CHECKING:
    import napari

__all__ = ["StructuresWidget", "BuildOutput", "build_structures", "PREVIEW_PREFIX", "COLUMNS"]

log = logging.getLogger(__name__)

#: Name prefix of the preview Image layer: ``"structure: <class name>"``.
PREVIEW_PREFIX = "structure: "

#: Table columns (header text, header tooltip).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "Class id (paper order by molecular weight); tick the classes to build"),
    ("class", "Class name (lower-case PDB id)"),
    ("protein", "Protein"),
    ("kDa", "Molecular weight of the assembly (kDa, paper Table 1)"),
    ("source", "Where the map comes from: atomic-model, map, download (from the RCSB), "
               "surrogate (offline stand-in shape) or missing"),
    ("volume nm³", "Volume of our map's shape mask (nm³)"),
    ("T1 nm³", "Volume in paper Table 1 (nm³)"),
    ("Ψ", "Sphericity of our map's shape mask (1 = ball)"),
    ("T1 Ψ", "Sphericity in paper Table 1"),
    ("r bound nm", "Bounding radius of our map's shape mask: farthest mask voxel from the map "
                   "centre (nm)"),
)
COL_ID, COL_CLASS, COL_PROTEIN, COL_KDA, COL_SOURCE, COL_VOLUME, COL_T1_VOLUME, \
    COL_SPHERICITY, COL_T1_SPHERICITY, COL_BOUNDING = range(len(COLUMNS))

_SURROGATE_BRUSH = QColor(255, 170, 0, 70)  # amber, translucent: readable on dark and light
_MISSING_BRUSH = QColor(230, 40, 40, 70)


@dataclass
class BuildOutput:
    """What :func:`build_structures` hands back to the widget."""

    maps: dict[str, StructureMap]
    params: StructureParams
    fallbacks: list[str] = field(default_factory=list)


def build_structures(
    library: StructureLibrary,
    classes: Sequence[str] | None,
    params: StructureParams,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> BuildOutput:
    """Build the maps of ``classes`` (all when None), recording surrogate fallbacks.

    Runs in a worker thread, so it does not touch the process-wide warning filters: the library
    is asked not to warn, and ``fallbacks`` lists the maps that are surrogates (including a
    saved surrogate given back as a map source).
    """
    maps = library.build(classes, params, progress=progress, cancel=cancel, warn=False)
    fallbacks = [name for name, structure_map in maps.items() if structure_map.is_surrogate]
    return BuildOutput(maps=maps, params=params, fallbacks=fallbacks)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def _source_label(structure_map: StructureMap) -> str:
    kind = structure_map.kind or "?"
    if structure_map.is_surrogate and kind != "surrogate":
        return f"{kind} (surrogate)"
    return kind


def _provenance_tooltip(structure_map: StructureMap) -> str:
    prov = structure_map.provenance
    lines = [f"{structure_map.name}: {_source_label(structure_map)}"]
    if structure_map.is_surrogate:
        lines.append("SURROGATE: an offline stand-in shape with the class's Table 1 volume, "
                     "sphericity and weight, not the real structure")
    for key in ("source", "detail", "assembly", "cache"):
        value = prov.get(key)
        if value:
            lines.append(f"{key}: {value}")
    lines.append(f"map: {' × '.join(map(str, structure_map.potential.shape))} voxels of "
                 f"{structure_map.voxel_size_nm:g} nm")
    return "\n".join(lines)


class StructuresWidget(QWidget):
    """The Structures dock widget (see the module docstring).

    Args:
        napari_viewer: the viewer (a bare ``ViewerModel`` works too).
        cache_dir: where downloads and computed maps are cached (default:
            :func:`~napari_shrec.core.structure_sources.default_cache_dir`, i.e.
            ``$NAPARI_SHREC_CACHE_DIR`` or the user cache directory).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, *,
                 cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.class_table: ClassTable = SHREC20_TABLE
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.runner = TaskRunner()
        #: built maps by class name (merged over builds with the same settings)
        self.maps: dict[str, StructureMap] = {}
        self.last_output: BuildOutput | None = None
        self._built_key: Any = None
        self._pending_key: Any = None
        self._preview_layer: Any = None
        self._rows: dict[str, int] = {}

        # --- sources
        self.source_list = QListWidget()
        self.source_list.setToolTip(
            "Folders (files named by PDB id: 1bxn.cif, 1BXN.pdb, pdb1bxn.ent.gz, 1bxn.mrc …) "
            "and single files searched in order; atomic models win over maps of the same id")
        self.source_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.source_list.setMaximumHeight(90)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setToolTip("Add a folder of structure files named by PDB id")
        self.add_folder_button.clicked.connect(self._browse_folder)
        self.add_file_button = QPushButton("Add file…")
        self.add_file_button.setToolTip("Add one structure file (atomic model or map); it "
                                        "counts for the class its name starts with")
        self.add_file_button.clicked.connect(self._browse_file)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected sources")
        self.remove_button.clicked.connect(self.remove_selected_sources)
        source_buttons = QHBoxLayout()
        source_buttons.addWidget(self.add_folder_button)
        source_buttons.addWidget(self.add_file_button)
        source_buttons.addWidget(self.remove_button)
        sources_box = QGroupBox("Sources")
        sources_layout = QVBoxLayout()
        sources_layout.addWidget(self.source_list)
        sources_layout.addLayout(source_buttons)
        sources_box.setLayout(sources_layout)

        # --- parameters
        self.voxel_spin = QDoubleSpinBox()
        self.voxel_spin.setRange(0.05, 20.0)
        self.voxel_spin.setDecimals(3)
        self.voxel_spin.setSingleStep(0.1)
        self.voxel_spin.setValue(1.0)
        self.voxel_spin.setSuffix(" nm")
        self.voxel_spin.setToolTip("Edge of the cubic voxels of the maps (nm); SHREC'20 uses "
                                   "1 nm")
        self.resolution_spin = QDoubleSpinBox()
        self.resolution_spin.setRange(0.0, 20.0)
        self.resolution_spin.setDecimals(2)
        self.resolution_spin.setSingleStep(0.1)
        self.resolution_spin.setValue(0.0)
        self.resolution_spin.setSuffix(" nm")
        self.resolution_spin.setSpecialValueText("none")
        self.resolution_spin.setToolTip("Optional Gaussian low-pass to this resolution (nm; "
                                        "σ = 0.225 × resolution); 0 = none")
        self.bfactor_spin = QDoubleSpinBox()
        self.bfactor_spin.setRange(0.0, 1000.0)
        self.bfactor_spin.setDecimals(1)
        self.bfactor_spin.setSingleStep(10.0)
        self.bfactor_spin.setValue(0.0)
        self.bfactor_spin.setSuffix(" Å²")
        self.bfactor_spin.setToolTip("Isotropic B-factor added to every atom (Å²); blurs "
                                     "atomic models, 0 = none")
        self.download_check = QCheckBox("Download missing from the RCSB")
        self.download_check.setChecked(True)
        self.download_check.setToolTip("Fetch classes without a local file by PDB id from "
                                       "files.rcsb.org into the cache directory")
        self.surrogates_check = QCheckBox("Use surrogates when unavailable")
        self.surrogates_check.setChecked(True)
        self.surrogates_check.setToolTip("Fall back to an offline stand-in shape with the "
                                         "class's Table 1 volume (nm³), sphericity and weight "
                                         "(kDa) when no structure can be had")
        self.cache_label = QLabel()
        self.cache_label.setWordWrap(True)
        self.cache_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cache_label.setToolTip("Where downloads and computed maps are cached (set "
                                    "NAPARI_SHREC_CACHE_DIR to move it)")
        self._show_cache_dir()
        params_form = QFormLayout()
        params_form.addRow("Voxel size", self.voxel_spin)
        params_form.addRow("Resolution", self.resolution_spin)
        params_form.addRow("B-factor", self.bfactor_spin)
        params_form.addRow(self.download_check)
        params_form.addRow(self.surrogates_check)
        params_form.addRow("Cache", self.cache_label)
        params_box = QGroupBox("Maps")
        params_box.setLayout(params_form)

        # --- class table
        self.table = QTableWidget(0, len(COLUMNS))
        for column, (text, tip) in enumerate(COLUMNS):
            header = QTableWidgetItem(text)
            header.setToolTip(tip)
            self.table.setHorizontalHeaderItem(column, header)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Tick the classes to build; select a built row to preview its map")
        self._fill_table()
        self.table.itemSelectionChanged.connect(self._on_selection_changed)

        # --- actions
        self.build_button = QPushButton("Build maps")
        self.build_button.setToolTip("Build the potential maps (V) of the ticked classes "
                                     "(cached: a second build is fast)")
        self.build_button.clicked.connect(lambda: self.start_build())
        self.save_button = QPushButton("Save maps…")
        self.save_button.setToolTip("Write the built maps as <name>.mrc (V) plus "
                                    "structures.json into a folder")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_clicked)
        self.preview_button = QPushButton("Preview")
        self.preview_button.setToolTip("Show the selected class's map as an iso-surface layer "
                                       "(scaled in nm)")
        self.preview_button.setEnabled(False)
        self.preview_button.clicked.connect(lambda: self.preview())
        self.view3d_check = QCheckBox("3D view")
        self.view3d_check.setToolTip("Switch the viewer to 3D display to see the iso-surface")
        self.view3d_check.setChecked(self.viewer.dims.ndisplay == 3)
        self.view3d_check.toggled.connect(self.set_3d)
        self.viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self.status = TaskStatusWidget(self.runner)
        self.runner.busy_changed.connect(self._on_busy_changed)
        self._input_boxes = (sources_box, params_box)

        action_row = QHBoxLayout()
        action_row.addWidget(self.build_button)
        action_row.addWidget(self.save_button)
        preview_row = QHBoxLayout()
        preview_row.addWidget(self.preview_button)
        preview_row.addWidget(self.view3d_check)

        layout = QVBoxLayout()
        layout.addWidget(sources_box)
        layout.addWidget(params_box)
        layout.addWidget(self.table, 1)
        layout.addLayout(action_row)
        layout.addWidget(self.status)
        layout.addLayout(preview_row)
        self.setLayout(layout)

        for check in (self.download_check, self.surrogates_check):
            check.toggled.connect(lambda *_: self.refresh_sources())
        self.refresh_sources()

    # ------------------------------------------------------------------ table
    def _classes(self) -> list[ParticleClass]:
        return list(self.class_table)

    def _fill_table(self) -> None:
        classes = self._classes()
        self.table.blockSignals(True)
        self.table.setRowCount(len(classes))
        self._rows = {}
        for row, cls in enumerate(classes):
            self._rows[cls.name] = row
            id_item = QTableWidgetItem(str(cls.id))
            id_item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                             | Qt.ItemFlag.ItemIsUserCheckable)
            id_item.setCheckState(Qt.CheckState.Checked)
            r, g, b = (int(round(255 * c)) for c in cls.color)
            id_item.setData(Qt.ItemDataRole.DecorationRole, QColor(r, g, b))
            self.table.setItem(row, COL_ID, id_item)
            texts = {COL_CLASS: cls.name, COL_PROTEIN: cls.description,
                     COL_KDA: _fmt(cls.weight_kda, 1), COL_SOURCE: "",
                     COL_VOLUME: "", COL_T1_VOLUME: _fmt(cls.volume_nm3, 0),
                     COL_SPHERICITY: "", COL_T1_SPHERICITY: _fmt(cls.sphericity, 2),
                     COL_BOUNDING: ""}
            for column, text in texts.items():
                self.table.setItem(row, column, self._cell(text))
        self.table.blockSignals(False)

    @staticmethod
    def _cell(text: str, tooltip: str = "") -> QTableWidgetItem:
        item = QTableWidgetItem(text)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        if tooltip:
            item.setToolTip(tooltip)
        return item

    def row_of(self, name: str) -> int:
        """Table row of a class (by name)."""
        return self._rows[self.class_table.canonical_name(name)]

    def cell_text(self, name: str, column: int) -> str:
        """Text of a class's cell (column: one of the ``COL_*`` constants)."""
        item = self.table.item(self.row_of(name), column)
        return item.text() if item is not None else ""

    def _set_cell(self, row: int, column: int, text: str, tooltip: str = "") -> None:
        self.table.blockSignals(True)
        item = self.table.item(row, column)
        if item is None:
            self.table.setItem(row, column, self._cell(text, tooltip))
        else:
            item.setText(text)
            item.setToolTip(tooltip)
        self.table.blockSignals(False)

    def _set_row_background(self, row: int, color: QColor | None) -> None:
        self.table.blockSignals(True)
        brush = QBrush(color) if color is not None else QBrush()
        for column in range(1, len(COLUMNS)):
            item = self.table.item(row, column)
            if item is not None:
                item.setBackground(brush)
        self.table.blockSignals(False)

    def checked_classes(self) -> list[str]:
        """Names of the ticked classes, in table order."""
        names = []
        for cls in self._classes():
            item = self.table.item(self._rows[cls.name], COL_ID)
            if item.checkState() == Qt.CheckState.Checked:
                names.append(cls.name)
        return names

    def set_checked_classes(self, names: Iterable[str]) -> None:
        """Tick exactly these classes (by name)."""
        wanted = {self.class_table.canonical_name(n) for n in names}
        self.table.blockSignals(True)
        for name, row in self._rows.items():
            self.table.item(row, COL_ID).setCheckState(
                Qt.CheckState.Checked if name in wanted else Qt.CheckState.Unchecked)
        self.table.blockSignals(False)

    def selected_class(self) -> str | None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if not rows:
            return None
        item = self.table.item(min(rows), COL_CLASS)
        return item.text() if item is not None else None

    # ------------------------------------------------------------------ sources
    def sources(self) -> list[Path]:
        """The source folders/files, in search order."""
        return [Path(self.source_list.item(i).text()) for i in range(self.source_list.count())]

    def set_sources(self, paths: Iterable[str | os.PathLike]) -> None:
        """Replace the source list (no check here: a missing path is reported by the refresh)."""
        self.source_list.clear()
        for path in paths:
            self.source_list.addItem(str(Path(path).expanduser()))
        self.refresh_sources()

    def add_source(self, path: str | os.PathLike) -> bool:
        """Append a folder or file; a path that does not exist is refused with a message."""
        source = Path(path).expanduser()
        if not source.exists():
            self._show_error(FileNotFoundError(f"structure source {source} does not exist"))
            return False
        if source in self.sources():
            return False
        self.source_list.addItem(str(source))
        self.refresh_sources()
        return True

    def remove_selected_sources(self) -> None:
        rows = sorted((self.source_list.row(item) for item in self.source_list.selectedItems()),
                      reverse=True)
        for row in rows:
            self.source_list.takeItem(row)
        if rows:
            self.refresh_sources()

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of structure files")
        if folder:
            self.add_source(folder)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Structure file", "",
            "Structures (*.cif *.mmcif *.pdb *.ent *.gz *.mrc *.map *.ccp4);;All files (*)")
        if path:
            self.add_source(path)

    def _show_cache_dir(self) -> None:
        self.cache_label.setText(str(self.cache_dir))

    def library(self) -> StructureLibrary:
        """A library with the widget's sources and switches.

        Raises:
            FileNotFoundError: a source path does not exist.
        """
        return StructureLibrary(self.sources(), cache_dir=self.cache_dir,
                                download=self.download_check.isChecked(),
                                surrogates=self.surrogates_check.isChecked(),
                                class_table=self.class_table)

    def params(self) -> StructureParams:
        """The map parameters set in the widget.

        Raises:
            ValueError: invalid values (from :class:`StructureParams`).
        """
        resolution = float(self.resolution_spin.value())
        return StructureParams(voxel_size_nm=float(self.voxel_spin.value()),
                               b_factor_a2=float(self.bfactor_spin.value()),
                               resolution_nm=resolution if resolution > 0 else None)

    def refresh_sources(self) -> None:
        """Show, per class, where its map would come from (no building, no download)."""
        self._show_cache_dir()
        try:
            library = self.library()
        except (FileNotFoundError, ValueError) as exc:
            for row in self._rows.values():
                self._set_cell(row, COL_SOURCE, "?", "fix the source list first")
                self._set_row_background(row, None)
            self._show_error(exc)
            return
        for cls in self._classes():
            row = self._rows[cls.name]
            built = self.maps.get(cls.name)
            if built is not None and self._built_key == self._settings_key_or_none():
                self._show_map_source(row, built)
                continue
            try:
                source = library.locate(cls)
            except Exception as exc:  # noqa: BLE001 - one unreadable folder must not break all
                self._set_cell(row, COL_SOURCE, "?", str(exc))
                continue
            tip = f"{source.kind}: {source.path}" if source.path else source.kind
            if source.detail:
                tip += f" ({source.detail})"
            self._set_cell(row, COL_SOURCE, source.kind, tip)
            self._set_row_background(row, _SURROGATE_BRUSH if source.kind == "surrogate"
                                     else _MISSING_BRUSH if source.kind == "missing" else None)

    def _show_map_source(self, row: int, structure_map: StructureMap) -> None:
        self._set_cell(row, COL_SOURCE, _source_label(structure_map),
                       _provenance_tooltip(structure_map))
        self._set_row_background(row, _SURROGATE_BRUSH if structure_map.is_surrogate else None)

    # ------------------------------------------------------------------ building
    def _settings_key(self) -> Any:
        return (self.params(), tuple(self.sources()), self.download_check.isChecked(),
                self.surrogates_check.isChecked(), str(self.cache_dir))

    def _settings_key_or_none(self) -> Any:
        try:
            return self._settings_key()
        except ValueError:
            return None

    def start_build(self, classes: Sequence[str] | None = None) -> None:
        """Build the maps of ``classes`` (default: the ticked rows) in the task runner.

        Errors (a missing source, an unavailable structure, an unreadable file) are shown in
        the status line and as a napari notification, never raised.
        """
        try:
            names = self.checked_classes() if classes is None else [
                self.class_table.canonical_name(c) for c in classes]
            if not names:
                raise ValueError("tick at least one class to build")
            library = self.library()
            params = self.params()
            key = self._settings_key()
        except (ValueError, FileNotFoundError, KeyError) as exc:
            self._show_error(exc)
            return
        self._pending_key = key
        self.runner.start(build_structures, library, names, params,
                          on_result=self._on_result, on_error=self._show_error,
                          on_cancelled=self._on_cancelled,
                          description=f"Building {len(names)} structure map"
                                      + ("s" if len(names) != 1 else ""))

    def _on_busy_changed(self, busy: bool) -> None:
        self.build_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and bool(self.maps))
        for box in self._input_boxes:  # the inputs of the running build stay as they were
            box.setEnabled(not busy)

    def _on_cancelled(self) -> None:
        self.status.status.setText("Cancelled; maps built before are kept")

    def _show_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Structures", exc)

    def _on_result(self, output: BuildOutput) -> None:
        if self._pending_key != self._built_key:
            self.maps = {}  # other settings: earlier maps would not match these
            self._built_key = self._pending_key
        self.maps.update(output.maps)
        self.last_output = output
        for name, structure_map in output.maps.items():
            if name in self._rows:
                self._show_map_row(self._rows[name], structure_map)
        self.save_button.setEnabled(bool(self.maps) and not self.runner.busy)
        self._on_selection_changed()
        n = len(output.maps)
        text = f"Built {n} map{'s' if n != 1 else ''}"
        if output.fallbacks:
            fell = ", ".join(output.fallbacks)
            text += f"; surrogate shape used for {fell} (not the real structure)"
            try:
                from napari.utils.notifications import show_warning

                show_warning(f"Structures: {fell} fell back to the offline surrogate shape")
            except Exception:
                log.warning("Structures: %s fell back to the offline surrogate shape", fell)
        self.status.status.setText(text)

    def _show_map_row(self, row: int, structure_map: StructureMap) -> None:
        from ..io.structures import table1_comparison

        metrics = structure_map.metrics
        comparison = table1_comparison(structure_map, self.class_table) or {}
        volume_tip = (f"ours / Table 1 = {comparison['volume_ratio']:.2f}"
                      if "volume_ratio" in comparison else "")
        sph_tip = (f"ours − Table 1 = {comparison['sphericity_difference']:+.3f}"
                   if "sphericity_difference" in comparison else "")
        vs = structure_map.voxel_size_nm
        self._set_cell(row, COL_VOLUME, _fmt(metrics.volume_nm3, 0),
                       f"{volume_tip}; mask ≥ {metrics.threshold_v:g} V at {vs:g} nm voxels")
        self._set_cell(row, COL_SPHERICITY, _fmt(metrics.sphericity, 2), sph_tip)
        self._set_cell(row, COL_BOUNDING, _fmt(metrics.bounding_radius_nm, 1),
                       f"equivalent radius {metrics.equivalent_radius_nm:.1f} nm, effective "
                       f"radius {metrics.effective_radius_nm:.1f} nm")
        self._show_map_source(row, structure_map)
        font = QFont()
        font.setItalic(structure_map.is_surrogate)
        item = self.table.item(row, COL_SOURCE)
        if item is not None:
            self.table.blockSignals(True)
            item.setFont(font)
            self.table.blockSignals(False)

    # ------------------------------------------------------------------ saving
    def save_maps(self, folder: str | os.PathLike, overwrite: bool = False) -> list[Path]:
        """Write the built maps into ``folder`` (``<name>.mrc`` + ``structures.json``).

        Raises:
            ValueError: nothing built yet.
            FileExistsError: a target exists and ``overwrite`` is False (nothing is written).
        """
        from ..io.structures import write_structure_maps

        if not self.maps:
            raise ValueError("build the maps first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = write_structure_maps(self.maps, folder, overwrite=overwrite,
                                       class_table=self.class_table)
        self.status.status.setText(f"Saved {len(self.maps)} maps to {folder}")
        return written

    def _save_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save structure maps into")
        if not folder:
            return
        try:
            self.save_maps(folder)
        except FileExistsError as exc:
            answer = QMessageBox.question(
                self, "Replace structure maps?",
                f"{exc.args[0] if exc.args else exc}\n\nReplace the existing maps and "
                "structures.json in this folder?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                self.status.status.setText("Not saved: the folder already holds maps")
                return
            try:
                self.save_maps(folder, overwrite=True)
            except (OSError, ValueError) as again:
                self._show_error(again)
        except (OSError, ValueError) as other:
            self._show_error(other)

    # ------------------------------------------------------------------ preview
    def _on_selection_changed(self) -> None:
        name = self.selected_class()
        built = name is not None and name in self.maps
        self.preview_button.setEnabled(built)
        if built:
            self.preview(name)

    def preview(self, name: str | None = None) -> Any:
        """Show a built map as the one preview layer ``structure: <name>``; returns the layer.

        The layer replaces any earlier preview (of this or another class). Without ``name``,
        the selected row's class is shown. Errors are reported, not raised (returns None).
        """
        try:
            if name is None:
                name = self.selected_class()
                if name is None:
                    raise ValueError("select a class in the table first")
            name = self.class_table.canonical_name(name) if name in self.class_table else name
            structure_map = self.maps.get(name)
            if structure_map is None:
                raise ValueError(f"build the map of {name} first")
        except (ValueError, KeyError) as exc:
            self._show_error(exc)
            return None
        self._remove_previews(keep=None)
        vs = float(structure_map.voxel_size_nm)
        threshold = float(structure_map.metrics.threshold_v)
        top = max(float(np.max(structure_map.potential)), threshold * 1.01, 1e-6)
        kwargs: dict[str, Any] = dict(
            name=PREVIEW_PREFIX + name, scale=(vs, vs, vs), rendering="iso",
            iso_threshold=threshold, contrast_limits=(0.0, top),
            metadata={"napari_shrec": {"structure": structure_map.summary()}})
        colormap = self._class_colormap(name, threshold / top)
        try:
            layer = self.viewer.add_image(structure_map.potential, colormap=colormap or "gray",
                                          **kwargs)
        except Exception:  # noqa: BLE001 - a colormap napari refuses: fall back to grey
            log.debug("class colormap refused", exc_info=True)
            layer = self.viewer.add_image(structure_map.potential, colormap="gray", **kwargs)
        self._preview_layer = layer
        if self.view3d_check.isChecked():
            self.set_3d(True)
        return layer

    def _class_colormap(self, name: str, threshold_fraction: float) -> Any:
        """Transparent below the mask threshold, the class colour at it, lighter above."""
        if name not in self.class_table:
            return None
        try:
            from napari.utils.colormaps import Colormap

            rgb = np.asarray(self.class_table.by_name(name).color, dtype=float)
            light = rgb + (1.0 - rgb) * 0.5
            t = float(min(max(threshold_fraction, 0.01), 0.99))
            return Colormap([[0.0, 0.0, 0.0, 0.0], [*rgb, 1.0], [*light, 1.0]],
                            controls=[0.0, t, 1.0], name=f"structure {name}")
        except Exception:  # noqa: BLE001 - any problem: plain grey
            log.debug("could not make the class colormap", exc_info=True)
            return None

    def _remove_previews(self, keep: Any) -> None:
        layers = self.viewer.layers
        doomed = [layer for layer in list(layers) if layer is not keep and (
            layer is self._preview_layer or (layer.name.startswith(PREVIEW_PREFIX)
                                              and "structure" in (layer.metadata or {}).get(
                                                  "napari_shrec", {})))]
        for layer in doomed:
            if layer in layers:
                layers.remove(layer)
        self._preview_layer = None

    def set_3d(self, on: bool = True) -> None:
        """Switch the viewer to 3D (or back to 2D) display."""
        self.viewer.dims.ndisplay = 3 if on else 2
        if self.view3d_check.isChecked() != bool(on):
            self.view3d_check.blockSignals(True)
            self.view3d_check.setChecked(bool(on))
            self.view3d_check.blockSignals(False)

    def _on_ndisplay(self, event: Any = None) -> None:
        try:
            self.view3d_check.blockSignals(True)
            self.view3d_check.setChecked(self.viewer.dims.ndisplay == 3)
            self.view3d_check.blockSignals(False)
        except RuntimeError:  # the dock widget was closed (its Qt objects are gone)
            self.viewer.dims.events.ndisplay.disconnect(self._on_ndisplay)

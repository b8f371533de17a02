"""Simulate dock widget: a SHREC'20-style dataset (grandmodel, masks, particles, tilt series).

The inputs, grouped as Sample / Structures / Microscope / Output, become
:func:`~napari_shrec.core.simulate.simulation_params`; "Simulate" runs
:func:`simulate_dataset` (:func:`~napari_shrec.core.simulate.run_simulation` plus the layer data)
in a :class:`~napari_shrec._workers.TaskRunner` (napari progress bar, Cancel). The dataset folder
it writes is the one ``napari-shrec simulate`` writes and the dataset reader opens.

On success these layers are added, or replaced by name (same position, same visibility):

- ``grandmodel`` (Image): the sample potential with structural noise (V);
- ``reconstruction`` (Image): the weighted back-projection of the tilt series the simulation
  wrote (``reconstruction.mrc``), in the grandmodel's frame (same shape, translate 0); only with
  a tilt series (a stale one from an earlier simulation is removed otherwise);
- ``class mask`` (Labels, hidden): class ids in the class colours;
- ``particles (ground truth)`` (Points): coloured and sized by class;
- ``projections`` (Image, hidden, at the bottom of the layer list): the tilt series
  (tilt, y, x), scale (1, pixel, pixel) — it has its own shape, so it is kept out of the way
  of the 3D view; a stale one from an earlier simulation is removed when the tilt series is off.

Volumes are scaled by the voxel size (nm) and built with :mod:`napari_shrec.layers` from the
dataset the simulation wrote (class table, particle list), so they look exactly like the dataset
reader's. Every layer's ``metadata["napari_shrec"]`` holds the simulation folder, seed and
parameters; ``metadata["dataset"]`` names the folder, so the Score widget picks it up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._workers import TaskRunner
from ..core.progress import CancelToken, ProgressCallback
from ..core.simulate import (
    PRESETS,
    SimulationParams,
    SimulationResult,
    default_structure_sources,
    run_simulation,
    simulation_params,
)
from ..core.tiltseries import shrec_tilt_angles
from ._common import float_spin, int_spin, report_error, show_layer, warm_up_labels_colormap
from ._task_status import TaskStatusWidget

if TYPE_CHECKING:
    import napari

    from ..layers import LayerDataTuple

__all__ = [
    "SimulateWidget",
    "SimulateOutput",
    "simulate_dataset",
    "output_files",
    "default_output_folder",
    "LAYER_GRANDMODEL",
    "LAYER_CLASS_MASK",
    "LAYER_PARTICLES",
    "LAYER_PROJECTIONS",
    "LAYER_NAMES",
]

log = logging.getLogger(__name__)

LAYER_GRANDMODEL = "grandmodel"
LAYER_RECONSTRUCTION = "reconstruction"
LAYER_CLASS_MASK = "class mask"
LAYER_PARTICLES = "particles (ground truth)"
LAYER_PROJECTIONS = "projections"
#: Names of the layers a simulation adds (reconstruction and projections only with a tilt
#: series).
LAYER_NAMES: tuple[str, ...] = (LAYER_GRANDMODEL, LAYER_RECONSTRUCTION, LAYER_CLASS_MASK,
                                LAYER_PARTICLES, LAYER_PROJECTIONS)
#: Layers of an earlier simulation removed when the new one has none of that name.
_TILT_SERIES_LAYERS: tuple[str, ...] = (LAYER_RECONSTRUCTION, LAYER_PROJECTIONS)

PRESET_NAMES: tuple[str, ...] = ("small", "shrec2020")
ORIENTATION_SAMPLERS: tuple[str, ...] = ("uniform", "shrec2020")
NOISE_MODES: tuple[str, ...] = ("gaussian", "dose", "none")
DEFAULT_OUTPUT_ROOT = Path("~") / "napari-shrec"

_VOLUME_FILES = ("grandmodel", "grandmodel_noisefree", "class_mask", "class_bbox",
                 "occupancy_mask", "occupancy_bbox")
_TILT_FILES = ("projections.mrc", "projections_noisefree.mrc", "reconstruction.mrc",
               "projections.tlt", "alignment_simulated.txt")


def output_files(tilt_series: bool = True) -> list[str]:
    """Names of the files :func:`~napari_shrec.core.simulate.run_simulation` writes."""
    names = [f"{name}.mrc" for name in _VOLUME_FILES]
    if tilt_series:
        names += list(_TILT_FILES)
    return names + ["particle_locations.txt", "simulation.json"]


def default_output_folder(root: str | os.PathLike | None = None) -> Path:
    """The first ``<root>/sim-<n>`` (n = 1, 2, …) that does not exist yet; root defaults to
    ``~/napari-shrec``. Nothing is created."""
    base = Path(root if root is not None else DEFAULT_OUTPUT_ROOT).expanduser()
    n = 1
    while (base / f"sim-{n}").exists():
        n += 1
    return base / f"sim-{n}"


@dataclass
class SimulateOutput:
    """What :func:`simulate_dataset` hands back to the widget."""

    result: SimulationResult
    params: SimulationParams
    #: layer-data tuples by layer name (see the module docstring), in the order to add them
    layers: dict[str, LayerDataTuple] = field(default_factory=dict)
    elapsed_s: float = 0.0


def simulate_dataset(
    params: SimulationParams,
    folder: str | os.PathLike,
    overwrite: bool = False,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SimulateOutput:
    """Run the simulation into ``folder`` and build its layer data (no napari, no Qt).

    The layers come from the arrays in memory (no memory map of a file a later run may
    replace) with the class table and particle list of the dataset as the reader loads it.

    Raises:
        FileExistsError: outputs exist and ``overwrite`` is False (nothing written).
        Cancelled: the token was cancelled (no ``simulation.json`` is written).
        StructureUnavailableError, ValueError, OSError: from the core.
    """
    start = time.perf_counter()
    result = run_simulation(params, folder, overwrite=overwrite, progress=progress,
                            cancel=cancel)
    layers = simulation_layers(result, params)
    warm_up_labels_colormap(layers[LAYER_CLASS_MASK])  # off the GUI thread (see its notes)
    return SimulateOutput(result=result, params=params, layers=layers,
                          elapsed_s=time.perf_counter() - start)


def simulation_layers(result: SimulationResult, params: SimulationParams
                      ) -> dict[str, LayerDataTuple]:
    """Layer-data tuples of a finished simulation, keyed by layer name (see the module notes)."""
    from ..core.volume import Volume
    from ..io.dataset import load_dataset
    from ..layers import (
        class_mask_to_labels_layer,
        particles_to_points_layer,
        volume_to_image_layer,
    )

    ds = load_dataset(result.folder)
    vs = float(result.grandmodel.voxel_size_nm)
    folder = str(result.folder)
    provenance = {"napari_shrec": {"simulation_folder": folder, "seed": int(params.seed),
                                   "params": params.to_dict()}}
    common: dict[str, Any] = {"dataset": folder, "flavour": ds.flavour,
                              "grandmodel_z_offset": int(ds.grandmodel_z_offset), **provenance}
    grandmodel = result.grandmodel
    layers: dict[str, LayerDataTuple] = {}
    layers[LAYER_GRANDMODEL] = volume_to_image_layer(
        Volume(grandmodel.potential, (vs, vs, vs),
               metadata={"source": str(result.folder / "grandmodel.mrc")}),
        LAYER_GRANDMODEL, visible=True, voxel_size_nm=vs,
        metadata={**common, "volume": "grandmodel", "frame": "grandmodel"})
    if result.tiltseries is not None and ds.has("reconstruction"):
        # read whole (no memory map of a file a later run may replace); the simulation
        # reconstructs in the grandmodel's frame, so it lies on the grandmodel at translate 0
        reconstruction = ds.read_volume("reconstruction", mmap=False)
        layers[LAYER_RECONSTRUCTION] = volume_to_image_layer(
            Volume(np.asarray(reconstruction.data), (vs, vs, vs),
                   metadata={"source": str(ds.path_of("reconstruction"))}),
            LAYER_RECONSTRUCTION, visible=True, voxel_size_nm=vs,
            metadata={**common, "volume": "reconstruction", "frame": "grandmodel",
                      "grandmodel_z_offset": 0})
    # a copy: painting on the Labels layer must not change last_result's mask
    layers[LAYER_CLASS_MASK] = class_mask_to_labels_layer(
        Volume(np.array(grandmodel.class_mask, copy=True), (vs, vs, vs),
               metadata={"source": str(result.folder / "class_mask.mrc")}),
        LAYER_CLASS_MASK, class_table=ds.class_table, visible=False, voxel_size_nm=vs,
        metadata={**common, "volume": "class_mask", "frame": "grandmodel"})
    layers[LAYER_PARTICLES] = particles_to_points_layer(
        ds.particles, LAYER_PARTICLES, class_table=ds.class_table, source="ground truth",
        voxel_size_nm=vs, visible=True, metadata={**common, "frame": "grandmodel"})
    if result.tiltseries is not None:
        ts = result.tiltseries
        pixel = float(ts.pixel_size_nm)
        # its own shape (tilt, y, x): one world unit per tilt, so it never stretches the
        # volume's z range (n_tilts ≤ z in every preset)
        data, kwargs, kind = volume_to_image_layer(
            Volume(ts.projections, (1.0, pixel, pixel),
                   metadata={"source": str(result.folder / "projections.mrc"),
                             "is_image_stack": True}),
            LAYER_PROJECTIONS, visible=False, voxel_size_nm=(1.0, pixel, pixel),
            metadata={**common, "volume": "projections", "frame": "tilt series",
                      "tilt_angles_deg": [float(a) for a in ts.tilt_angles_deg]})
        kwargs["axis_labels"] = ("tilt", "y", "x")
        layers[LAYER_PROJECTIONS] = (data, kwargs, kind)
    return layers


class SimulateWidget(QWidget):
    """The Simulate dock widget (see the module docstring).

    Attributes:
        last_result: the :class:`~napari_shrec.core.simulate.SimulationResult` of the last
            successful run (None before).
        last_folder: its dataset folder (None before).
        last_output: the :class:`SimulateOutput` (result, parameters, layer data).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner = TaskRunner()
        self.last_result: SimulationResult | None = None
        self.last_folder: Path | None = None
        self.last_output: SimulateOutput | None = None
        self._auto_folder: Path | None = None

        # --- sample
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESET_NAMES))
        self.preset_combo.setToolTip(
            "small: 64 × 128 × 128 voxels, 30–40 particles (seconds); shrec2020: the paper's "
            "200 × 512 × 512 voxels of 1 nm with 2400–2800 particles (minutes). Choosing one "
            "fills the size and particle-count fields")
        self.seed_spin = int_spin(0, 2**31 - 1, 0, "Random seed: the same seed and inputs give "
                               "the same files")
        self.z_spin = int_spin(1, 4096, 64, "Volume depth along the beam (z, voxels of 1 nm)",
                            " vox")
        self.y_spin = int_spin(1, 4096, 128, "Volume height (y, voxels of 1 nm); the tilt axis",
                            " vox")
        self.x_spin = int_spin(1, 4096, 128, "Volume width (x, voxels of 1 nm)", " vox")
        self.min_particles_spin = int_spin(0, 1_000_000, 30, "Fewest particles to place; the "
                                        "count is drawn uniformly between min and max")
        self.max_particles_spin = int_spin(0, 1_000_000, 40, "Most particles to place; those "
                                        "that find no free room are reported, not placed")
        self.orientation_combo = QComboBox()
        self.orientation_combo.addItems(list(ORIENTATION_SAMPLERS))
        self.orientation_combo.setToolTip(
            "uniform: orientations uniform over SO(3) (default); shrec2020: the released "
            "SHREC'20 simulator's biased ZXZ sampling (for compatibility)")
        size_row = QHBoxLayout()
        for spin in (self.z_spin, self.y_spin, self.x_spin):
            size_row.addWidget(spin)
        count_row = QHBoxLayout()
        count_row.addWidget(self.min_particles_spin)
        count_row.addWidget(self.max_particles_spin)
        sample_form = QFormLayout()
        sample_form.addRow("Preset", self.preset_combo)
        sample_form.addRow("Seed", self.seed_spin)
        sample_form.addRow("Size z, y, x", size_row)
        sample_form.addRow("Particles min, max", count_row)
        sample_form.addRow("Orientations", self.orientation_combo)
        sample_box = QGroupBox("Sample")
        sample_box.setLayout(sample_form)

        # --- structures
        self.source_list = QListWidget()
        self.source_list.setToolTip(
            "Folders of structure files named by PDB id (1bxn.cif, 1BXN.pdb, 1bxn.mrc …), "
            "searched in order; default: $NAPARI_SHREC_STRUCTURES")
        self.source_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.source_list.setMaximumHeight(80)
        self.add_source_button = QPushButton("Add folder…")
        self.add_source_button.setToolTip("Add a folder of structure files named by PDB id")
        self.add_source_button.clicked.connect(self._browse_source)
        self.remove_source_button = QPushButton("Remove")
        self.remove_source_button.setToolTip("Remove the selected folders")
        self.remove_source_button.clicked.connect(self.remove_selected_sources)
        self.download_check = QCheckBox("Download missing structures")
        self.download_check.setChecked(True)
        self.download_check.setToolTip("Fetch classes without a local file by PDB id from "
                                       "files.rcsb.org into the cache directory")
        self.surrogates_check = QCheckBox("Use surrogate shapes")
        self.surrogates_check.setChecked(True)
        self.surrogates_check.setToolTip(
            "Classes with no structure file (and no download) use an offline stand-in shape "
            "with their Table 1 volume (nm³), sphericity and weight (kDa); off: such a class "
            "stops the simulation")
        source_buttons = QHBoxLayout()
        source_buttons.addWidget(self.add_source_button)
        source_buttons.addWidget(self.remove_source_button)
        structures_layout = QVBoxLayout()
        structures_layout.addWidget(self.source_list)
        structures_layout.addLayout(source_buttons)
        structures_layout.addWidget(self.download_check)
        structures_layout.addWidget(self.surrogates_check)
        structures_box = QGroupBox("Structures")
        structures_box.setLayout(structures_layout)

        # --- microscope
        self.ground_truth_only_check = QCheckBox("Ground truth only (no tilt series)")
        self.ground_truth_only_check.setToolTip(
            "Write only the grandmodel, the masks and the particle list (much faster)")
        self.tilt_start_spin = float_spin(-89.9, 89.9, -60.0, 1, 1.0, "First tilt angle "
                                            "(degrees)", " °")
        self.tilt_stop_spin = float_spin(-89.9, 89.9, 60.0, 1, 1.0, "Last tilt angle "
                                           "(degrees, inclusive)", " °")
        self.tilt_step_spin = float_spin(0.1, 90.0, 3.0, 1, 0.5, "Tilt increment (degrees); "
                                           "SHREC'20: −60:3:60, 41 tilts", " °")
        self.defocus_spin = float_spin(-20.0, 20.0, 3.0, 2, 0.5, "Defocus at the sample's "
                                         "central plane (µm, underfocus positive); SHREC'20: "
                                         "3 µm", " µm")
        self.noise_combo = QComboBox()
        self.noise_combo.addItems(list(NOISE_MODES))
        self.noise_combo.setToolTip("Detector noise: gaussian at the SNR below; dose: Poisson "
                                    "noise at the dose below; none: noise-free projections")
        self.snr_spin = float_spin(0.00001, 1000.0, 0.004, 5, 0.001,
                                     "Signal-to-noise ratio on the SHREC'20 paper's scale (no "
                                     "unit; SHREC'20: 0.004). The image ratio var(noise-free "
                                     "image) / var(noise) per tilt is 75 × this (0.004 → 0.3)")
        self.dose_spin = float_spin(0.1, 1e6, 300.0, 1, 50.0, "Electron dose per tilt "
                                      "(e⁻/nm²), for dose noise", " e⁻/nm²")
        tilt_row = QHBoxLayout()
        for spin in (self.tilt_start_spin, self.tilt_stop_spin, self.tilt_step_spin):
            tilt_row.addWidget(spin)
        microscope_form = QFormLayout()
        microscope_form.addRow(self.ground_truth_only_check)
        microscope_form.addRow("Tilts start, stop, step", tilt_row)
        microscope_form.addRow("Defocus", self.defocus_spin)
        microscope_form.addRow("Noise", self.noise_combo)
        microscope_form.addRow("SNR", self.snr_spin)
        microscope_form.addRow("Dose", self.dose_spin)
        microscope_box = QGroupBox("Microscope")
        microscope_box.setLayout(microscope_form)
        self._tilt_widgets = (self.tilt_start_spin, self.tilt_stop_spin, self.tilt_step_spin,
                              self.defocus_spin, self.noise_combo, self.snr_spin, self.dose_spin)

        # --- output
        self.folder_edit = QLineEdit()
        self.folder_edit.setToolTip(
            "Dataset folder to write (created); existing simulation files are replaced only "
            "after you confirm. Open it later with File ▸ Open Folder or the Score widget")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose the output folder")
        self.browse_button.clicked.connect(self._browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.browse_button)
        output_form = QFormLayout()
        output_form.addRow("Folder", folder_row)
        output_box = QGroupBox("Output")
        output_box.setLayout(output_form)

        # --- actions
        self.run_button = QPushButton("Simulate")
        self.run_button.setToolTip("Simulate and write the dataset in the background "
                                   "(progress, Cancel), then show its layers")
        self.run_button.clicked.connect(lambda: self.start_simulation())
        self.status = TaskStatusWidget(self.runner)
        self.runner.busy_changed.connect(self._on_busy_changed)
        self._input_boxes = (sample_box, structures_box, microscope_box, output_box)

        layout = QVBoxLayout()
        for box in self._input_boxes:
            layout.addWidget(box)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setLayout(layout)

        self.preset_combo.currentTextChanged.connect(self.apply_preset)
        self.ground_truth_only_check.toggled.connect(self._update_enabled)
        self.noise_combo.currentTextChanged.connect(self._update_enabled)
        self.apply_preset(self.preset_combo.currentText())
        self.set_sources(default_structure_sources())
        self._set_auto_folder()
        self._update_enabled()

    # ------------------------------------------------------------------ inputs
    def apply_preset(self, preset: str) -> None:
        """Select ``preset`` and fill the size and particle-count fields from it."""
        if preset not in PRESETS:
            return
        if self.preset_combo.currentText() != preset:
            self.preset_combo.blockSignals(True)
            self.preset_combo.setCurrentText(preset)
            self.preset_combo.blockSignals(False)
        values = PRESETS[preset]
        for spin, value in zip((self.z_spin, self.y_spin, self.x_spin), values["shape_zyx"]):
            spin.setValue(int(value))
        low, high = values["n_particles"]
        self.min_particles_spin.setValue(int(low))
        self.max_particles_spin.setValue(int(high))

    def shape_zyx(self) -> tuple[int, int, int]:
        return (self.z_spin.value(), self.y_spin.value(), self.x_spin.value())

    def set_shape_zyx(self, shape: Iterable[int]) -> None:
        for spin, value in zip((self.z_spin, self.y_spin, self.x_spin), shape):
            spin.setValue(int(value))

    def set_particle_range(self, low: int, high: int) -> None:
        self.min_particles_spin.setValue(int(low))
        self.max_particles_spin.setValue(int(high))

    def set_tilt_range(self, start: float, stop: float, step: float) -> None:
        self.tilt_start_spin.setValue(float(start))
        self.tilt_stop_spin.setValue(float(stop))
        self.tilt_step_spin.setValue(float(step))

    def tilt_angles(self) -> tuple[float, ...]:
        """The tilt angles (degrees) of the range set.

        Raises:
            ValueError: start > stop or a step that is not positive.
        """
        start, stop = float(self.tilt_start_spin.value()), float(self.tilt_stop_spin.value())
        step = float(self.tilt_step_spin.value())
        if step <= 0:
            raise ValueError(f"tilt step must be > 0°, got {step:g}°")
        if start > stop:
            raise ValueError(f"tilt range: start ({start:g}°) must not exceed stop ({stop:g}°)")
        return shrec_tilt_angles(start, stop, step)

    def _update_enabled(self, *_: Any) -> None:
        tilts = not self.ground_truth_only_check.isChecked()
        for widget in self._tilt_widgets:
            widget.setEnabled(tilts)
        noise = self.noise_combo.currentText()
        self.snr_spin.setEnabled(tilts and noise == "gaussian")
        self.dose_spin.setEnabled(tilts and noise == "dose")

    # sources
    def sources(self) -> list[Path]:
        """The structure source folders, in search order."""
        return [Path(self.source_list.item(i).text()) for i in range(self.source_list.count())]

    def set_sources(self, paths: Iterable[str | os.PathLike]) -> None:
        """Replace the source list (not checked here: a missing folder is reported on Run)."""
        self.source_list.clear()
        for path in paths:
            self.source_list.addItem(str(Path(path).expanduser()))

    def add_source(self, path: str | os.PathLike) -> bool:
        """Append a folder or file; one that does not exist is refused with a message."""
        source = Path(path).expanduser()
        if not source.exists():
            self._show_error(FileNotFoundError(f"structure source {source} does not exist"))
            return False
        if source in self.sources():
            return False
        self.source_list.addItem(str(source))
        return True

    def remove_selected_sources(self) -> None:
        rows = sorted((self.source_list.row(item) for item in self.source_list.selectedItems()),
                      reverse=True)
        for row in rows:
            self.source_list.takeItem(row)

    def _browse_source(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of structure files")
        if folder:
            self.add_source(folder)

    # output folder
    def _set_auto_folder(self) -> None:
        self._auto_folder = default_output_folder()
        self.folder_edit.setText(str(self._auto_folder))

    def output_folder(self) -> Path:
        """The output folder set (not created).

        Raises:
            ValueError: no folder given, or the path is a file.
        """
        text = self.folder_edit.text().strip()
        if not text:
            raise ValueError("choose an output folder")
        folder = Path(text).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"output folder {folder} is a file")
        return folder

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Write the simulated dataset into",
                                                  self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def existing_outputs(self, folder: str | os.PathLike) -> list[Path]:
        """The files a simulation with the current settings would replace in ``folder``."""
        root = Path(folder).expanduser()
        tilts = not self.ground_truth_only_check.isChecked()
        return [root / name for name in output_files(tilts) if (root / name).exists()]

    # parameters
    def params(self) -> SimulationParams:
        """The simulation parameters set in the widget.

        Raises:
            FileNotFoundError: a structure source does not exist.
            ValueError: invalid values (tilt range, particle range, …).
        """
        missing = [str(p) for p in self.sources() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"structure source {', '.join(missing)} does not exist")
        low, high = self.min_particles_spin.value(), self.max_particles_spin.value()
        if low > high:
            raise ValueError(f"particle count: min ({low}) must not exceed max ({high})")
        tilt_series = not self.ground_truth_only_check.isChecked()
        overrides: dict[str, Any] = {
            "shape_zyx": self.shape_zyx(),
            "n_particles": (low, high),
            "orientation_sampler": self.orientation_combo.currentText(),
        }
        if tilt_series:
            noise = self.noise_combo.currentText()
            overrides.update(tilt_angles_deg=self.tilt_angles(),
                             defocus_um=float(self.defocus_spin.value()), noise=noise,
                             snr=float(self.snr_spin.value()),
                             dose_per_tilt_e_per_nm2=float(self.dose_spin.value()))
        return simulation_params(
            self.preset_combo.currentText(), seed=int(self.seed_spin.value()),
            tilt_series=tilt_series, structure_sources=[str(p) for p in self.sources()],
            download_structures=self.download_check.isChecked(),
            surrogate_structures=self.surrogates_check.isChecked(), **overrides)

    # ------------------------------------------------------------------ running
    def start_simulation(self) -> bool:
        """The Simulate button: check the inputs, ask before replacing existing files, run.

        Returns whether a run was started."""
        try:
            folder = self.output_folder()
            self.params()  # report bad inputs before asking anything
        except (ValueError, FileNotFoundError) as exc:
            self._show_error(exc)
            return False
        existing = self.existing_outputs(folder)
        overwrite = False
        if existing:
            if not self._confirm_overwrite(folder, existing):
                self.status.status.setText(f"Not simulated: {folder} already holds a dataset")
                return False
            overwrite = True
        return self.simulate_into(folder, overwrite=overwrite)

    def _confirm_overwrite(self, folder: Path, existing: list[Path]) -> bool:
        # simulation.json first: it tells a finished simulation from an interrupted one
        ordered = sorted(existing, key=lambda p: p.name != "simulation.json")
        names = ", ".join(p.name for p in ordered[:4]) + (" …" if len(ordered) > 4 else "")
        answer = QMessageBox.question(
            self, "Replace the simulated dataset?",
            f"{folder} already holds {len(existing)} file(s) of a simulation ({names}).\n\n"
            "Replace them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def simulate_into(self, folder: str | os.PathLike, *, overwrite: bool = False) -> bool:
        """Simulate into ``folder`` with the widget's inputs (no question asked).

        With ``overwrite`` False, existing outputs stop the run with an error message.
        Errors (bad inputs, missing structures, existing files) go to the status line and a
        napari notification, never raised. Returns whether a run was started (it has finished
        already when threads are off).
        """
        try:
            params = self.params()
            target = Path(folder).expanduser()
            if target.exists() and not target.is_dir():
                raise ValueError(f"output folder {target} is a file")
        except (ValueError, FileNotFoundError) as exc:
            self._show_error(exc)
            return False
        self.runner.start(simulate_dataset, params, target, overwrite,
                          on_result=self._on_result, on_error=self._show_error,
                          on_cancelled=self._on_cancelled,
                          description=f"Simulating {target.name or target}")
        return True

    def cancel(self) -> None:
        """Stop the running simulation (nothing is shown; no simulation.json is written)."""
        self.runner.cancel()

    def _on_busy_changed(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        for box in self._input_boxes:
            box.setEnabled(not busy)

    def _on_cancelled(self) -> None:
        self.status.status.setText("Cancelled: no dataset written (simulation.json missing)")

    def _show_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Simulate", exc)

    # ------------------------------------------------------------------ results
    def _on_result(self, output: SimulateOutput) -> None:
        result = output.result
        self.last_output = output
        self.last_result = result
        self.last_folder = Path(result.folder)
        self._show_layers(output)
        if self._auto_folder is not None and \
                self.folder_edit.text().strip() == str(self._auto_folder):
            self._set_auto_folder()  # the next run goes to a fresh folder
        self.status.status.setText(self.summary(output))
        if result.surrogate_classes:
            try:
                from napari.utils.notifications import show_warning

                show_warning(f"Simulate: {self._surrogate_text(output)} (not the real "
                             "structures)")
            except Exception:
                log.warning("Simulate: %s", self._surrogate_text(output))

    @staticmethod
    def _surrogate_text(output: SimulateOutput) -> str:
        surrogates = output.result.surrogate_classes
        total = len(output.result.structures)
        if total and len(surrogates) == total:
            return f"all {total} classes on surrogate shapes"
        return f"{len(surrogates)} class{'es' if len(surrogates) != 1 else ''} on surrogate " \
               f"shapes ({', '.join(surrogates)})"

    def summary(self, output: SimulateOutput) -> str:
        """The status line after a run: particles, surrogate classes, tilts, time, folder."""
        result = output.result
        report = result.grandmodel.report
        parts = [f"{report.n_placed} of {report.n_requested} particles placed"
                 + (f" ({len(report.not_fitted)} did not fit)" if report.not_fitted else "")]
        if result.surrogate_classes:
            parts.append(self._surrogate_text(output))
        else:
            parts.append("no surrogate shapes")
        if result.tiltseries is not None:
            parts.append(f"{len(result.tiltseries.tilt_angles_deg)} tilts")
        else:
            parts.append("no tilt series")
        total = result.timings_s.get("total", output.elapsed_s)
        parts.append(f"{total:.1f} s")
        return f"Simulated {result.folder}: " + "; ".join(parts)

    def _show_layers(self, output: SimulateOutput) -> list[Any]:
        """Add the simulation's layers, replacing those of the same names in place."""
        layers = self.viewer.layers
        shown = []
        for name, layer_data in output.layers.items():
            # A new projections layer goes to the bottom of the list, so its axis labels
            # (tilt, y, x) do not become the viewer's.
            shown.append(show_layer(self.viewer, layer_data,
                                    new_index=0 if name == LAYER_PROJECTIONS else None))
        for name in _TILT_SERIES_LAYERS:
            if name not in output.layers and name in layers:
                stale = layers[name]
                if "simulation_folder" in (stale.metadata or {}).get("napari_shrec", {}):
                    layers.remove(stale)  # an earlier simulation's tilt series / tomogram
        return shown

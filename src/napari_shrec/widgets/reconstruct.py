"""Reconstruct dock widget: weighted back-projection of a tilt series, aligned with the grandmodel.

The input is a dataset folder (SHREC'20/'21 or napari-shrec: its ``projections.mrc``, or
``projections_noisefree.mrc``, and its tilt angles; filled in automatically when a dataset's or a
simulation's layers are open) or a projection stack (MRC) with its tilt file (IMOD ``.tlt`` or a
SHREC'21 alignment file; default ``<stack>.tlt`` beside it). What was found (tilts, detector,
grandmodel size, recorded defocus) is shown under the input and sets the default frame.

The parameters become a :class:`~napari_shrec.core.reconstruct.ReconstructionParams`, as
``napari-shrec reconstruct`` builds them: the frame (``native``: the grandmodel's z extent,
overlaying it voxel for voxel; ``shrec2020``: a cube as wide as the detector with the tilt axis at
its centre slice, see :func:`~napari_shrec.core.reconstruct_input.frame_geometry`) or a thickness
override, the weighting, CTF phase flipping (with the defocus the input records or one typed in),
the tilt sign and the device. "Reconstruct" runs :func:`reconstruct_tilt_series` (reading the
input plus :func:`~napari_shrec.core.reconstruct.reconstruct`) in a
:class:`~napari_shrec._workers.TaskRunner` (napari progress bar, Cancel).

The result is added, or replaced by name (same position, same visibility), as the Image layer
``reconstruction`` — ``reconstruction (<frame>)`` when it is not in the input's own frame
(``reconstruction (custom)`` with a thickness override) — with scale = pixel size (nm) on all three
axes and a z ``translate`` that puts it on the grandmodel: a reconstruction whose grandmodel z
offset is ``o`` (reconstruction z = grandmodel z + o) gets ``translate z = base − o × pixel``, with
``base`` the z translate of the dataset's grandmodel-frame layer when one is open (0 for the
Simulate widget's layers, 156 voxels for a SHREC'20 folder opened by the reader), else 0.
``metadata["napari_shrec"]`` holds the provenance (source, tilt file, frame, offset, parameters,
device, time); ``metadata["dataset"]`` names the dataset folder, so the Score widget picks it up.

"Save…" writes the last reconstruction to an MRC file (asking before replacing one).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._workers import TaskRunner
from ..core.progress import CancelToken, ProgressCallback
from ..core.reconstruct import WEIGHTINGS, ReconstructionParams, reconstruct
from ..core.reconstruct_input import (
    FRAMES,
    TiltSeriesInput,
    frame_geometry,
    load_tilt_series,
    reconstruction_metadata,
)
from ..settings import settings_or_defaults
from ._common import confirm_replace, float_spin, int_spin, report_error, show_layer
from ._task_status import TaskStatusWidget

if TYPE_CHECKING:
    import napari

    from ..layers import LayerDataTuple

__all__ = [
    "ReconstructWidget",
    "ReconstructRequest",
    "ReconstructionPlan",
    "ReconstructOutput",
    "plan_reconstruction",
    "reconstruct_tilt_series",
    "reconstruction_layer",
    "default_save_path",
    "LAYER_RECONSTRUCTION",
    "INPUT_DATASET",
    "INPUT_STACK",
    "DEVICE_CHOICES",
    "FRAME_CUSTOM",
]

log = logging.getLogger(__name__)

LAYER_RECONSTRUCTION = "reconstruction"
INPUT_DATASET = "Dataset folder"
INPUT_STACK = "Projection stack"
#: Devices offered in the widget ("numpy", the slow reference, is left to the CLI and the API).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "torch-cpu")
#: Frame name of a reconstruction with a thickness override.
FRAME_CUSTOM = "custom"


@dataclass(frozen=True)
class ReconstructRequest:
    """What to reconstruct and how (built in the main thread, read in the worker).

    Attributes:
        source: dataset folder or projection stack (MRC).
        tlt: tilt file of a stack (None: ``<stack>.tlt``) — or of a dataset, replacing its own.
        noisefree: a dataset's ``projections_noisefree.mrc`` instead of ``projections.mrc``.
        frame: "native" or "shrec2020" (None: the input's default frame).
        thickness: z slices instead of the frame's (None: the frame's); the tilt axis is then
            at ``thickness // 2``.
        weighting, sirt_iterations, invert_tilt_angles, device: see
            :class:`~napari_shrec.core.reconstruct.ReconstructionParams`.
        ctf_correction: phase-flip each projection with its CTF.
        defocus_um: underfocus (µm) of every tilt, replacing what the input records (None: the
            input's own, per tilt).
    """

    source: Path
    tlt: Path | None = None
    noisefree: bool = False
    frame: str | None = None
    thickness: int | None = None
    weighting: str = "ramp"
    sirt_iterations: int = 10
    ctf_correction: bool = False
    defocus_um: float | None = None
    invert_tilt_angles: bool = False
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        out = asdict(self)
        out["source"] = str(self.source)
        out["tlt"] = str(self.tlt) if self.tlt is not None else None
        return out


@dataclass
class ReconstructionPlan:
    """How a request applies to one tilt series (see :func:`plan_reconstruction`)."""

    params: ReconstructionParams
    frame: str  # "native", "shrec2020" or "custom"
    own_frame: bool  # the input's default frame, no thickness override
    grandmodel_z_offset: int  # reconstruction z = grandmodel z + offset
    defocus_um: np.ndarray | None
    layer_name: str


@dataclass
class ReconstructOutput:
    """What :func:`reconstruct_tilt_series` hands back to the widget (no reference to the input
    arrays, so no memory map of the input stays open)."""

    volume: np.ndarray
    info: dict[str, Any]
    request: ReconstructRequest
    plan: ReconstructionPlan
    source: Path
    dataset_folder: Path | None
    pixel_size_nm: float
    n_tilts: int
    grandmodel_nz: int | None
    provenance: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


def plan_reconstruction(series: TiltSeriesInput, request: ReconstructRequest
                        ) -> ReconstructionPlan:
    """The reconstruction parameters, frame, grandmodel offset and layer name of a request.

    Raises:
        ValueError: unknown frame, the native frame without a grandmodel size (a bare stack)
            and no thickness, CTF correction without a defocus.
    """
    frame = request.frame or series.default_frame
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    nz = series.grandmodel_nz
    thickness = int(request.thickness) if request.thickness else None
    if thickness is None and frame == "native" and nz is None:
        raise ValueError(f"{series.source.name}: the native frame needs the grandmodel's size, "
                         "which this input does not have: set a thickness or use the shrec2020 "
                         "frame")
    if thickness is not None and (frame != "native" or nz is not None):
        if thickness == frame_geometry(frame, series)[0]:
            thickness = None  # the frame's own thickness: no override
    if thickness is None:
        thickness, axis_z, offset = frame_geometry(frame, series)
        frame_name = frame
    else:
        axis_z = float(thickness // 2)
        offset = int(axis_z) - nz // 2 if nz is not None else 0
        frame_name = FRAME_CUSTOM
    n = len(series.tilt_angles_deg)
    defocus = series.defocus_um
    if request.defocus_um is not None:
        defocus = np.full(n, float(request.defocus_um))
    if request.ctf_correction and defocus is None:
        raise ValueError(f"{series.source.name}: CTF correction needs the defocus, which this "
                         "input does not record: type it in the Defocus field")
    params = ReconstructionParams(
        thickness=int(thickness), axis_z=float(axis_z), weighting=request.weighting,
        sirt_iterations=int(request.sirt_iterations), ctf_correction=request.ctf_correction,
        invert_tilt_angles=request.invert_tilt_angles, device=request.device,
        **series.microscope)
    own = frame_name == series.default_frame
    name = LAYER_RECONSTRUCTION if own else f"{LAYER_RECONSTRUCTION} ({frame_name})"
    return ReconstructionPlan(params=params, frame=frame_name, own_frame=own,
                              grandmodel_z_offset=int(offset), defocus_um=defocus,
                              layer_name=name)


def reconstruct_tilt_series(
    request: ReconstructRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ReconstructOutput:
    """Read the tilt series of a request and reconstruct it (no napari, no Qt).

    Raises:
        FileNotFoundError, ValueError: missing files, tilt count mismatch, CTF without defocus …
        RuntimeError: a device that is not available (cuda without a GPU, no PyTorch).
        Cancelled: the token was cancelled.
    """
    start = time.perf_counter()
    if progress is not None:
        progress(0, 0, "reading the tilt series")
    series = load_tilt_series(request.source, tlt=request.tlt, noisefree=request.noisefree)
    if cancel is not None:
        cancel.raise_if_cancelled()
    plan = plan_reconstruction(series, request)
    if request.device in ("cuda", "torch-cpu") and find_spec("torch") is None:
        raise RuntimeError(f"device {request.device!r} needs PyTorch (pip install torch); use "
                           "auto or cpu")
    volume, info = reconstruct(series.projections, series.tilt_angles_deg, plan.params,
                               pixel_size_nm=series.pixel_size_nm, defocus_um=plan.defocus_um,
                               progress=progress, cancel=cancel)
    elapsed = time.perf_counter() - start
    provenance = reconstruction_metadata(series, plan.frame, info, plan.grandmodel_z_offset)
    provenance.update({
        "tilt_file": str(request.tlt) if request.tlt is not None else None,
        "noisefree": bool(request.noisefree),
        "n_tilts": int(len(series.tilt_angles_deg)),
        "grandmodel_nz": series.grandmodel_nz,
        "request": request.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
    })
    return ReconstructOutput(
        volume=volume, info=info, request=request, plan=plan, source=Path(series.source),
        dataset_folder=series.dataset_folder, pixel_size_nm=float(series.pixel_size_nm),
        n_tilts=int(len(series.tilt_angles_deg)), grandmodel_nz=series.grandmodel_nz,
        provenance=provenance, elapsed_s=elapsed)


def reconstruction_layer(output: ReconstructOutput, base_translate_nm: float = 0.0
                         ) -> LayerDataTuple:
    """The Image layer-data tuple of a reconstruction: scale = pixel size (nm) on every axis,
    translate z = ``base_translate_nm`` − grandmodel offset × pixel size (see the module notes)."""
    from ..core.volume import Volume
    from ..layers import volume_to_image_layer

    px = float(output.pixel_size_nm)
    offset = int(output.plan.grandmodel_z_offset)
    extra: dict[str, Any] = {"volume": "reconstruction", "frame": output.plan.frame,
                             "grandmodel_z_offset": offset,
                             "napari_shrec": dict(output.provenance)}
    if output.dataset_folder is not None:
        extra["dataset"] = str(output.dataset_folder)
    data, kwargs, kind = volume_to_image_layer(
        Volume(output.volume, (px, px, px), metadata={"source": str(output.source)}),
        output.plan.layer_name, visible=True, voxel_size_nm=px, metadata=extra)
    kwargs["translate"] = (float(base_translate_nm) - offset * px, 0.0, 0.0)
    return (data, kwargs, kind)


def default_save_path(output: ReconstructOutput) -> Path:
    """Where ``napari-shrec reconstruct`` would write this reconstruction: the dataset's
    ``reconstruction.mrc`` (``reconstruction_<frame>.mrc`` in another frame), else
    ``<stack>_rec.mrc``."""
    if output.dataset_folder is not None:
        name = "reconstruction.mrc" if output.plan.own_frame \
            else f"reconstruction_{output.plan.frame}.mrc"
        return output.dataset_folder / name
    return output.source.with_name(output.source.stem + "_rec.mrc")


def dataset_folder_of(metadata: dict[str, Any] | None) -> str | None:
    """The dataset folder a layer belongs to: ``metadata["dataset"]`` (reader, Simulate and
    Reconstruct layers), else ``metadata["napari_shrec"]["simulation_folder"]``."""
    meta = metadata or {}
    folder = meta.get("dataset")
    if not folder:
        nested = meta.get("napari_shrec")
        if isinstance(nested, dict):
            folder = nested.get("simulation_folder")
    return str(folder) if folder else None


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return str(a) == str(b)


class ReconstructWidget(QWidget):
    """The Reconstruct dock widget (see the module docstring).

    Attributes:
        last_output: the :class:`ReconstructOutput` of the last successful run (None before).
        last_layer: the layer it was shown in.
        input_series_summary: what :meth:`inspect_input` found (None when the input could not
            be read): n_tilts, angles, shape, pixel_size_nm, grandmodel_nz, default_frame,
            defocus_known.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner = TaskRunner()
        self.last_output: ReconstructOutput | None = None
        self.last_layer: Any = None
        self.input_series_summary: dict[str, Any] | None = None
        self._auto_dataset: str | None = None
        self._inspected_key: tuple | None = None

        # --- input
        self.source_combo = QComboBox()
        self.source_combo.addItems([INPUT_DATASET, INPUT_STACK])
        self.source_combo.setToolTip(
            "Dataset folder: a SHREC'20/'21 model_N or a napari-shrec simulation (its "
            "projections.mrc and tilt angles). Projection stack: an MRC tilt series (tilt, y, x) "
            "with its tilt angles")
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("dataset folder (model_N, or a simulation)")
        self.dataset_edit.setToolTip("Folder with projections.mrc and its tilt angles; filled in "
                                     "when a dataset's or a simulation's layers are open")
        self.dataset_edit.editingFinished.connect(self.inspect_input)
        self.dataset_browse_button = QPushButton("Browse…")
        self.dataset_browse_button.setToolTip("Choose a dataset folder")
        self.dataset_browse_button.clicked.connect(self._browse_dataset)
        self.noisefree_check = QCheckBox("Use noise-free projections")
        self.noisefree_check.setToolTip("Reconstruct the dataset's projections_noisefree.mrc "
                                        "(no detector noise) instead of projections.mrc")
        self.noisefree_check.toggled.connect(self.inspect_input)
        self.stack_edit = QLineEdit()
        self.stack_edit.setPlaceholderText("projection stack (.mrc, .st, .ali)")
        self.stack_edit.setToolTip("MRC tilt series (tilt, y, x); its header pixel size (nm) "
                                   "becomes the voxel size")
        self.stack_edit.editingFinished.connect(self.inspect_input)
        self.stack_browse_button = QPushButton("Browse…")
        self.stack_browse_button.setToolTip("Choose a projection stack")
        self.stack_browse_button.clicked.connect(self._browse_stack)
        self.tlt_edit = QLineEdit()
        self.tlt_edit.setPlaceholderText("default: <stack>.tlt beside the stack")
        self.tlt_edit.setToolTip("Tilt angles (degrees), one per projection: IMOD .tlt or a "
                                 "SHREC'21 alignment file")
        self.tlt_edit.editingFinished.connect(self.inspect_input)
        self.tlt_browse_button = QPushButton("Browse…")
        self.tlt_browse_button.setToolTip("Choose the tilt file of the stack")
        self.tlt_browse_button.clicked.connect(self._browse_tlt)
        self.input_info = QLabel("No input")
        self.input_info.setWordWrap(True)
        self.input_info.setToolTip("What the input holds: tilts, detector size, pixel size, "
                                   "grandmodel size, recorded defocus")

        dataset_row = QHBoxLayout()
        dataset_row.addWidget(self.dataset_edit, 1)
        dataset_row.addWidget(self.dataset_browse_button)
        stack_row = QHBoxLayout()
        stack_row.addWidget(self.stack_edit, 1)
        stack_row.addWidget(self.stack_browse_button)
        tlt_row = QHBoxLayout()
        tlt_row.addWidget(self.tlt_edit, 1)
        tlt_row.addWidget(self.tlt_browse_button)
        input_form = QFormLayout()
        input_form.addRow("Source", self.source_combo)
        input_form.addRow("Dataset", dataset_row)
        input_form.addRow("", self.noisefree_check)
        input_form.addRow("Stack", stack_row)
        input_form.addRow("Tilt file", tlt_row)
        input_form.addRow(self.input_info)
        input_box = QGroupBox("Input")
        input_box.setLayout(input_form)

        # --- parameters
        self.frame_combo = QComboBox()
        self.frame_combo.addItems(list(FRAMES))
        self.frame_combo.setToolTip(
            "native: the grandmodel's z extent with the tilt axis at its centre slice, "
            "overlaying it voxel for voxel (default for napari-shrec datasets). shrec2020: a "
            "cube as wide as the detector, tilt axis at its centre slice (SHREC'20's 512³ with "
            "the sample at z 156…355; default for SHREC folders and bare stacks)")
        self.thickness_spin = int_spin(0, 16384, 0, "Number of z slices (voxels) instead of the "
                                    "frame's; the tilt axis is then at the centre slice. 0: the "
                                    "frame's thickness", " slices")
        self.thickness_spin.setSpecialValueText("frame's")
        self.weighting_combo = QComboBox()
        self.weighting_combo.addItems(list(WEIGHTINGS))
        self.weighting_combo.setToolTip(
            "ramp: SHREC'20's, |q| clipped at the Crowther frequency; imod: |q| to 0.35 "
            "cycles/pixel then a Gaussian fall-off (IMOD tilt's RADIAL); sirt: the SIRT-like "
            "filter (one back-projection that looks like k SIRT iterations); none: plain "
            "back-projection")
        self.sirt_spin = int_spin(1, 1000, 10, "Iterations the SIRT-like filter imitates (more: "
                               "sharper, noisier)", " it.")
        self.defocus_spin = float_spin(
            0.0, 50.0, 0.0, 2, 0.25,
            "Underfocus (µm, positive) of every tilt for the CTF correction, replacing what the "
            "input records. 0: the input's own per-tilt defocus (napari-shrec simulations "
            "record it)", " µm")
        self.defocus_spin.setSpecialValueText("from input")
        self.ctf_check = QCheckBox("CTF phase flipping")
        self.ctf_check.setToolTip("Flip the phases of each projection where its CTF is negative "
                                  "(needs the defocus: recorded by the input or typed above; "
                                  "voltage kV, Cs mm and amplitude contrast from the simulation, "
                                  "else 300 kV, 2.7 mm, 0.08)")
        self.invert_check = QCheckBox("Invert tilt angles")
        self.invert_check.setToolTip("Negate every tilt angle (data recorded with the opposite "
                                     "tilt sign: the sample appears sheared or mirrored)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setCurrentText(settings_or_defaults().default_device)
        self.device_combo.setToolTip(
            "auto: a CUDA GPU when PyTorch sees one, else cpu; cpu: compiled kernel on every "
            "core (numpy without numba); cuda / torch-cpu: PyTorch")
        params_form = QFormLayout()
        params_form.addRow("Frame", self.frame_combo)
        params_form.addRow("Thickness", self.thickness_spin)
        params_form.addRow("Weighting", self.weighting_combo)
        params_form.addRow("SIRT iterations", self.sirt_spin)
        params_form.addRow("Defocus", self.defocus_spin)
        params_form.addRow("", self.ctf_check)
        params_form.addRow("", self.invert_check)
        params_form.addRow("Device", self.device_combo)
        params_box = QGroupBox("Reconstruction")
        params_box.setLayout(params_form)

        # --- run, status, save
        self.run_button = QPushButton("Reconstruct")
        self.run_button.setToolTip("Weighted back-projection of the tilt series, in the "
                                   "background; the layer is added, or replaced by name")
        self.run_button.clicked.connect(self.start_reconstruction)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write the last reconstruction to an MRC file (voxel size = "
                                    "pixel size, nm)")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_dialog)
        self.status = TaskStatusWidget(self.runner)
        self.runner.busy_changed.connect(self._on_busy_changed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.save_button)

        self._input_boxes = (input_box, params_box)
        layout = QVBoxLayout()
        layout.addWidget(input_box)
        layout.addWidget(params_box)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setLayout(layout)

        self.source_combo.currentTextChanged.connect(self._on_source_changed)
        self.weighting_combo.currentTextChanged.connect(self._update_enabled)
        self.defocus_spin.valueChanged.connect(self._update_enabled)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed):
            event.connect(self._refresh_dataset)
        self._update_rows()
        self._refresh_dataset()
        self._update_enabled()

    # ------------------------------------------------------------------ inputs
    def input_kind(self) -> str:
        return self.source_combo.currentText()

    def set_dataset(self, folder: str | os.PathLike) -> None:
        """Reconstruct a dataset folder: select it and show what it holds."""
        self.source_combo.setCurrentText(INPUT_DATASET)
        self.dataset_edit.setText(str(Path(folder).expanduser()))
        self.inspect_input()

    def set_stack(self, stack: str | os.PathLike, tlt: str | os.PathLike | None = None) -> None:
        """Reconstruct a projection stack with its tilt file (None: ``<stack>.tlt``)."""
        self.source_combo.setCurrentText(INPUT_STACK)
        self.stack_edit.setText(str(Path(stack).expanduser()))
        self.tlt_edit.setText(str(Path(tlt).expanduser()) if tlt is not None else "")
        self.inspect_input()

    def _on_source_changed(self, *_: Any) -> None:
        self._update_rows()
        self.inspect_input()

    def _update_rows(self) -> None:
        dataset = self.input_kind() == INPUT_DATASET
        for widget in (self.dataset_edit, self.dataset_browse_button, self.noisefree_check):
            widget.setEnabled(dataset)
        for widget in (self.stack_edit, self.stack_browse_button, self.tlt_edit,
                       self.tlt_browse_button):
            widget.setEnabled(not dataset)

    def _refresh_dataset(self, *_: Any) -> None:
        """Fill the dataset folder from the open layers (the top-most layer naming one) while
        the field is empty or still holds what was filled in this way."""
        current = self.dataset_edit.text().strip()
        if current and current != self._auto_dataset:
            return  # typed or browsed by the user: kept
        for layer in reversed(list(self.viewer.layers)):
            folder = dataset_folder_of(getattr(layer, "metadata", None))
            if folder:
                if folder != current:
                    self._auto_dataset = folder
                    self.dataset_edit.setText(folder)
                    if self.input_kind() == INPUT_DATASET:
                        self.inspect_input()
                return

    def _browse_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder",
                                                  self.dataset_edit.text())
        if folder:
            self.set_dataset(folder)

    def _browse_stack(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Projection stack", self.stack_edit.text(),
            "MRC stacks (*.mrc *.st *.ali *.mrcs *.rec);;All files (*)")
        if path:
            self.stack_edit.setText(path)
            self.inspect_input()

    def _browse_tlt(self) -> None:
        start = self.tlt_edit.text() or str(Path(self.stack_edit.text()).parent)
        path, _ = QFileDialog.getOpenFileName(
            self, "Tilt angles", start, "Tilt files (*.tlt *.rawtlt *.txt);;All files (*)")
        if path:
            self.tlt_edit.setText(path)
            self.inspect_input()

    def _input_paths(self) -> tuple[Path, Path | None]:
        """(source, tilt file or None) as set, checked for existence.

        Raises:
            ValueError: no input given, or a dataset "folder" that is a file.
            FileNotFoundError: the input or the tilt file does not exist; a stack without a
                tilt file and no ``<stack>.tlt`` beside it.
        """
        if self.input_kind() == INPUT_DATASET:
            text = self.dataset_edit.text().strip()
            if not text:
                raise ValueError("choose a dataset folder (or switch Source to Projection "
                                 "stack)")
            folder = Path(text).expanduser()
            if not folder.exists():
                raise FileNotFoundError(f"no such dataset folder: {folder}")
            if not folder.is_dir():
                raise ValueError(f"{folder} is a file, not a dataset folder (switch Source to "
                                 "Projection stack for a stack)")
            return folder, None
        text = self.stack_edit.text().strip()
        if not text:
            raise ValueError("choose a projection stack (MRC)")
        stack = Path(text).expanduser()
        if not stack.is_file():
            raise FileNotFoundError(f"no such projection stack: {stack}")
        tlt_text = self.tlt_edit.text().strip()
        if tlt_text:
            tlt = Path(tlt_text).expanduser()
            if not tlt.is_file():
                raise FileNotFoundError(f"no such tilt file: {tlt}")
            return stack, tlt
        beside = stack.with_suffix(".tlt")
        if not beside.is_file():
            raise FileNotFoundError(f"{stack.name}: choose its tilt file (.tlt or alignment "
                                    f"file); there is no {beside.name} beside the stack")
        return stack, None

    def inspect_input(self, *_: Any) -> dict[str, Any] | None:
        """Read the input's header data (memory-mapped, nothing reconstructed) and show it.

        A new input sets the frame to its default; the CTF switch follows whether a defocus
        is known. Problems go to the line under the input (not as notifications: the user may
        still be typing); Reconstruct reports them properly. Returns the summary (None when
        the input cannot be read)."""
        summary: dict[str, Any] | None = None
        try:
            source, tlt = self._input_paths()
            noisefree = self.input_kind() == INPUT_DATASET and self.noisefree_check.isChecked()
            series = load_tilt_series(source, tlt=tlt, noisefree=noisefree)
            angles = np.asarray(series.tilt_angles_deg, dtype=float)
            summary = {
                "source": str(source),
                "n_tilts": int(angles.size),
                "angles_deg": (float(angles.min()), float(angles.max())),
                "shape": tuple(int(s) for s in series.projections.shape),
                "pixel_size_nm": float(series.pixel_size_nm),
                "grandmodel_nz": series.grandmodel_nz,
                "default_frame": series.default_frame,
                "defocus_known": series.defocus_um is not None,
            }
            del series  # no memory map of the input is kept
        except Exception as exc:  # a Qt slot: never raise (MRC, dataset, angle errors)
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            has_text = bool((self.dataset_edit if self.input_kind() == INPUT_DATASET
                             else self.stack_edit).text().strip())
            self.input_info.setText(f"⚠ {message}" if has_text else "No input")
            self._inspected_key = None
        else:
            key = (self.input_kind(), summary["source"])
            if key != self._inspected_key:  # a new input: its own frame by default
                self.frame_combo.setCurrentText(summary["default_frame"])
                self._inspected_key = key
            self.input_info.setText(self._summary_text(summary))
        self.input_series_summary = summary
        self._update_enabled()
        return summary

    @staticmethod
    def _summary_text(summary: dict[str, Any]) -> str:
        n, ny, nx = summary["shape"]
        low, high = summary["angles_deg"]
        parts = [f"{n} tilts {low:g}…{high:g}°", f"{nx} × {ny} px of "
                 f"{summary['pixel_size_nm']:g} nm"]
        nz = summary["grandmodel_nz"]
        parts.append(f"grandmodel {nz} slices" if nz is not None else "no grandmodel")
        parts.append("defocus recorded" if summary["defocus_known"] else "no defocus recorded")
        return "; ".join(parts)

    def _update_enabled(self, *_: Any) -> None:
        self.sirt_spin.setEnabled(self.weighting_combo.currentText() == "sirt")
        known = bool(self.input_series_summary and self.input_series_summary["defocus_known"])
        can_ctf = known or self.defocus_spin.value() > 0
        if not can_ctf:
            self.ctf_check.setChecked(False)
        self.ctf_check.setEnabled(can_ctf)

    # parameters
    def request(self) -> ReconstructRequest:
        """The reconstruction request set in the widget.

        Raises:
            ValueError, FileNotFoundError: see :meth:`_input_paths`.
        """
        source, tlt = self._input_paths()
        defocus = float(self.defocus_spin.value())
        return ReconstructRequest(
            source=source, tlt=tlt,
            noisefree=self.input_kind() == INPUT_DATASET and self.noisefree_check.isChecked(),
            frame=self.frame_combo.currentText(),
            thickness=int(self.thickness_spin.value()) or None,
            weighting=self.weighting_combo.currentText(),
            sirt_iterations=int(self.sirt_spin.value()),
            ctf_correction=self.ctf_check.isChecked(),
            defocus_um=defocus if defocus > 0 else None,
            invert_tilt_angles=self.invert_check.isChecked(),
            device=self.device_combo.currentText())

    # ------------------------------------------------------------------ running
    def start_reconstruction(self) -> bool:
        """The Reconstruct button: check the inputs and run (synchronously when threads are
        off). Errors go to the status line and a napari notification, never raised. Returns
        whether a run was started."""
        try:
            request = self.request()
        except (ValueError, FileNotFoundError) as exc:
            self._show_error(exc)
            return False
        name = request.source.name or str(request.source)
        self.runner.start(reconstruct_tilt_series, request, on_result=self._on_result,
                          on_error=self._show_error, on_cancelled=self._on_cancelled,
                          description=f"Reconstructing {name}")
        return True

    def cancel(self) -> None:
        """Stop the running reconstruction (nothing is shown)."""
        self.runner.cancel()

    def _on_busy_changed(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self.last_output is not None)
        for box in self._input_boxes:
            box.setEnabled(not busy)

    def _on_cancelled(self) -> None:
        self.status.status.setText("Cancelled: no reconstruction shown")

    def _show_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Reconstruct", exc)

    # ------------------------------------------------------------------ results
    def grandmodel_translate_nm(self, dataset_folder: str | os.PathLike | None) -> float:
        """z translate (nm) of an open grandmodel-frame layer of this dataset, else 0."""
        if dataset_folder is None:
            return 0.0
        for layer in self.viewer.layers:
            meta = layer.metadata or {}
            if meta.get("frame") != "grandmodel":
                continue
            folder = dataset_folder_of(meta)
            if folder and _same_path(folder, dataset_folder):
                return float(np.asarray(layer.translate, dtype=float)[-3])
        return 0.0

    def _on_result(self, output: ReconstructOutput) -> None:
        self.last_output = output
        base = self.grandmodel_translate_nm(output.dataset_folder)
        self.last_layer = self._show_layer(reconstruction_layer(output, base))
        self.save_button.setEnabled(True)
        self.status.status.setText(self.summary(output))

    def summary(self, output: ReconstructOutput) -> str:
        """The status line after a run: size, frame, grandmodel slab, weighting, time, device."""
        nz, ny, nx = output.volume.shape
        plan = output.plan
        parts = [f"{nz} × {ny} × {nx} voxels (z, y, x) of {output.pixel_size_nm:g} nm",
                 f"frame {plan.frame}"]
        if output.grandmodel_nz:
            offset = plan.grandmodel_z_offset
            parts.append(f"grandmodel at z {offset}…{offset + output.grandmodel_nz - 1}")
        weighting = plan.params.weighting
        if weighting == "sirt":
            weighting = f"sirt ({plan.params.sirt_iterations} it.)"
        parts.append(f"{output.n_tilts} tilts, {weighting} weighting"
                     + (", CTF phase-flipped" if plan.params.ctf_correction else ""))
        parts.append(f"{output.elapsed_s:.1f} s on {output.info.get('device', '?')}")
        name = output.source.name or str(output.source)
        return f"Reconstructed {name} as '{plan.layer_name}': " + "; ".join(parts)

    def _show_layer(self, layer_data: LayerDataTuple) -> Any:
        """Add the layer, or replace the one of the same name in place."""
        return show_layer(self.viewer, layer_data)

    # ------------------------------------------------------------------ saving
    def save_reconstruction(self, path: str | os.PathLike, *, overwrite: bool = False) -> bool:
        """Write the last reconstruction to an MRC file (voxel size = pixel size).

        An existing file is replaced only with ``overwrite``; errors (no reconstruction yet,
        existing file, unwritable folder) go to the status line and a notification. Returns
        whether the file was written."""
        from ..core.volume import Volume
        from ..io.mrc import write_mrc

        output = self.last_output
        if output is None:
            self._show_error(ValueError("nothing to save: reconstruct first"))
            return False
        target = Path(path).expanduser()
        px = float(output.pixel_size_nm)
        try:
            written = write_mrc(target, Volume(output.volume, (px, px, px)),
                                overwrite=overwrite)
        except (OSError, ValueError) as exc:  # FileExistsError is an OSError
            self._show_error(exc)
            return False
        if self.last_layer is not None:
            meta = dict(self.last_layer.metadata or {})
            nested = dict(meta.get("napari_shrec") or {})
            nested["saved_to"] = str(written)
            meta["napari_shrec"] = nested
            self.last_layer.metadata = meta
        self.status.status.setText(f"Saved {written}")
        return True

    def _save_dialog(self) -> None:
        if self.last_output is None:
            return
        start = default_save_path(self.last_output)
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the reconstruction", str(start), "MRC (*.mrc *.rec);;All files (*)",
            options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return
        target = Path(path)
        overwrite = target.exists()
        if not confirm_replace(self, target):
            self.status.status.setText(f"Not saved: {target.name} already exists")
            return
        self.save_reconstruction(target, overwrite=overwrite)

"""Train dock widget: train a 3D U-Net particle detector on dataset folders, as ``napari-shrec
train`` does.

Inputs: training dataset folders (their ``reconstruction.mrc`` and ground truth; the first one is
filled in from the open layers of a dataset — reader, Simulate or Reconstruct layers record their
folder in ``metadata["dataset"]``), optional validation folders (with ``occupancy_mask.mrc``), the
checkpoint to write (``.pt``; the best epoch goes to ``NAME.best.pt`` beside it) and an optional
checkpoint to resume from.

The parameters become a :class:`~napari_shrec.core.train.TrainParams` and a
:class:`~napari_shrec.core.nets.unet.UNet3DConfig` (width, depth, output stride, denoising head);
"Train" runs :func:`train_model` — :meth:`TrainingData.from_folders
<napari_shrec.core.train.TrainingData.from_folders>` plus :func:`~napari_shrec.core.train.train`
and, with validation folders, the per-class thresholds tuned on them
(:func:`~napari_shrec.core.train.tune_thresholds`) and stored in both checkpoints
(:func:`~napari_shrec.core.train.store_detection_settings`), exactly like the CLI — in a
:class:`~napari_shrec._workers.TaskRunner` (napari progress bar, Cancel; the checkpoints of the
finished epochs stay, and *Resume from* continues a cancelled run).

Each finished epoch is sent from the worker thread to the widget through a queued Qt signal and
appended to :attr:`TrainWidget.history`; the plot shows the mean loss per epoch and, with
validation, the localization F1 and mean class F1 of the SHREC scorer. Existing checkpoints are
replaced only after the user confirms (:func:`~napari_shrec.widgets._common.confirm_replace`).

"Use in Detect" hands the best checkpoint to the Detect widget
(:func:`napari_shrec.widgets.detect.use_checkpoint_in_detect`): open Detect widgets switch to it
and one opened later starts with it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal, Slot
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
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._workers import TaskRunner
from ..core.progress import CancelToken, ProgressCallback
from ..core.train import TARGET_KINDS, TrainParams, best_checkpoint_path
from ..settings import settings_or_defaults
from ._common import confirm_replace, float_spin, int_spin, report_error
from ._task_status import TaskStatusWidget
from .detect import layer_dataset_folder, use_checkpoint_in_detect

if TYPE_CHECKING:
    import napari

    from ..core.train import TrainResult

__all__ = [
    "TrainWidget",
    "TrainRequest",
    "TrainOutput",
    "train_model",
    "default_output_path",
    "DEVICE_CHOICES",
]

log = logging.getLogger(__name__)

#: Devices offered for training ("auto": CUDA → MPS → CPU).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainRequest:
    """What to train on and how (built in the main thread, read in the worker).

    Attributes:
        train_folders: training dataset folders.
        val_folders: validation dataset folders (empty: no validation, no tuned thresholds).
        out: the checkpoint to write; the best epoch goes to ``NAME.best.pt``.
        resume: checkpoint to continue from (None: a new model).
        overwrite: replace existing checkpoints (the user confirmed).
        params: the training parameters.
        width, depth, output_stride, denoise: the architecture (ignored when resuming: the
            checkpoint's own is used).
        target: "auto", "class_mask", "spheres" or "shapes".
        tune_min_score: candidate threshold when tuning the per-class thresholds.
    """

    train_folders: tuple[Path, ...]
    out: Path
    params: TrainParams = field(default_factory=TrainParams)
    val_folders: tuple[Path, ...] = ()
    resume: Path | None = None
    overwrite: bool = False
    width: int = 16
    depth: int = 3
    output_stride: int = 1
    denoise: bool = False
    target: str = "auto"
    tune_min_score: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        return {
            "train_folders": [str(p) for p in self.train_folders],
            "val_folders": [str(p) for p in self.val_folders],
            "out": str(self.out),
            "resume": str(self.resume) if self.resume is not None else None,
            "params": self.params.to_dict(),
            "width": self.width, "depth": self.depth, "output_stride": self.output_stride,
            "denoise": self.denoise, "target": self.target,
            "tune_min_score": self.tune_min_score,
        }


@dataclass
class TrainOutput:
    """What :func:`train_model` hands back to the widget.

    Attributes:
        result: the :class:`~napari_shrec.core.train.TrainResult` (history, checkpoints, best
            epoch).
        request: the request it ran.
        class_names: the model's classes (channel order).
        particle_counts: training particles per class.
        thresholds: the per-class thresholds tuned on the validation data (None without).
        elapsed_s: wall time.
    """

    result: TrainResult
    request: TrainRequest
    class_names: tuple[str, ...]
    particle_counts: dict[str, int]
    thresholds: dict[str, float] | None
    elapsed_s: float


def default_output_path(folder: str | os.PathLike) -> Path:
    """The checkpoint suggested for a training folder: ``<folder>_unet.pt`` beside it."""
    p = Path(folder).expanduser()
    return p.with_name(f"{p.name or 'model'}_unet.pt")


class _TorchThreads:
    """``torch.set_num_threads(n)`` for a block (n = 0: unchanged)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self.old: int | None = None

    def __enter__(self) -> None:
        if self.n > 0:
            import torch

            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            import torch

            torch.set_num_threads(self.old)


def train_model(
    request: TrainRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_epoch: Any = None,
) -> TrainOutput:
    """Load the data of a request, train, and tune the thresholds on the validation data
    (no napari, no Qt; what ``napari-shrec train`` does for dataset folders).

    Args:
        request: see :class:`TrainRequest`.
        progress, cancel: as in :func:`~napari_shrec.core.train.train` (tuning reports its
            detection progress too).
        on_epoch: called with each epoch's history record (in the calling thread).

    Raises:
        FileNotFoundError, DatasetError, ValueError: missing folders or volumes, bad
            parameters (a patch that is not a multiple of ``2**depth``, a denoising head without
            ``grandmodel_noisefree.mrc``, a resume checkpoint of other classes …).
        FileExistsError: a checkpoint exists and ``overwrite`` is off.
        Cancelled: the token was cancelled (the finished epochs' checkpoints stay).
    """
    from ..core.detect import DetectParams
    from ..core.train import TrainingData, store_detection_settings, train, tune_thresholds

    start = time.perf_counter()
    if progress is not None:
        progress(0, 0, "reading the training data")
    class_names = None
    if request.resume is not None:
        from ..core.nets.checkpoint import load_checkpoint

        class_names = list(load_checkpoint(request.resume).class_names)
    data = TrainingData.from_folders(list(request.train_folders), class_names=class_names,
                                     target=request.target, denoise=request.denoise)
    val = None
    if request.val_folders:
        if progress is not None:
            progress(0, 0, "reading the validation data")
        val = TrainingData.from_folders(list(request.val_folders),
                                        class_names=data.class_names, target=request.target)
    if cancel is not None:
        cancel.raise_if_cancelled()
    config = None
    if request.resume is None:
        from ..core.nets.unet import UNet3DConfig

        config = UNet3DConfig(n_classes=data.n_channels, width=int(request.width),
                              depth=int(request.depth), output_stride=int(request.output_stride),
                              denoise_head=bool(request.denoise))
    params = request.params
    result = train(data, params, model_config=config, val_data=val, out=request.out,
                   resume=request.resume, overwrite=request.overwrite,
                   detect_params=DetectParams(min_score=float(request.tune_min_score)),
                   progress=progress, cancel=cancel, on_epoch=on_epoch)
    thresholds = None
    if val is not None:
        from ..core.nets.checkpoint import load_checkpoint

        def tuning(done: int, total: int, message: str = "") -> None:
            if progress is not None:
                progress(done, total, "tuning thresholds" + (f": {message}" if message else ""))

        tuning(0, 0)
        with _TorchThreads(params.threads):
            best = load_checkpoint(result.best_checkpoint, device=params.device)
            tuned = tune_thresholds(best, val, min_score=float(request.tune_min_score),
                                    progress=tuning, cancel=cancel)
        names = [str(v) for v in request.val_folders]
        for path in {result.checkpoint, result.best_checkpoint}:
            store_detection_settings(path, tuned["params"], patch_size=params.patch_size,
                                     tuned_on=names, rescorer=tuned["rescorer"],
                                     params_without_rescorer=tuned["params_without_rescorer"])
        thresholds = dict(tuned["params"].class_thresholds or {})
    return TrainOutput(result=result, request=request, class_names=tuple(data.class_names),
                       particle_counts=data.particle_counts(), thresholds=thresholds,
                       elapsed_s=time.perf_counter() - start)


class _EpochRelay(QObject):
    """Carries epoch records from the worker thread to the main thread (queued signal)."""

    epoch = Signal(int, object)

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self._callback = callback
        self.epoch.connect(self._relay)

    @Slot(int, object)
    def _relay(self, run_id: int, record: Any) -> None:
        try:
            self._callback(run_id, record)
        except Exception:  # never raise out of a Qt slot
            log.exception("could not show a training epoch")


class TrainWidget(QWidget):
    """The Train dock widget (see the module docstring).

    Attributes:
        history: the epoch records of the current (or last) run, as
            :func:`~napari_shrec.core.train.train` makes them (epoch, loss, lr, patches_per_s,
            and with validation val_loc_F1, val_mean_class_F1, …); what the plot shows. After a
            run it is the checkpoint's whole history (a resumed run's earlier epochs included).
        last_output: the :class:`TrainOutput` of the last successful run (None before).
        last_checkpoint: the checkpoint to detect with after that run (the best one); None
            while a new run goes (it may write over the same files) and after a failed one.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.runner = TaskRunner()
        self.history: list[dict[str, Any]] = []
        self.last_output: TrainOutput | None = None
        self.last_checkpoint: Path | None = None
        self._run_id = 0
        self._auto_train: str | None = None
        self._auto_out: str | None = None
        self._relay = _EpochRelay(self._on_epoch_record)
        self._plot_stale = True
        self._request: TrainRequest | None = None

        # --- data
        self.train_list = QListWidget()
        self.train_list.setToolTip(
            "Training dataset folders (reconstruction.mrc + ground truth: class_mask.mrc or the "
            "particle list); the first is filled in from an open dataset's layers")
        self.train_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.train_list.setMaximumHeight(72)
        self.add_train_button = QPushButton("Add…")
        self.add_train_button.setToolTip("Add a training dataset folder")
        self.add_train_button.clicked.connect(self._browse_train)
        self.remove_train_button = QPushButton("Remove")
        self.remove_train_button.setToolTip("Remove the selected training folders")
        self.remove_train_button.clicked.connect(lambda: self._remove_selected(self.train_list))
        self.val_list = QListWidget()
        self.val_list.setToolTip(
            "Validation dataset folders (with occupancy_mask.mrc), optional: every epoch is "
            "scored with the SHREC scorer, the best epoch is kept as NAME.best.pt and per-class "
            "thresholds are tuned on them at the end")
        self.val_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.val_list.setMaximumHeight(56)
        self.add_val_button = QPushButton("Add…")
        self.add_val_button.setToolTip("Add a validation dataset folder")
        self.add_val_button.clicked.connect(self._browse_val)
        self.remove_val_button = QPushButton("Remove")
        self.remove_val_button.setToolTip("Remove the selected validation folders")
        self.remove_val_button.clicked.connect(lambda: self._remove_selected(self.val_list))
        self.target_combo = QComboBox()
        self.target_combo.addItems([t for t in TARGET_KINDS if t != "shapes"])
        self.target_combo.setToolTip(
            "Voxel targets. auto: the class mask where the dataset has one, else balls; "
            "class_mask: the dataset's class mask; spheres: balls around each particle centre "
            "(a class-dependent fraction of its radius)")
        data_form = QFormLayout()
        data_form.addRow("Training", self._list_with_buttons(
            self.train_list, self.add_train_button, self.remove_train_button))
        data_form.addRow("Validation", self._list_with_buttons(
            self.val_list, self.add_val_button, self.remove_val_button))
        data_form.addRow("Target", self.target_combo)
        data_box = QGroupBox("Data")
        data_box.setLayout(data_form)

        # --- checkpoints
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("model checkpoint to write (.pt)")
        self.out_edit.setToolTip("The last epoch's checkpoint; the best epoch is written to "
                                 "NAME.best.pt beside it. Existing files are replaced only "
                                 "after you confirm")
        self.out_browse_button = QPushButton("Browse…")
        self.out_browse_button.setToolTip("Choose where to write the checkpoint")
        self.out_browse_button.clicked.connect(self._browse_out)
        self.resume_edit = QLineEdit()
        self.resume_edit.setPlaceholderText("none: a new model")
        self.resume_edit.setToolTip("A checkpoint written by Train (or napari-shrec train) to "
                                    "continue: its weights, optimiser, schedule and history; "
                                    "training goes on up to Epochs")
        self.resume_browse_button = QPushButton("Browse…")
        self.resume_browse_button.setToolTip("Choose a checkpoint to resume from")
        self.resume_browse_button.clicked.connect(self._browse_resume)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_browse_button)
        resume_row = QHBoxLayout()
        resume_row.addWidget(self.resume_edit, 1)
        resume_row.addWidget(self.resume_browse_button)
        ckpt_form = QFormLayout()
        ckpt_form.addRow("Output", out_row)
        ckpt_form.addRow("Resume from", resume_row)
        ckpt_box = QGroupBox("Checkpoint")
        ckpt_box.setLayout(ckpt_form)

        # --- training
        self.epochs_spin = int_spin(1, 100_000, 20, "Epochs to train (a resumed run continues "
                                    "up to this count)")
        self.steps_spin = int_spin(1, 1_000_000, 100, "Optimiser steps per epoch", " steps")
        self.patch_spin = int_spin(16, 512, 48, "Cubic patch edge (voxels), a multiple of 8 "
                                   "and of 2^depth: 48 is fastest per voxel on a CPU, 64–96 on a "
                                   "GPU", " vox")
        self.patch_spin.setSingleStep(8)
        self.batch_spin = int_spin(1, 256, 2, "Patches per optimiser step", " patches")
        self.lr_spin = float_spin(1e-5, 1.0, 2e-3, 5, 5e-4, "Peak learning rate of AdamW "
                                  "(cosine schedule with warm-up)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setCurrentText(settings_or_defaults().default_device)
        self.device_combo.setToolTip("auto: a CUDA GPU, else Apple MPS, else the CPU")
        self.threads_spin = int_spin(0, 256, 0, "PyTorch CPU threads while training (0: "
                                     "PyTorch's default, every core)", " threads")
        self.threads_spin.setSpecialValueText("default")
        self.seed_spin = int_spin(0, 2**31 - 1, 0, "Seed of the weights, the patch sampler "
                                  "and the augmentations (same seed, same losses on a CPU)")
        train_form = QFormLayout()
        train_form.addRow("Epochs", self.epochs_spin)
        train_form.addRow("Steps / epoch", self.steps_spin)
        train_form.addRow("Patch edge", self.patch_spin)
        train_form.addRow("Batch", self.batch_spin)
        train_form.addRow("Learning rate", self.lr_spin)
        train_form.addRow("Device", self.device_combo)
        train_form.addRow("CPU threads", self.threads_spin)
        train_form.addRow("Seed", self.seed_spin)
        train_box = QGroupBox("Training")
        train_box.setLayout(train_form)

        # --- model
        self.width_spin = int_spin(1, 256, 16, "Channels of the first level; level i has "
                                   "width × 2^i", " ch")
        self.depth_spin = int_spin(1, 6, 3, "Down-samplings (the patch edge must be a "
                                   "multiple of 2^depth)")
        self.stride_combo = QComboBox()
        self.stride_combo.addItems(["1", "2"])
        self.stride_combo.setToolTip("Output stride: 1 (maps at full resolution) or 2 "
                                     "(half-resolution maps: faster detection)")
        self.denoise_check = QCheckBox("Denoising head")
        self.denoise_check.setToolTip("Add the second decoder that predicts the noise-free "
                                      "potential (UMC-style; needs grandmodel_noisefree.mrc in "
                                      "every training folder)")
        self.tune_spin = float_spin(0.05, 0.95, 0.3, 2, 0.05, "Candidate score threshold when "
                                    "tuning the per-class thresholds on the validation data (the "
                                    "lowest threshold a class can get)")
        model_form = QFormLayout()
        model_form.addRow("Width", self.width_spin)
        model_form.addRow("Depth", self.depth_spin)
        model_form.addRow("Stride", self.stride_combo)
        model_form.addRow("", self.denoise_check)
        model_form.addRow("Tune from score", self.tune_spin)
        model_box = QGroupBox("Model (ignored when resuming)")
        model_box.setLayout(model_form)

        # --- plot
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.0, 2.4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.canvas.setToolTip("Mean training loss per epoch (left axis) and, with validation, "
                               "localization F1 and mean class F1 (right axis, 0–1)")
        self.loss_axes = self.figure.add_subplot(111)
        self.f1_axes = self.loss_axes.twinx()
        self.update_plot()

        # --- run, status
        self.run_button = QPushButton("Train")
        self.run_button.setToolTip("Train in the background (progress bar and Cancel); the "
                                   "finished epochs' checkpoints stay when cancelled")
        self.run_button.clicked.connect(self.start_training)
        self.use_button = QPushButton("Use in Detect")
        self.use_button.setToolTip("Detect with the best checkpoint of the last run: open "
                                   "Detect widgets switch to it, one opened later starts with it")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_in_detect)
        self.status = TaskStatusWidget(self.runner)
        self.runner.busy_changed.connect(self._on_busy_changed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.use_button)

        self._input_boxes = (data_box, ckpt_box, train_box, model_box)
        layout = QVBoxLayout()
        for box in self._input_boxes:
            layout.addWidget(box)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.canvas)
        layout.addStretch(1)
        self.setLayout(layout)

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed):
            event.connect(self._refresh_dataset)
        self._refresh_dataset()

    @staticmethod
    def _list_with_buttons(lst: QListWidget, add: QPushButton, remove: QPushButton
                           ) -> QVBoxLayout:
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        box = QVBoxLayout()
        box.addWidget(lst)
        box.addLayout(row)
        return box

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _items(lst: QListWidget) -> list[str]:
        return [lst.item(i).text() for i in range(lst.count())]

    def training_folders(self) -> list[Path]:
        """The training folders, in order."""
        return [Path(t).expanduser() for t in self._items(self.train_list)]

    def validation_folders(self) -> list[Path]:
        """The validation folders, in order."""
        return [Path(t).expanduser() for t in self._items(self.val_list)]

    def add_training_folder(self, folder: str | os.PathLike) -> None:
        """Add a training dataset folder (once); suggests the output checkpoint beside it."""
        text = str(Path(folder).expanduser())
        if text not in self._items(self.train_list):
            self.train_list.addItem(text)
        self._suggest_output()

    def add_validation_folder(self, folder: str | os.PathLike) -> None:
        """Add a validation dataset folder (once)."""
        text = str(Path(folder).expanduser())
        if text not in self._items(self.val_list):
            self.val_list.addItem(text)

    def set_output(self, path: str | os.PathLike) -> None:
        """The checkpoint to write."""
        self.out_edit.setText(str(Path(path).expanduser()))

    def set_resume(self, path: str | os.PathLike | None) -> None:
        """The checkpoint to resume from (None: a new model)."""
        self.resume_edit.setText(str(Path(path).expanduser()) if path else "")

    def _remove_selected(self, lst: QListWidget) -> None:
        for item in lst.selectedItems():
            lst.takeItem(lst.row(item))
        if lst is self.train_list and self._auto_train not in self._items(lst):
            self._auto_train = None

    def _suggest_output(self) -> None:
        current = self.out_edit.text().strip()
        folders = self.training_folders()
        if folders and (not current or current == self._auto_out):
            suggestion = str(default_output_path(folders[0]))
            self._auto_out = suggestion
            self.out_edit.setText(suggestion)

    def _refresh_dataset(self, *_: Any) -> None:
        """Fill the training list from the open layers (the top-most layer naming a dataset
        folder) while it is empty or holds only what was filled in this way."""
        items = self._items(self.train_list)
        if items and items != [self._auto_train]:
            return
        for layer in reversed(list(self.viewer.layers)):
            folder = layer_dataset_folder(getattr(layer, "metadata", None))
            if folder:
                if items != [folder]:
                    self.train_list.clear()
                    self.train_list.addItem(folder)
                    self._auto_train = folder
                    self._suggest_output()
                return

    def _browse_train(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training dataset folder")
        if folder:
            self.add_training_folder(folder)

    def _browse_val(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Validation dataset folder")
        if folder:
            self.add_validation_folder(folder)

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Write the model checkpoint", self.out_edit.text(),
            "PyTorch checkpoints (*.pt);;All files (*)",
            options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            if not Path(path).suffix:
                path += ".pt"
            self.set_output(path)  # replacing is confirmed when training starts

    def _browse_resume(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Resume from checkpoint", self.resume_edit.text() or self.out_edit.text(),
            "PyTorch checkpoints (*.pt);;All files (*)")
        if path:
            self.set_resume(path)

    # ------------------------------------------------------------------ parameters
    def train_params(self) -> TrainParams:
        """The :class:`~napari_shrec.core.train.TrainParams` set in the widget.

        Raises:
            ValueError: a patch edge that is not a multiple of 8 and of ``2**depth``.
        """
        patch = int(self.patch_spin.value())
        depth = int(self.depth_spin.value())
        multiple = max(8, 2 ** depth)
        if patch % multiple:
            nearest = max(multiple, patch // multiple * multiple)
            raise ValueError(f"the patch edge ({patch} voxels) must be a multiple of 8 and of "
                             f"2^depth = {2 ** depth}: try {nearest}")
        return TrainParams(
            patch_size=(patch,) * 3, batch_size=int(self.batch_spin.value()),
            epochs=int(self.epochs_spin.value()), steps_per_epoch=int(self.steps_spin.value()),
            learning_rate=float(self.lr_spin.value()), device=self.device_combo.currentText(),
            seed=int(self.seed_spin.value()), threads=int(self.threads_spin.value()))

    def request(self, *, overwrite: bool = False) -> TrainRequest:
        """The training request set in the widget.

        Raises:
            ValueError: no training folder, no output, a bad patch edge.
            FileNotFoundError: a folder or the resume checkpoint does not exist.
        """
        folders = self.training_folders()
        if not folders:
            raise ValueError("add at least one training dataset folder")
        for folder in folders + self.validation_folders():
            if not folder.is_dir():
                raise FileNotFoundError(f"no such dataset folder: {folder}")
        text = self.out_edit.text().strip()
        if not text:
            raise ValueError("choose the checkpoint to write (Output)")
        out = Path(text).expanduser()
        if out.is_dir():
            raise ValueError(f"{out} is a folder: give the checkpoint's file name (.pt)")
        resume_text = self.resume_edit.text().strip()
        resume = Path(resume_text).expanduser() if resume_text else None
        if resume is not None and not resume.is_file():
            raise FileNotFoundError(f"no such checkpoint to resume from: {resume}")
        return TrainRequest(
            train_folders=tuple(folders), val_folders=tuple(self.validation_folders()),
            out=out, resume=resume, overwrite=overwrite, params=self.train_params(),
            width=int(self.width_spin.value()), depth=int(self.depth_spin.value()),
            output_stride=int(self.stride_combo.currentText()),
            denoise=self.denoise_check.isChecked(), target=self.target_combo.currentText(),
            tune_min_score=float(self.tune_spin.value()))

    # ------------------------------------------------------------------ running
    def _existing_outputs(self, request: TrainRequest) -> list[Path]:
        """Checkpoints this run would replace (those of the resumed run itself excepted)."""
        keep: set[Path] = set()
        if request.resume is not None:
            keep = {request.resume.resolve(), best_checkpoint_path(request.resume).resolve()}
        return [p for p in (request.out, best_checkpoint_path(request.out))
                if p.exists() and p.resolve() not in keep]

    def start_training(self) -> bool:
        """The Train button: check the inputs, ask before replacing checkpoints, and run
        (synchronously when threads are off). Errors go to the status line and a napari
        notification, never raised. Returns whether a run was started."""
        try:
            request = self.request()
        except (ValueError, FileNotFoundError) as exc:
            self._show_error(exc)
            return False
        existing = self._existing_outputs(request)
        if existing:
            if not confirm_replace(self, existing[0]):
                self.status.status.setText(f"Not trained: {existing[0].name} already exists")
                return False
            request = replace(request, overwrite=True)
        self._run_id += 1
        run_id = self._run_id
        self._request = request
        self.history = []
        self.update_plot()
        self.last_checkpoint = None  # this run may write over the last one's files
        self.use_button.setEnabled(False)

        def on_epoch(record: dict[str, Any]) -> None:  # worker thread
            self._relay.epoch.emit(run_id, record)

        names = ", ".join(p.name or str(p) for p in request.train_folders)
        self.runner.start(train_model, request, on_result=self._on_result,
                          on_error=self._show_error, on_cancelled=self._on_cancelled,
                          on_epoch=on_epoch, description=f"Training on {names}")
        return True

    def cancel(self) -> None:
        """Stop the running training (the finished epochs' checkpoints stay)."""
        self.runner.cancel()

    def _on_epoch_record(self, run_id: int, record: dict[str, Any]) -> None:
        if run_id != self._run_id:
            return  # a stale run
        self.history.append(dict(record))
        self.update_plot()

    def _on_busy_changed(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.use_button.setEnabled(not busy and self.last_checkpoint is not None)
        for box in self._input_boxes:
            box.setEnabled(not busy)

    def _on_cancelled(self) -> None:
        done = self.history[-1]["epoch"] if self.history else None
        out = self._request.out if self._request is not None else self.out_edit.text().strip()
        if done is not None:
            self.status.status.setText(f"Cancelled after epoch {done}: {out} holds the finished "
                                       "epochs (set Resume from to continue)")
        else:
            self.status.status.setText("Cancelled before an epoch ended: no new checkpoint "
                                       "written")

    def _show_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Train", exc)

    def _on_result(self, output: TrainOutput) -> None:
        self.last_output = output
        self.history = [dict(r) for r in output.result.history]
        self.last_checkpoint = Path(output.result.best_checkpoint)
        self.update_plot()
        self.use_button.setEnabled(True)
        self.status.status.setText(self.summary(output))

    def summary(self, output: TrainOutput) -> str:
        """The status line after a run: epochs, time, checkpoints, best epoch, thresholds."""
        result = output.result
        n = len(result.history)
        parts = [f"Trained {n} epoch{'s' if n != 1 else ''} in {output.elapsed_s:.0f} s: "
                 f"{result.checkpoint}"]
        best = f"best epoch {result.best_epoch}" if result.best_epoch is not None else "best"
        record = next((r for r in result.history if r.get("epoch") == result.best_epoch), None)
        if record is not None and "val_loc_F1" in record:
            best += (f" (loc F1 {record['val_loc_F1']:.3f}, mean class F1 "
                     f"{record['val_mean_class_F1']:.3f})")
        parts.append(f"{best}: {result.best_checkpoint}")
        if output.thresholds:
            parts.append("tuned thresholds " + ", ".join(
                f"{k} {v:.2f}" for k, v in output.thresholds.items()))
        return "; ".join(parts)

    # ------------------------------------------------------------------ plot
    def plot_data(self) -> dict[str, list[float]]:
        """What the plot shows: epoch, loss and (NaN where not validated) val_loc_F1,
        val_mean_class_F1."""
        nan = float("nan")
        return {
            "epoch": [float(r["epoch"]) for r in self.history],
            "loss": [float(r["loss"]) for r in self.history],
            "val_loc_F1": [float(r.get("val_loc_F1", nan)) for r in self.history],
            "val_mean_class_F1": [float(r.get("val_mean_class_F1", nan)) for r in self.history],
        }

    def update_plot(self) -> None:
        """Redraw the loss and validation curves from :attr:`history`."""
        from matplotlib.ticker import MaxNLocator

        data = self.plot_data()
        ax, ax2 = self.loss_axes, self.f1_axes
        ax.clear()
        ax2.clear()
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax2.yaxis.set_label_position("right")  # clear() puts a twin's label on the left
        ax2.yaxis.tick_right()
        ax2.set_ylabel("validation F1")
        ax2.set_ylim(0.0, 1.0)
        if data["epoch"]:
            ax.plot(data["epoch"], data["loss"], "o-", color="tab:blue", label="loss")
            for key, color, label in (("val_loc_F1", "tab:green", "loc F1"),
                                      ("val_mean_class_F1", "tab:orange", "mean class F1")):
                pairs = [(e, v) for e, v in zip(data["epoch"], data[key]) if not math.isnan(v)]
                if pairs:
                    xs, ys = zip(*pairs)
                    ax2.plot(xs, ys, "s--", color=color, label=label)
            lines = ax.get_lines() + ax2.get_lines()
            ax.legend(lines, [line.get_label() for line in lines], loc="upper right",
                      fontsize="small")
            ax.set_xlim(0.5, max(data["epoch"]) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        # drawn only while shown (else when next shown): no draw is left pending for a widget
        # that is never shown, or goes away
        self._plot_stale = not self.canvas.isVisible()
        if not self._plot_stale:
            self.canvas.draw_idle()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._plot_stale:
            self._plot_stale = False
            self.canvas.draw_idle()

    # ------------------------------------------------------------------ detect
    def use_in_detect(self) -> int:
        """Hand the last run's best checkpoint to the Detect widget(s); returns how many open
        Detect widgets switched to it."""
        if self.last_checkpoint is None:
            self._show_error(ValueError("nothing to use yet: train first"))
            return 0
        n = use_checkpoint_in_detect(self.last_checkpoint)
        where = ("the Detect widget now uses it" if n else
                 "open Plugins ▸ SHREC cryo-ET ▸ Detect: it starts with it")
        self.status.status.setText(f"{self.last_checkpoint.name}: {where}")
        return n

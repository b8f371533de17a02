"""Detect dock widget: find and classify the particles of a tomogram with a trained 3D U-Net, as
``napari-shrec detect`` does.

Input: an open Image layer (3D) — its data, its voxel size (``metadata["voxel_size_nm"]`` as the
napari-shrec readers and widgets set it, else the layer's x scale, nm) and, when its metadata
names a dataset folder (reader, Simulate and Reconstruct layers do), the sample slab: with the
grandmodel z offset ``o`` of a reconstruction (``metadata["grandmodel_z_offset"]``; 0 for a
layer in the grandmodel frame) and the grandmodel's ``nz`` slices, only z ``o … o + nz − 1`` is
searched — or a file: a tomogram MRC (searched whole) or a dataset folder (its
``reconstruction.mrc`` over the sample slab, as the CLI does).

Model: the model shipped with napari-shrec
(:func:`~napari_shrec.core.pretrained.default_model_path`) or a checkpoint written by Train /
``napari-shrec train``. Its classes, patch size and tuned per-class thresholds are shown under it
(the checkpoint is read when the model is chosen, or when the widget is first shown).

Parameters: *Use the model's tuned thresholds* (default; off: one *Min score* for every class),
overlap, peak method, patch edge (0: the model's), device, *Keep probability maps*, and *Score
against the ground truth* (inputs from a dataset folder with ``occupancy_mask.mrc``: the picks,
shifted by ``−o`` in z into the grandmodel frame, are scored with
:func:`~napari_shrec.core.score.score_submission` in ``native`` mode). "Detect" runs
:func:`run_detection` (:func:`~napari_shrec.core.pretrained.detect_with_model`) in a
:class:`~napari_shrec._workers.TaskRunner` (napari progress bar, Cancel).

Results, added or replaced by name (same position, same visibility):

- ``predictions: <tomogram>`` (Points; :func:`~napari_shrec.layers.particles_to_points_layer`,
  features ``class``, ``score``, ``source`` = "predicted"): a predictions layer the Annotate
  widget curates and the Score widget scores. It takes the tomogram layer's ``scale`` and
  ``translate`` (a file's voxel size and no translation), so the picks lie on the tomogram.
  ``metadata["napari_shrec"]`` records the model, the parameters, the timings, the slab and the
  score; ``metadata["dataset"]`` the dataset folder (for the Score widget).
- with *Keep probability maps*: ``prob <class>: <tomogram>`` (Image, hidden, additive blending,
  the class colour, contrast 0–1), one per class; maps of an earlier run on the same tomogram
  that this run did not make are removed.

*Method* ▸ *Template matching* finds the particles without a trained model instead: each
checked class's template (CTF- and wedge-filtered structure) is matched over the same tomogram
(:func:`~napari_shrec.widgets.match_section.run_template_matching`, as ``napari-shrec match``);
its settings, its ``tm picks: <tomogram>`` Points layer and its ``tm score <class>: <tomogram>``
maps are described in :mod:`napari_shrec.widgets.match_section`. Both methods share the
tomogram, the Run button, the progress row and Cancel.

Other widgets (Train's "Use in Detect") hand a checkpoint over with
:func:`use_checkpoint_in_detect`: open Detect widgets switch to it, and a Detect widget created
later starts with it (:func:`offered_checkpoint`).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass, field, replace
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
from ..core.detect import PEAK_METHODS, TEST_TIME_FLIPS
from ..core.progress import Cancelled, CancelToken, ProgressCallback
from ..settings import settings_or_defaults
from ._common import float_spin, int_spin, report_error, show_layer
from ._task_status import TaskStatusWidget
from .match_section import (
    KIND_TM_SCORE_MAP,
    MatchOutput,
    MatchSection,
    run_template_matching,
    tm_picks_layer,
    tm_score_map_layers,
)

if TYPE_CHECKING:
    import napari

    from ..core.detect import DetectionResult, DetectParams
    from ..layers import LayerDataTuple

__all__ = [
    "DetectWidget",
    "DetectRequest",
    "DetectOutput",
    "run_detection",
    "predictions_layer",
    "probability_map_layers",
    "tomogram_geometry",
    "describe_model",
    "layer_dataset_folder",
    "use_checkpoint_in_detect",
    "offered_checkpoint",
    "predictions_layer_name",
    "SOURCE_LAYER",
    "SOURCE_FILE",
    "MODEL_SHIPPED",
    "MODEL_CHECKPOINT",
    "DEVICE_CHOICES",
    "METHOD_UNET",
    "METHOD_TM",
]

log = logging.getLogger(__name__)

SOURCE_LAYER = "Image layer"
SOURCE_FILE = "File or folder"
MODEL_SHIPPED = "Shipped model"
MODEL_CHECKPOINT = "Checkpoint file"
METHOD_UNET = "3D U-Net"
METHOD_TM = "Template matching"
#: Devices offered for detection ("auto": CUDA → MPS → CPU).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: ``metadata["kind"]`` of the probability-map layers.
KIND_PROBABILITY_MAP = "probability_map"

# --------------------------------------------------------------------------- hand-over
_OFFERED: dict[str, Path | None] = {"checkpoint": None}
_LIVE: weakref.WeakSet[DetectWidget] = weakref.WeakSet()


def use_checkpoint_in_detect(path: str | os.PathLike) -> int:
    """Offer a checkpoint to the Detect widgets: every open one switches to it, and one created
    later starts with it. Returns how many open widgets switched."""
    checkpoint = Path(path).expanduser()
    _OFFERED["checkpoint"] = checkpoint
    n = 0
    for widget in list(_LIVE):
        try:
            widget.set_model_path(checkpoint)
        except RuntimeError:  # its Qt object was deleted
            continue
        n += 1
    return n


def offered_checkpoint() -> Path | None:
    """The checkpoint last handed over with :func:`use_checkpoint_in_detect` (None before)."""
    return _OFFERED["checkpoint"]


# --------------------------------------------------------------------------- helpers
def predictions_layer_name(tomogram: str) -> str:
    """Name of the predictions layer of a tomogram."""
    return f"predictions: {tomogram}"


def _map_layer_name(class_name: str, tomogram: str) -> str:
    return f"prob {class_name}: {tomogram}"


def layer_dataset_folder(metadata: dict[str, Any] | None) -> str | None:
    """The dataset folder a layer belongs to: ``metadata["dataset"]`` (reader, Simulate and
    Reconstruct layers), else ``metadata["napari_shrec"]["simulation_folder"]``."""
    meta = metadata or {}
    folder = meta.get("dataset")
    if not folder:
        nested = meta.get("napari_shrec")
        if isinstance(nested, dict):
            folder = nested.get("simulation_folder")
    return str(folder) if folder else None


def tomogram_geometry(metadata: dict[str, Any] | None, shape_z: int
                      ) -> tuple[Path | None, int, tuple[int, int] | None]:
    """(dataset folder, grandmodel z offset, search slab) of an Image layer from its metadata.

    The offset ``o`` (tomogram z = grandmodel z + o) is ``metadata["grandmodel_z_offset"]`` for a
    reconstruction, 0 for a layer in the grandmodel frame (``metadata["frame"] ==
    "grandmodel"``) or without one. The slab is ``(o, o + nz)`` with ``nz`` the slices of the
    dataset's grandmodel-frame volumes, when it fits in the tomogram; else None (all of it).
    """
    meta = metadata or {}
    folder_text = layer_dataset_folder(meta)
    folder = Path(folder_text) if folder_text else None
    offset = 0 if meta.get("frame") == "grandmodel" else int(meta.get("grandmodel_z_offset") or 0)
    slab = None
    if folder is not None and folder.is_dir():
        try:
            from ..io.dataset import load_dataset
            from ..io.tomogram import grandmodel_nz

            nz = grandmodel_nz(load_dataset(folder))
        except Exception:  # an unreadable dataset: no slab, no scoring
            log.debug("could not read the dataset %s", folder, exc_info=True)
            nz = None
        if nz is not None and 0 <= offset and offset + nz <= int(shape_z):
            slab = (offset, offset + nz)
    return folder, offset, slab


def describe_model(model: Any) -> str:
    """One line about a loaded model: classes, patch, tuned thresholds."""
    names = ", ".join(model.class_names)
    patch = "×".join(str(s) for s in model.patch_size)
    params = model.detect_params()
    tuned = params.class_thresholds
    if tuned:
        thresholds = "tuned thresholds " + ", ".join(f"{k} {v:.2f}" for k, v in tuned.items())
        on = (model.detection or {}).get("tuned_on") or []
        if on:
            thresholds += f" (tuned on {len(on)} volume{'s' if len(on) != 1 else ''})"
    else:
        thresholds = f"no tuned thresholds (min score {params.min_score:g})"
    rescorer = "; candidate rescorer" if model.rescorer is not None else ""
    return (f"{len(model.class_names)} classes: {names}; patch {patch}; "
            f"stride {model.config.output_stride}; {thresholds}{rescorer}")


# --------------------------------------------------------------------------- the work
@dataclass
class DetectRequest:
    """What to detect and how (built in the main thread, read in the worker).

    Attributes:
        name: the tomogram's name (layer name, file name or folder name).
        volume: the (z, y, x) tomogram of a layer (None: read ``path``).
        path: an MRC file or a dataset folder (when ``volume`` is None).
        voxel_size_nm: voxel edge (nm; None: the file's).
        scale_zyx, translate_zyx: placement of the output layers (None: the voxel size, 0).
        slab_z: z range searched (None: all; a dataset folder's own when reading ``path``).
        z_offset: tomogram z = grandmodel z + offset (for scoring).
        dataset_folder: the dataset the tomogram belongs to (scoring, layer metadata).
        model_path: the checkpoint (None: the shipped model).
        model: an already loaded model of ``model_path`` on ``device`` (None: loaded here).
        device: "auto", "cpu", "cuda", "mps".
        use_tuned: the model's tuned per-class thresholds (else ``min_score`` for every class).
        rescore: use the model's candidate rescorer when it has one (classes and scores from
            each candidate's neighbourhood; :mod:`napari_shrec.core.rescore`).
        min_score, overlap, peak_method: detection parameters.
        test_time_flips: flipped copies of each patch the network's output is averaged over
            (1: off; :attr:`~napari_shrec.core.detect.DetectParams.test_time_flips`).
        patch: cubic patch edge (None: the model's).
        keep_maps: return the probability maps.
        score: score the picks against the dataset's ground truth.
        metadata: extra layer metadata (the tomogram layer's frame).
    """

    name: str
    volume: Any = None
    path: Path | None = None
    voxel_size_nm: float | None = None
    scale_zyx: tuple[float, float, float] | None = None
    translate_zyx: tuple[float, float, float] | None = None
    slab_z: tuple[int, int] | None = None
    z_offset: int = 0
    dataset_folder: Path | None = None
    model_path: Path | None = None
    model: Any = None
    device: str = "auto"
    use_tuned: bool = True
    rescore: bool = True
    min_score: float = 0.5
    overlap: float = 0.25
    peak_method: str = "maxpool"
    test_time_flips: int = 1
    patch: int | None = None
    keep_maps: bool = False
    score: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The request without arrays or models (JSON-ready)."""
        return {
            "tomogram": self.name, "path": str(self.path) if self.path else None,
            "voxel_size_nm": self.voxel_size_nm, "slab_z": self.slab_z,
            "z_offset": self.z_offset,
            "model": str(self.model_path) if self.model_path else "shipped",
            "device": self.device, "use_tuned_thresholds": self.use_tuned,
            "rescore": self.rescore,
            "min_score": self.min_score, "overlap": self.overlap,
            "peak_method": self.peak_method, "test_time_flips": self.test_time_flips,
            "patch": self.patch, "keep_probability_maps": self.keep_maps, "score": self.score,
        }


@dataclass
class DetectOutput:
    """What :func:`run_detection` hands back to the widget.

    Attributes:
        result: the :class:`~napari_shrec.core.detect.DetectionResult` (particles in tomogram
            voxels x, y, z, sorted by score; maps when asked for).
        request: the request (its ``volume`` dropped).
        model: the loaded model (reused by the next run).
        params: the detection parameters used.
        voxel_size_nm, scale_zyx, translate_zyx, slab_z, z_offset, dataset_folder: as used.
        shape_zyx: the tomogram's shape.
        elapsed_s: wall time (model loading and scoring included).
        score: {"loc_F1", "mean_class_F1", "recall", "precision", "N_gt", "RR"} against the
            dataset's ground truth (None when not scored).
        score_error: why scoring failed (the detections are shown all the same).
    """

    result: DetectionResult
    request: DetectRequest
    model: Any
    params: DetectParams
    voxel_size_nm: float
    scale_zyx: tuple[float, float, float]
    translate_zyx: tuple[float, float, float]
    slab_z: tuple[int, int] | None
    z_offset: int
    dataset_folder: Path | None
    shape_zyx: tuple[int, int, int]
    elapsed_s: float = 0.0
    score: dict[str, float] | None = None
    score_error: str | None = None


def _open_path(path: Path) -> tuple[Any, float, tuple[int, int] | None, int, Path | None]:
    """(volume data, voxel size nm, slab, z offset, dataset folder) of a file or folder."""
    from ..io.tomogram import open_tomogram

    opened = open_tomogram(path, reconstruct_hint="reconstruct it first (Reconstruct widget)")
    volume, ds = opened.volume, opened.dataset
    if ds is None:
        return volume.data, float(np.mean(volume.voxel_size_nm)), None, 0, None
    z0, nz = opened.z_offset, opened.grandmodel_nz
    slab = (z0, z0 + nz) if nz is not None and z0 + nz <= volume.shape[0] else None
    return volume.data, float(ds.voxel_size_nm), slab, z0, Path(ds.folder)


def _score(particles: Any, folder: Path, z_offset: int, name: str,
           cancel: CancelToken | None) -> dict[str, float]:
    from ..core.score import ScoreParams, score_submission
    from ..io.dataset import load_dataset, scoring_ground_truth

    gt = scoring_ground_truth(load_dataset(folder))
    picks = particles.copy()
    if z_offset:
        picks.table["z"] = picks.table["z"] - z_offset
    result = score_submission(gt.particles, gt.occupancy_mask, picks, ScoreParams(mode="native"),
                              class_table=gt.class_table, submission_name=name, cancel=cancel)
    return {"loc_F1": float(result.F1), "mean_class_F1": float(result.mean_class_F1),
            "recall": float(result.recall), "precision": float(result.precision),
            "N_gt": int(result.N_gt), "RR": int(result.RR)}


def run_detection(
    request: DetectRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> DetectOutput:
    """Load the model and the tomogram of a request, detect, and score when asked (no napari,
    no Qt).

    Raises:
        FileNotFoundError: a missing checkpoint (or shipped model), tomogram or dataset volume.
        CheckpointError, MrcReadError, ValueError: unreadable files, bad parameters (a patch
            that is not a multiple of the model's ``2**depth``, a 2D image …).
        Cancelled: the token was cancelled.
    """
    from ..core.pretrained import detect_with_model, load_model

    start = time.perf_counter()
    if progress is not None:
        progress(0, 0, "loading the model")
    model = request.model if request.model is not None else load_model(
        request.model_path, device=request.device)
    if cancel is not None:
        cancel.raise_if_cancelled()
    if request.volume is not None:
        data = request.volume
        vs = float(request.voxel_size_nm or settings_or_defaults().default_voxel_size_nm)
        slab, z_offset, folder = request.slab_z, int(request.z_offset), request.dataset_folder
    else:
        if request.path is None:
            raise ValueError("no tomogram: choose an Image layer or a file")
        if progress is not None:
            progress(0, 0, "reading the tomogram")
        data, vs, slab, z_offset, folder = _open_path(request.path)
        if request.voxel_size_nm:
            vs = float(request.voxel_size_nm)
    if np.ndim(data) != 3:
        raise ValueError(f"{request.name}: detection needs a 3D (z, y, x) tomogram, got shape "
                         f"{tuple(np.shape(data))}")
    params = model.detect_params(rescore=request.rescore)
    changes: dict[str, Any] = {"overlap": float(request.overlap),
                               "peak_method": request.peak_method,
                               "test_time_flips": int(request.test_time_flips),
                               "keep_probability_maps": bool(request.keep_maps)}
    if not request.use_tuned:
        changes.update(min_score=float(request.min_score), class_thresholds=None)
    params = params.replace(**changes)
    patch = (int(request.patch),) * 3 if request.patch else None
    result = detect_with_model(data, model, params, voxel_size_nm=vs, slab_z=slab,
                               patch_size=patch, rescore=request.rescore, progress=progress,
                               cancel=cancel)
    score = score_error = None
    if request.score and folder is not None:
        if progress is not None:
            progress(0, 0, "scoring against the ground truth")
        try:
            score = _score(result.particles, folder, z_offset, request.name, cancel)
        except Cancelled:
            raise
        except Exception as exc:  # the detections are still worth showing
            score_error = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args \
                else str(exc)
    scale = request.scale_zyx or (vs, vs, vs)
    translate = request.translate_zyx or (0.0, 0.0, 0.0)
    shape = tuple(int(s) for s in np.shape(data))
    kept = replace(request, volume=None, model=None)
    return DetectOutput(result=result, request=kept, model=model, params=params,
                        voxel_size_nm=vs, scale_zyx=tuple(float(s) for s in scale),
                        translate_zyx=tuple(float(t) for t in translate), slab_z=slab,
                        z_offset=int(z_offset), dataset_folder=folder,
                        shape_zyx=shape,  # type: ignore[arg-type]
                        elapsed_s=time.perf_counter() - start, score=score,
                        score_error=score_error)


def _provenance(output: DetectOutput) -> dict[str, Any]:
    model = output.model
    result = output.result
    return {
        "detector": "napari-shrec unet3d",
        "model": str(model.path) if getattr(model, "path", None) else None,
        "model_created": (model.provenance or {}).get("created"),
        "model_classes": list(model.class_names),
        "device": str(model.device),
        "tomogram": output.request.name,
        "request": output.request.settings(),
        "params": output.params.to_dict(),
        "timings_s": {k: round(float(v), 4) for k, v in result.timings_s.items()},
        "n_patches": int(result.n_patches),
        "slab_z": list(result.slab_z),
        "grandmodel_z_offset": int(output.z_offset),
        "elapsed_s": round(float(output.elapsed_s), 3),
        "score": dict(output.score) if output.score else None,
    }


def predictions_layer(output: DetectOutput) -> LayerDataTuple:
    """The Points layer-data tuple of a detection (``predictions: <tomogram>``), on the
    tomogram's scale and translation; features ``class``, ``score``, ``source``."""
    from ..layers import particles_to_points_layer

    meta: dict[str, Any] = dict(output.request.metadata)
    if output.dataset_folder is not None:
        meta["dataset"] = str(output.dataset_folder)
    meta["napari_shrec"] = _provenance(output)
    data, kwargs, kind = particles_to_points_layer(
        output.result.particles, predictions_layer_name(output.request.name), source="predicted",
        voxel_size_nm=output.voxel_size_nm, metadata=meta)
    kwargs["scale"] = tuple(output.scale_zyx)
    kwargs["translate"] = tuple(output.translate_zyx)
    return (data, kwargs, kind)


def probability_map_layers(output: DetectOutput) -> list[LayerDataTuple]:
    """One hidden Image layer-data tuple per class (``prob <class>: <tomogram>``), additive
    blending in the class colour, contrast 0–1; empty without maps."""
    from napari.utils.colormaps import Colormap

    from ..layers import AXIS_LABELS, UNITS_NM, class_color

    maps = output.result.probability_maps
    if maps is None:
        return []
    tomogram = output.request.name
    layers: list[LayerDataTuple] = []
    for k, name in enumerate(output.result.class_names, start=1):
        rgba = [float(c) for c in class_color(name)[:3]]
        colormap = Colormap(colors=[[0.0, 0.0, 0.0, 1.0], [*rgba, 1.0]],
                            name=f"napari-shrec {name}")
        layer_name = _map_layer_name(name, tomogram)
        kwargs = {
            "name": layer_name,
            "scale": tuple(output.scale_zyx),
            "translate": tuple(output.translate_zyx),
            "units": UNITS_NM,
            "axis_labels": AXIS_LABELS,
            "colormap": colormap,
            "contrast_limits": (0.0, 1.0),
            "blending": "additive",
            "visible": False,
            "metadata": {"kind": KIND_PROBABILITY_MAP, "class": name, "tomogram": tomogram,
                         "napari_shrec": {"model": _provenance(output)["model"],
                                          "channel": k}},
        }
        layers.append((maps[k], kwargs, "image"))
    return layers


# --------------------------------------------------------------------------- the widget
class DetectWidget(QWidget):
    """The Detect dock widget (see the module docstring).

    Attributes:
        last_output: the :class:`DetectOutput` of the last successful run (None before).
        last_layer: the predictions layer it was shown in.
        last_map_layers: its probability-map layers (empty without maps).
        model_summary: what :meth:`inspect_model` found (None before or on error).
        last_match_output: the :class:`~napari_shrec.widgets.match_section.MatchOutput` of the
            last template-matching run (None before); last_match_layer, last_match_map_layers:
            its picks and score-map layers.
        match_section: the template-matching settings.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # the real viewer, not napari's PublicOnlyProxy (layers must be the same objects as in
        # events, and their data go to a worker thread)
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.runner = TaskRunner()
        self.last_output: DetectOutput | None = None
        self.last_layer: Any = None
        self.last_map_layers: list[Any] = []
        self.model_summary: str | None = None
        self.last_match_output: MatchOutput | None = None
        self.last_match_layer: Any = None
        self.last_match_map_layers: list[Any] = []
        self._models: dict[tuple, Any] = {}
        self._inspected_model_key: tuple | None = None
        self._auto_path: str | None = None
        # the layer the widget chose by itself (re-chosen as layers come), None after the user
        # picked one
        self._auto_layer: str | None = None
        self._shown_once = False

        # --- input
        self.source_combo = QComboBox()
        self.source_combo.addItems([SOURCE_LAYER, SOURCE_FILE])
        self.source_combo.setToolTip("Image layer: an open 3D image (its voxel size and, for a "
                                     "dataset's reconstruction, its sample slab). File or folder: "
                                     "a tomogram MRC, or a dataset folder's reconstruction.mrc")
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The tomogram to search (3D Image layers); the picks take "
                                    "its scale and translation")
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("tomogram (.mrc) or dataset folder")
        self.path_edit.setToolTip("A tomogram MRC (searched whole, voxel size from its header) "
                                  "or a dataset folder (its reconstruction.mrc over the sample "
                                  "slab; its ground truth for scoring)")
        self.path_edit.editingFinished.connect(self.inspect_input)
        self.file_button = QPushButton("File…")
        self.file_button.setToolTip("Choose a tomogram MRC file")
        self.file_button.clicked.connect(self._browse_file)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setToolTip("Choose a dataset folder or an OME-Zarr image folder")
        self.folder_button.clicked.connect(self._browse_folder)
        self.input_info = QLabel("No input")
        self.input_info.setWordWrap(True)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(self.file_button)
        path_row.addWidget(self.folder_button)
        input_form = QFormLayout()
        input_form.addRow("Source", self.source_combo)
        input_form.addRow("Layer", self.layer_combo)
        input_form.addRow("File", path_row)
        input_form.addRow(self.input_info)
        input_box = QGroupBox("Tomogram")
        input_box.setLayout(input_form)

        # --- model
        self.model_combo = QComboBox()
        self.model_combo.addItems([MODEL_SHIPPED, MODEL_CHECKPOINT])
        self.model_combo.setToolTip("Shipped model: trained by napari-shrec on simulated "
                                    "shrec2020 tomograms. Checkpoint file: a model from Train or "
                                    "'napari-shrec train'")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model checkpoint (.pt)")
        self.model_edit.setToolTip("A checkpoint written by Train / napari-shrec train (the "
                                   "best one is NAME.best.pt)")
        self.model_edit.editingFinished.connect(self.inspect_model)
        self.model_button = QPushButton("Browse…")
        self.model_button.setToolTip("Choose a model checkpoint")
        self.model_button.clicked.connect(self._browse_model)
        self.model_info = QLabel("Model not read yet")
        self.model_info.setWordWrap(True)
        self.model_info.setToolTip("The model's classes, patch size, output stride and the "
                                   "per-class thresholds tuned on validation data")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(self.model_button)
        model_form = QFormLayout()
        model_form.addRow("Model", self.model_combo)
        model_form.addRow("Checkpoint", model_row)
        model_form.addRow(self.model_info)
        model_box = QGroupBox("Model")
        model_box.setLayout(model_form)

        # --- parameters
        self.tuned_check = QCheckBox("Use the model's tuned thresholds")
        self.tuned_check.setChecked(True)
        self.tuned_check.setToolTip("The per-class score thresholds saved with the model (tuned "
                                    "on validation data); off: Min score for every class")
        self.min_score_spin = float_spin(0.0, 1.0, 0.5, 2, 0.05, "Minimum score (peak class "
                                         "probability, 0–1) of a detection, every class")
        self.overlap_spin = float_spin(0.0, 0.9, 0.25, 2, 0.05, "Fraction of the patch shared "
                                       "by neighbouring patches, per axis (0.25; 0.5 on a GPU is "
                                       "worth it: cost grows as 1 / (1 − overlap)³)")
        self.peak_combo = QComboBox()
        self.peak_combo.addItems(list(PEAK_METHODS))
        self.peak_combo.setToolTip("maxpool: smoothed maxima with ball non-maximum suppression "
                                   "(default); components: connected components above the "
                                   "threshold")
        self.flips_spin = int_spin(1, len(TEST_TIME_FLIPS), 1, "Average the network over this "
                                   "many flipped copies of each patch (wedge-preserving flips; "
                                   "1: off). Inference time grows by the same factor", "×")
        self.patch_spin = int_spin(0, 512, 0, "Cubic patch edge (voxels), a multiple of the "
                                   "model's 2^depth; 0: the model's own", " vox")
        self.patch_spin.setSingleStep(8)
        self.patch_spin.setSpecialValueText("model's")
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setCurrentText(settings_or_defaults().default_device)
        self.device_combo.setToolTip("auto: a CUDA GPU, else Apple MPS, else the CPU")
        self.maps_check = QCheckBox("Keep probability maps")
        self.maps_check.setToolTip("Add each class's probability map as a hidden Image layer "
                                   "(additive, class colour; memory: classes × voxels × 2 bytes)")
        self.rescore_check = QCheckBox("Rescore candidates")
        self.rescore_check.setChecked(True)
        self.rescore_check.setToolTip("Use the model's candidate rescorer: each candidate's "
                                      "class and score (1 − P(background)) come from the mean "
                                      "class probabilities around it, not from its single peak "
                                      "voxel. Offered when the model has one")
        self.score_check = QCheckBox("Score against the ground truth")
        self.score_check.setToolTip("Inputs from a dataset folder with occupancy_mask.mrc: score "
                                    "the picks with the SHREC scorer (native mode) and show the "
                                    "localization F1 and mean class F1")
        params_form = QFormLayout()
        params_form.addRow("", self.tuned_check)
        params_form.addRow("", self.rescore_check)
        params_form.addRow("Min score", self.min_score_spin)
        params_form.addRow("Overlap", self.overlap_spin)
        params_form.addRow("Peak method", self.peak_combo)
        params_form.addRow("Test-time flips", self.flips_spin)
        params_form.addRow("Patch edge", self.patch_spin)
        params_form.addRow("Device", self.device_combo)
        params_form.addRow("", self.maps_check)
        params_form.addRow("", self.score_check)
        params_box = QGroupBox("Detection")
        params_box.setLayout(params_form)

        # --- method: a trained U-Net, or template matching
        self.method_combo = QComboBox()
        self.method_combo.addItems([METHOD_UNET, METHOD_TM])
        self.method_combo.setToolTip("3D U-Net: a trained particle picker (fast; needs a "
                                     "model). Template matching: each class's structure matched "
                                     "over the tomogram (the paper's TM-T / TM-F baseline; no "
                                     "training, slow)")
        method_form = QFormLayout()
        method_form.addRow("Method", self.method_combo)
        self.method_box = QWidget()
        self.method_box.setLayout(method_form)
        self.match_section = MatchSection()
        self._unet_boxes = (model_box, params_box)

        # --- run, status
        self.run_button = QPushButton("Detect")
        self.run_button.clicked.connect(self.start_detection)
        self.status = TaskStatusWidget(self.runner)
        self.runner.busy_changed.connect(self._on_busy_changed)

        self._input_boxes = (self.method_box, input_box, model_box, params_box,
                             self.match_section)
        layout = QVBoxLayout()
        for box in self._input_boxes:
            layout.addWidget(box)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setLayout(layout)

        self.source_combo.currentTextChanged.connect(self._on_source_changed)
        self.layer_combo.activated.connect(self._on_layer_picked)
        self.layer_combo.currentTextChanged.connect(self.inspect_input)
        self.model_combo.currentTextChanged.connect(self._on_model_choice)
        self.method_combo.currentTextChanged.connect(self._on_method_changed)
        self.tuned_check.toggled.connect(self._update_enabled)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)
        events.inserted.connect(self._on_inserted)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        _LIVE.add(self)
        offered = offered_checkpoint()
        if offered is not None:
            self.model_combo.setCurrentText(MODEL_CHECKPOINT)
            self.model_edit.setText(str(offered))
        self._update_rows()
        self._update_method()
        self._refresh_layers()
        self._update_enabled()

    # ------------------------------------------------------------------ method
    def method(self) -> str:
        """The chosen method: :data:`METHOD_UNET` or :data:`METHOD_TM`."""
        return self.method_combo.currentText()

    def set_method(self, method: str) -> None:
        """Find particles with the 3D U-Net (:data:`METHOD_UNET`) or by template matching
        (:data:`METHOD_TM`)."""
        if method not in (METHOD_UNET, METHOD_TM):
            raise ValueError(f"method must be {METHOD_UNET!r} or {METHOD_TM!r}, got {method!r}")
        self.method_combo.setCurrentText(method)

    def _on_method_changed(self, *_: Any) -> None:
        self._update_method()
        if self.method() == METHOD_UNET and self._shown_once and self.model_summary is None:
            self.inspect_model()

    def _update_method(self) -> None:
        tm = self.method() == METHOD_TM
        for box in self._unet_boxes:
            box.setVisible(not tm)
        self.match_section.setVisible(tm)
        if tm:
            self.run_button.setText("Match templates")
            self.run_button.setToolTip("Match the checked classes' templates in the background "
                                       "(progress bar and Cancel); the tm picks layer is added, "
                                       "or replaced by name")
        else:
            self.run_button.setText("Detect")
            self.run_button.setToolTip("Detect in the background (progress bar and Cancel); the "
                                       "predictions layer is added, or replaced by name")

    # ------------------------------------------------------------------ inputs
    def input_kind(self) -> str:
        return self.source_combo.currentText()

    def set_layer(self, layer: Any | str) -> None:
        """Detect on an open Image layer (or its name)."""
        name = layer if isinstance(layer, str) else layer.name
        self.source_combo.setCurrentText(SOURCE_LAYER)
        self._refresh_layers()
        self.layer_combo.setCurrentText(name)
        self._auto_layer = None
        self.inspect_input()

    def set_path(self, path: str | os.PathLike) -> None:
        """Detect on a tomogram MRC file or a dataset folder."""
        self.source_combo.setCurrentText(SOURCE_FILE)
        self.path_edit.setText(str(Path(path).expanduser()))
        self.inspect_input()

    def set_model_path(self, path: str | os.PathLike | None) -> None:
        """Detect with a checkpoint (None: the shipped model)."""
        if path is None:
            self.model_combo.setCurrentText(MODEL_SHIPPED)
        else:
            self.model_edit.setText(str(Path(path).expanduser()))
            self.model_combo.setCurrentText(MODEL_CHECKPOINT)
        self._update_rows()
        self.inspect_model()

    def _on_source_changed(self, *_: Any) -> None:
        self._update_rows()
        self.inspect_input()

    def _on_model_choice(self, *_: Any) -> None:
        self._update_rows()
        self.inspect_model()

    def _update_rows(self) -> None:
        layer = self.input_kind() == SOURCE_LAYER
        self.layer_combo.setEnabled(layer)
        for widget in (self.path_edit, self.file_button, self.folder_button):
            widget.setEnabled(not layer)
        checkpoint = self.model_combo.currentText() == MODEL_CHECKPOINT
        self.model_edit.setEnabled(checkpoint)
        self.model_button.setEnabled(checkpoint)

    def _update_enabled(self, *_: Any) -> None:
        self.min_score_spin.setEnabled(not self.tuned_check.isChecked())

    @staticmethod
    def _is_tomogram(layer: Any) -> bool:
        from napari.layers import Image

        if not isinstance(layer, Image) or layer.rgb or layer.ndim != 3:
            return False
        return (layer.metadata or {}).get("kind") not in (KIND_PROBABILITY_MAP,
                                                          KIND_TM_SCORE_MAP)

    def _on_inserted(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self._refresh_layers)

    def _refresh_layers(self, *_: Any) -> None:
        """List the 3D Image layers (top-most first); keep the chosen one, else choose the
        top-most reconstruction, else the top-most image. Fills the file field with a dataset
        folder named by the layers while it is empty or was filled in this way."""
        layers = [layer for layer in reversed(list(self.viewer.layers))
                  if self._is_tomogram(layer)]
        names = [layer.name for layer in layers]
        current = self.layer_combo.currentText()
        old = [self.layer_combo.itemText(i) for i in range(self.layer_combo.count())]
        if names != old:
            self.layer_combo.blockSignals(True)
            self.layer_combo.clear()
            self.layer_combo.addItems(names)
            if current in names and current != self._auto_layer:
                choice = current  # the user's choice stays
            else:
                recon = [layer.name for layer in layers
                         if (layer.metadata or {}).get("volume") == "reconstruction"]
                choice = recon[0] if recon else (names[0] if names else "")
                self._auto_layer = choice or None
            self.layer_combo.setCurrentText(choice)
            self.layer_combo.blockSignals(False)
            if choice != current or not names:
                self.inspect_input()
        text = self.path_edit.text().strip()
        if not text or text == self._auto_path:
            for layer in reversed(list(self.viewer.layers)):
                folder = layer_dataset_folder(getattr(layer, "metadata", None))
                if folder:
                    if folder != text:
                        self._auto_path = folder
                        self.path_edit.setText(folder)
                        if self.input_kind() == SOURCE_FILE:
                            self.inspect_input()
                    break

    def _on_layer_picked(self, _index: int) -> None:
        """The user chose a layer: keep it when layers come and go."""
        self._auto_layer = None

    def selected_layer(self) -> Any:
        """The chosen Image layer (None when there is none)."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Tomogram", self.path_edit.text(),
            "MRC volumes (*.mrc *.rec *.map);;All files (*)")
        if path:
            self.set_path(path)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset or OME-Zarr folder",
                                                  self.path_edit.text())
        if folder:
            self.set_path(folder)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model checkpoint", self.model_edit.text(),
            "PyTorch checkpoints (*.pt);;All files (*)")
        if path:
            self.set_model_path(path)

    def _layer_input(self, layer: Any) -> dict[str, Any]:
        """Data, voxel size, placement, slab and dataset of an Image layer."""
        meta = dict(layer.metadata or {})
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        shape = tuple(int(s) for s in np.shape(data))
        vs_meta = meta.get("voxel_size_nm")
        if vs_meta is not None:
            vs = float(np.ravel(vs_meta)[-1])
        else:
            vs = float(np.asarray(layer.scale, dtype=float)[-1])
        folder, offset, slab = tomogram_geometry(meta, shape[0])
        extra = {k: meta[k] for k in ("frame", "grandmodel_z_offset", "flavour") if k in meta}
        return {"data": data, "shape": shape, "voxel_size_nm": vs,
                "scale": tuple(float(s) for s in np.asarray(layer.scale, dtype=float)[-3:]),
                "translate": tuple(float(t)
                                   for t in np.asarray(layer.translate, dtype=float)[-3:]),
                "dataset": folder, "z_offset": offset, "slab": slab, "metadata": extra}

    def _path_input(self) -> dict[str, Any]:
        """Shape, voxel size, slab and dataset of the file or folder (headers only)."""
        from ..io.dataset import is_dataset_folder, load_dataset
        from ..io.mrc import read_mrc_header
        from ..io.tomogram import grandmodel_nz
        from ..io.zarr import is_ome_zarr, read_ome_zarr_info

        text = self.path_edit.text().strip()
        if not text:
            raise ValueError("choose a tomogram file, an OME-Zarr folder or a dataset folder "
                             "(or switch Source to Image layer)")
        path = Path(text).expanduser()
        if path.is_dir() and is_ome_zarr(path):
            info = read_ome_zarr_info(path)
            return {"path": path, "shape": tuple(int(n) for n in info.shapes_zyx[0]),
                    "voxel_size_nm": float(np.mean(info.voxel_sizes_nm[0])), "dataset": None,
                    "z_offset": 0, "slab": None}
        if path.is_dir():
            if not is_dataset_folder(path):
                raise FileNotFoundError(f"{path}: neither an OME-Zarr image nor a dataset "
                                        "folder; choose a tomogram MRC file")
            ds = load_dataset(path)
            if not ds.has("reconstruction"):
                raise FileNotFoundError(f"{path}: no reconstruction.mrc; reconstruct it first "
                                        "(Reconstruct widget)")
            shape = tuple(int(s) for s in ds.headers["reconstruction"]["shape_zyx"])
            z0 = int(ds.grandmodel_z_offset)
            nz = grandmodel_nz(ds)
            slab = (z0, z0 + nz) if nz is not None and z0 + nz <= shape[0] else None
            return {"path": path, "shape": shape, "voxel_size_nm": float(ds.voxel_size_nm),
                    "dataset": Path(ds.folder), "z_offset": z0, "slab": slab}
        if not path.is_file():
            raise FileNotFoundError(f"no such tomogram: {path}")
        header = read_mrc_header(path)
        return {"path": path, "shape": tuple(header["shape_zyx"]),
                "voxel_size_nm": float(np.mean(header["voxel_size_nm"])), "dataset": None,
                "z_offset": 0, "slab": None}

    def _input(self) -> dict[str, Any]:
        if self.input_kind() == SOURCE_LAYER:
            layer = self.selected_layer()
            if layer is None:
                raise ValueError("open a tomogram (3D Image layer), or switch Source to File "
                                 "or folder")
            return {"name": layer.name, **self._layer_input(layer)}
        spec = self._path_input()
        return {"name": spec["path"].name or str(spec["path"]), **spec}

    def inspect_input(self, *_: Any) -> dict[str, Any] | None:
        """Describe the input under it (shape, voxel size, slab, dataset) and enable scoring
        when it belongs to a dataset folder. Problems go to that line, never raised."""
        try:
            spec = self._input()
        except Exception as exc:  # a Qt slot: never raise
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            self.input_info.setText(f"⚠ {message}")
            self.score_check.setEnabled(False)
            self.match_section.set_dataset(None)
            return None
        nz, ny, nx = (list(spec["shape"]) + [0, 0, 0])[:3]
        parts = [f"{nx} × {ny} × {nz} voxels (x, y, z) of {spec['voxel_size_nm']:g} nm"]
        if len(spec["shape"]) != 3:
            parts = [f"⚠ not a 3D volume: shape {tuple(spec['shape'])}"]
        slab = spec["slab"]
        parts.append(f"searched z {slab[0]}…{slab[1] - 1}" if slab else "searched whole")
        folder = spec["dataset"]
        parts.append(f"dataset {Path(folder).name}" if folder else "no dataset (no scoring)")
        self.input_info.setText("; ".join(parts))
        self.score_check.setEnabled(folder is not None)
        if folder is None:
            self.score_check.setChecked(False)
        self.match_section.set_dataset(folder)
        return spec

    # ------------------------------------------------------------------ model
    def model_path(self) -> Path | None:
        """The chosen checkpoint (None: the shipped model), without checking it exists."""
        if self.model_combo.currentText() == MODEL_SHIPPED:
            return None
        text = self.model_edit.text().strip()
        return Path(text).expanduser() if text else None

    def _resolved_model_path(self) -> Path:
        """The checkpoint file to load (the shipped one for the shipped model).

        Raises:
            FileNotFoundError: no such checkpoint, or the shipped model is missing.
            ValueError: Checkpoint file chosen but none given.
        """
        if self.model_combo.currentText() == MODEL_SHIPPED:
            from ..core.pretrained import default_model_path

            try:
                return default_model_path()
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{exc} (here: choose Model ▸ {MODEL_CHECKPOINT})") \
                    from None
        path = self.model_path()
        if path is None:
            raise ValueError("choose a model checkpoint (.pt), or the shipped model")
        if not path.is_file():
            raise FileNotFoundError(f"no such model checkpoint: {path}")
        return path

    @staticmethod
    def _model_key(path: Path, device: str) -> tuple:
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size, device)

    def _cached_model(self, path: Path, device: str) -> Any:
        from ..core.devices import resolve_torch_device

        try:
            return self._models.get(self._model_key(path, resolve_torch_device(device)))
        except OSError:
            return None

    def _remember_model(self, model: Any) -> None:
        path = getattr(model, "path", None)
        if path is None:
            return
        try:
            key = self._model_key(Path(path), str(model.device))
        except OSError:
            return
        if len(self._models) >= 2 and key not in self._models:
            self._models.pop(next(iter(self._models)))
        self._models[key] = model

    def inspect_model(self, *_: Any) -> str | None:
        """Read the chosen model (on the CPU) and show its classes, patch and tuned
        thresholds; "Use the model's tuned thresholds" is offered only when it has some.
        Problems go to the line under it, never raised. Returns the summary."""
        try:
            path = self._resolved_model_path()
            model = self._cached_model(path, "cpu")
            if model is None:
                from ..core.nets.checkpoint import load_checkpoint

                model = load_checkpoint(path, device="cpu")
                self._remember_model(model)
            summary = describe_model(model)
        except Exception as exc:  # a Qt slot: never raise (missing file, damaged checkpoint)
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            self.model_info.setText(f"⚠ {message}")
            self.model_summary = None
            return None
        key = self._model_key(path, "cpu")
        if key != self._inspected_model_key:  # a new model: its own saved settings
            params = model.detect_params()
            self.overlap_spin.setValue(float(params.overlap))
            self.peak_combo.setCurrentText(params.peak_method)
            self.flips_spin.setValue(int(params.test_time_flips))
            self.min_score_spin.setValue(float(params.min_score))
            self.rescore_check.setEnabled(model.rescorer is not None)
            self.rescore_check.setChecked(model.rescorer is not None)
            self._inspected_model_key = key
        self.model_info.setText(summary)
        self.model_summary = summary
        return summary

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """Read the model the first time the widget is shown (not when it is built, so that
        docking every widget does not import PyTorch)."""
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if self.model_summary is None and self.method() == METHOD_UNET:
                self.inspect_model()

    # ------------------------------------------------------------------ running
    def request(self) -> DetectRequest:
        """The detection request set in the widget.

        Raises:
            ValueError, FileNotFoundError: no tomogram, a missing file, folder or checkpoint.
        """
        model_path = self._resolved_model_path()
        spec = self._input()
        if len(spec["shape"]) != 3:
            raise ValueError(f"{spec['name']}: detection needs a 3D (z, y, x) tomogram, got "
                             f"shape {tuple(spec['shape'])}")
        device = self.device_combo.currentText()
        patch = int(self.patch_spin.value())
        if patch % 8:
            raise ValueError(f"the patch edge ({patch} voxels) must be a multiple of 8 (0: the "
                             "model's own)")
        layer_input = self.input_kind() == SOURCE_LAYER
        return DetectRequest(
            name=spec["name"],
            volume=spec["data"] if layer_input else None,
            path=None if layer_input else spec["path"],
            voxel_size_nm=spec["voxel_size_nm"] if layer_input else None,
            scale_zyx=spec["scale"] if layer_input else None,
            translate_zyx=spec["translate"] if layer_input else None,
            slab_z=spec["slab"], z_offset=int(spec["z_offset"]),
            dataset_folder=Path(spec["dataset"]) if spec["dataset"] else None,
            model_path=model_path, model=self._cached_model(model_path, device),
            device=device, use_tuned=self.tuned_check.isChecked(),
            rescore=self.rescore_check.isChecked(),
            min_score=float(self.min_score_spin.value()),
            overlap=float(self.overlap_spin.value()),
            peak_method=self.peak_combo.currentText(),
            test_time_flips=int(self.flips_spin.value()), patch=patch or None,
            keep_maps=self.maps_check.isChecked(),
            score=self.score_check.isChecked() and spec["dataset"] is not None,
            metadata=dict(spec.get("metadata") or {}))

    def start_detection(self) -> bool:
        """The Run button: check the inputs and run the chosen method (synchronously when
        threads are off). Errors go to the status line and a napari notification, never
        raised. Returns whether a run was started."""
        if self.method() == METHOD_TM:
            return self.start_matching()
        try:
            request = self.request()
        except Exception as exc:  # missing files, unreadable headers, bad settings
            self._show_error(exc)
            return False
        self.runner.start(run_detection, request, on_result=self._on_result,
                          on_error=self._show_error, on_cancelled=self._on_cancelled,
                          description=f"Detecting particles in {request.name}")
        return True

    def start_matching(self) -> bool:
        """Template matching on the chosen tomogram with the section's settings (whatever the
        method combo says). Errors go to the status line and a napari notification, never
        raised. Returns whether a run was started."""
        try:
            request = self.match_section.request(
                self._input(), layer_input=self.input_kind() == SOURCE_LAYER)
        except Exception as exc:  # no classes, missing files, unreadable headers, bad settings
            self._show_match_error(exc)
            return False
        self.runner.start(run_template_matching, request, on_result=self._on_match_result,
                          on_error=self._show_match_error, on_cancelled=self._on_cancelled,
                          description=f"Template matching in {request.name}")
        return True

    def cancel(self) -> None:
        """Stop the running detection or template matching (nothing is shown)."""
        self.runner.cancel()

    def _on_busy_changed(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        for box in self._input_boxes:
            box.setEnabled(not busy)
        if not busy:
            self._update_rows()
            self._update_enabled()
            self.match_section.update_enabled()

    def _on_cancelled(self) -> None:
        self.status.status.setText("Cancelled: no predictions shown")

    def _show_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Detect", exc)

    def _show_match_error(self, exc: BaseException) -> None:
        report_error(self.status.status, "Template matching", exc)

    # ------------------------------------------------------------------ results
    def _on_result(self, output: DetectOutput) -> None:
        self.last_output = output
        self._remember_model(output.model)
        self.last_layer = show_layer(self.viewer, predictions_layer(output))
        maps = [show_layer(self.viewer, layer_data)
                for layer_data in probability_map_layers(output)]
        keep = {id(layer) for layer in maps}
        for layer in list(self.viewer.layers):
            meta = layer.metadata or {}
            if (meta.get("kind") == KIND_PROBABILITY_MAP
                    and meta.get("tomogram") == output.request.name and id(layer) not in keep):
                self.viewer.layers.remove(layer)
        self.last_map_layers = maps
        self.status.status.setText(self.summary(output))

    def _on_match_result(self, output: MatchOutput) -> None:
        self.last_match_output = output
        self.last_match_layer = show_layer(self.viewer, tm_picks_layer(output))
        maps = [show_layer(self.viewer, layer_data) for layer_data in tm_score_map_layers(output)]
        keep = {id(layer) for layer in maps}
        for layer in list(self.viewer.layers):
            meta = layer.metadata or {}
            if (meta.get("kind") == KIND_TM_SCORE_MAP
                    and meta.get("tomogram") == output.request.name and id(layer) not in keep):
                self.viewer.layers.remove(layer)
        self.last_match_map_layers = maps
        self.status.status.setText(self.match_section.summary(output))

    def summary(self, output: DetectOutput) -> str:
        """The status line after a run: counts per class, patches, time, device, score."""
        particles = output.result.particles
        counts = particles.class_counts()
        per_class = ", ".join(f"{name} {int(counts.get(name, 0))}"
                              for name in output.result.class_names if counts.get(name, 0))
        text = (f"Found {len(particles)} particles in {output.request.name} "
                f"({per_class or 'none'}); {output.result.n_patches} patches in "
                f"{output.elapsed_s:.1f} s on {output.model.device}")
        if output.score is not None:
            text += (f"; vs ground truth: loc F1 {output.score['loc_F1']:.3f}, mean class F1 "
                     f"{output.score['mean_class_F1']:.3f}")
        elif output.score_error:
            text += f"; not scored: {output.score_error}"
        return text

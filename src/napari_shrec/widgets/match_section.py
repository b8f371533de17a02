"""The Detect widget's *Template matching* method: find particles by matching each class's
template over a tomogram (the paper's TM-T / TM-F baseline), as ``napari-shrec match`` does.

The tomogram comes from the Detect widget (an Image layer with its voxel size, placement and
sample slab, or a tomogram MRC / dataset folder). This module holds the Qt section with the
template-matching settings (:class:`MatchSection`), the work (:func:`run_template_matching`, no
napari, no Qt) and the layer-data builders (:func:`tm_picks_layer`,
:func:`tm_score_map_layers`).

Settings, in the units of :class:`~napari_shrec.core.tm.MatchParams` and
:class:`~napari_shrec.core.tm_select.SelectParams`:

- *Classes*: a checkable list of the 12 SHREC'20 classes (plus a dataset's other classes);
  default the classes of the dataset's simulation, else all.
- *Angular step* (degrees; 0: each class's Crowther step, the CLI's default), *Strategy*
  (TM-F filtered, TM-T thresholded, statistical), *Expected per class* (N; 0: the SHREC'20
  density scaled to the searched volume), *False-alarm rate* (statistical only), *Low-pass*
  (nm; 0: off), *Invert contrast*, *Device* (auto, cpu, cuda), *Download structures*, *Keep
  score maps*, *Score against the ground truth*.
- Microscope (CTF) and missing wedge: the dataset's simulation record and tilt angles, else
  SHREC'20's 3 µm, 300 kV and −60…60° (shown under the settings).

Templates: :func:`~napari_shrec.core.tm_classes.dataset_templates` (the structures the dataset's
simulation used; else the structure library: ``$NAPARI_SHREC_STRUCTURES``, the download cache,
the RCSB, the class's surrogate shape).

Results, added or replaced by name (the widget does this):

- ``tm picks: <tomogram>`` (Points; :func:`~napari_shrec.layers.particles_to_points_layer`):
  features ``class``, ``score`` (FLCF), ``source`` = "predicted" (so Annotate curates it and
  Score scores it like any predictions layer), ``phi``, ``theta``, ``psi`` (the best rotation,
  ZXZ degrees); the tomogram layer's scale and translation. ``metadata["napari_shrec"]``:
  ``detector`` = "template matching", the parameters, per-class rotations and timings, the
  slab, the score; ``metadata["dataset"]``: the dataset folder.
- with *Keep score maps*: ``tm score <class>: <tomogram>`` (Image, hidden, additive, the class
  colour; the maximum FLCF over the rotations, (z, y, x), 0 outside the searched slab).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.classes import SHREC20_TABLE, SHREC21_TABLE, normalize_class_name
from ..core.progress import Cancelled, CancelToken, ProgressCallback
from ..settings import settings_or_defaults
from ._common import float_spin, int_spin

if TYPE_CHECKING:
    from ..core.particles import ParticleList
    from ..core.tm import MatchParams
    from ..core.tm_select import SelectParams
    from ..layers import LayerDataTuple

__all__ = [
    "MatchSection",
    "MatchRequest",
    "MatchOutput",
    "MatchDefaults",
    "run_template_matching",
    "dataset_match_defaults",
    "tm_picks_layer",
    "tm_score_map_layers",
    "tm_picks_layer_name",
    "tm_score_layer_name",
    "KIND_TM_SCORE_MAP",
    "TM_DEVICES",
    "STRATEGY_LABELS",
    "DEFAULT_ANGULAR_STEP_DEG",
]

#: ``metadata["kind"]`` of the score-map layers.
KIND_TM_SCORE_MAP = "tm_score_map"
#: Devices offered ("auto": CUDA through PyTorch when present, else the CPU).
TM_DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Strategy (SelectParams.strategy) → its label in the widget.
STRATEGY_LABELS: dict[str, str] = {
    "filtered": "TM-F: filtered (skip overlaps)",
    "thresholded": "TM-T: thresholded (top N)",
    "statistical": "statistical (false-alarm rate)",
}
#: PyTom's common angle list of the paper's baseline: 7250 rotations per class.
DEFAULT_ANGULAR_STEP_DEG = 12.85
_SHREC20_WEDGE_DEG = (-60.0, 60.0)


def tm_picks_layer_name(tomogram: str) -> str:
    """Name of the template-matching picks layer of a tomogram."""
    return f"tm picks: {tomogram}"


def tm_score_layer_name(class_name: str, tomogram: str) -> str:
    """Name of a class's template-matching score-map layer."""
    return f"tm score {class_name}: {tomogram}"


# --------------------------------------------------------------------------- dataset defaults
@dataclass(frozen=True)
class MatchDefaults:
    """What a dataset folder says about matching it.

    Attributes:
        classes: the classes of its simulation (None: no napari-shrec simulation record).
        microscope: CTF settings of its simulation ({} : SHREC'20's, the MatchParams defaults).
        tilt_range_deg: (min, max) of its tilt angles (degrees; SHREC'20's −60…60 if unknown).
        surrogate_classes: classes its simulation built from surrogate shapes.
        has_simulation: it has a ``simulation.json``.
    """

    classes: tuple[str, ...] | None = None
    microscope: Mapping[str, float] = field(default_factory=dict)
    tilt_range_deg: tuple[float, float] = _SHREC20_WEDGE_DEG
    surrogate_classes: tuple[str, ...] = ()
    has_simulation: bool = False


def dataset_match_defaults(folder: str | Path | None) -> MatchDefaults:
    """Classes, microscope and tilt range of a dataset folder (SHREC'20 defaults for None).

    Raises:
        FileNotFoundError, DatasetError: the folder is missing or holds no dataset.
    """
    if folder is None:
        return MatchDefaults()
    from ..core.tm_classes import simulated_microscope
    from ..io.dataset import load_dataset

    ds = load_dataset(folder)
    simulation = ds.simulation or {}
    grandmodel = ((simulation.get("params") or {}).get("grandmodel") or {})
    names = [normalize_class_name(c) for c in grandmodel.get("classes") or []]
    tilts = ds.tilt_angles_deg
    tilt_range = _SHREC20_WEDGE_DEG
    if tilts is not None and len(tilts):
        tilt_range = (float(np.min(tilts)), float(np.max(tilts)))
    return MatchDefaults(
        classes=tuple(names) or None,
        microscope=simulated_microscope(ds.simulation),
        tilt_range_deg=tilt_range,
        surrogate_classes=tuple(normalize_class_name(n)
                                for n in simulation.get("surrogate_classes", []) or []),
        has_simulation=ds.simulation is not None)


# --------------------------------------------------------------------------- the work
@dataclass
class MatchRequest:
    """What to match and how (built in the main thread, read in the worker).

    Attributes:
        name: the tomogram's name (layer name, file name or folder name).
        classes: classes to match (canonical names).
        match_params: FLCF settings (step, CTF, wedge, low-pass, device …).
        select_params: how candidates become picks (strategy, N, false-alarm rate).
        volume: the (z, y, x) tomogram of a layer (None: read ``path``).
        path: an MRC file or a dataset folder (when ``volume`` is None).
        voxel_size_nm: voxel edge (nm; None: the file's). Template matching needs isotropic
            voxels.
        scale_zyx, translate_zyx: placement of the output layers (nm; None: the voxel size, 0).
        slab_z: z range searched (None: all; a dataset folder's own when reading ``path``).
        z_offset: tomogram z = grandmodel z + offset (for scoring).
        dataset_folder: the dataset the tomogram belongs to (templates, scoring, metadata).
        templates: {class: potential cube (z, y, x), odd edge, the tomogram's voxel size, or a
            StructureMap}; classes not in it come from the dataset's simulation record, else the
            structure library.
        download: let the structure library fetch missing structures from the RCSB.
        keep_maps: return each class's score map.
        score: score the picks against the dataset's ground truth.
        metadata: extra layer metadata (the tomogram layer's frame).
    """

    name: str
    classes: tuple[str, ...]
    match_params: MatchParams
    select_params: SelectParams
    volume: Any = None
    path: Path | None = None
    voxel_size_nm: float | None = None
    scale_zyx: tuple[float, float, float] | None = None
    translate_zyx: tuple[float, float, float] | None = None
    slab_z: tuple[int, int] | None = None
    z_offset: int = 0
    dataset_folder: Path | None = None
    templates: Mapping[str, Any] | None = None
    download: bool = True
    keep_maps: bool = False
    score: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The request without arrays (JSON-ready)."""
        return {
            "tomogram": self.name, "path": str(self.path) if self.path else None,
            "voxel_size_nm": self.voxel_size_nm,
            "slab_z": list(self.slab_z) if self.slab_z else None, "z_offset": self.z_offset,
            "classes": list(self.classes),
            "templates_given": sorted(self.templates) if self.templates else [],
            "download_structures": self.download, "keep_score_maps": self.keep_maps,
            "score": self.score,
        }


@dataclass
class MatchOutput:
    """What :func:`run_template_matching` hands back.

    Attributes:
        particles: the picks (tomogram voxels x, y, z; ZXZ degrees; score = FLCF), in
            selection order.
        request: the request (its ``volume`` and ``templates`` dropped).
        class_info: {class: {"angles", "angular_step_deg", "mask_radius_vox", "seconds",
            "surrogate", "device", "per_angle_s"}}.
        timings_s: "templates" (building them included), "matching", "selection", "total"
            (of :func:`~napari_shrec.core.tm_classes.match_classes`; seconds).
        score_maps: {class: float32 (z, y, x) maximum FLCF} (empty without ``keep_maps``).
        voxel_size_nm, scale_zyx, translate_zyx, slab_z, z_offset, dataset_folder: as used.
        shape_zyx: the tomogram's shape.
        elapsed_s: wall time (reading, templates and scoring included).
        score: {"loc_F1", "mean_class_F1", "recall", "precision", "N_gt", "RR"} (None when not
            scored); score_error: why scoring failed (the picks are shown all the same).
    """

    particles: ParticleList
    request: MatchRequest
    class_info: dict[str, dict[str, Any]]
    timings_s: dict[str, float]
    score_maps: dict[str, np.ndarray]
    voxel_size_nm: float
    scale_zyx: tuple[float, float, float]
    translate_zyx: tuple[float, float, float]
    slab_z: tuple[int, int]
    z_offset: int
    dataset_folder: Path | None
    shape_zyx: tuple[int, int, int]
    elapsed_s: float = 0.0
    score: dict[str, float] | None = None
    score_error: str | None = None

    @property
    def device(self) -> str:
        """The backend the FFTs ran on ("cpu", "cuda", …)."""
        return str(next(iter(self.class_info.values()), {}).get("device", "?"))

    @property
    def surrogate_classes(self) -> list[str]:
        """Classes matched with their surrogate shape as template."""
        return [name for name, info in self.class_info.items() if info.get("surrogate")]


def run_template_matching(
    request: MatchRequest,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MatchOutput:
    """Read the tomogram of a request, build the templates, match every class, select the picks
    and score them when asked (no napari, no Qt).

    Raises:
        ValueError: no classes, a 2D image, no template for a class, bad parameters.
        FileNotFoundError: a missing tomogram or dataset volume.
        Cancelled: the token was cancelled.
    """
    from ..core.structures import StructureUnavailableError
    from ..core.tm_classes import dataset_templates, match_classes
    from .detect import _open_path, _score

    start = time.perf_counter()
    classes = tuple(normalize_class_name(c) for c in request.classes)
    if not classes:
        raise ValueError("Classes: check at least one class to match")
    if request.volume is not None:
        data = request.volume
        vs = float(request.voxel_size_nm or settings_or_defaults().default_voxel_size_nm)
        slab, z_offset, folder = request.slab_z, int(request.z_offset), request.dataset_folder
    else:
        if request.path is None:
            raise ValueError("no tomogram: choose an Image layer or a file")
        _say(progress, "reading the tomogram")
        data, vs, slab, z_offset, folder = _open_path(request.path)
        if request.voxel_size_nm:
            vs = float(request.voxel_size_nm)
    if np.ndim(data) != 3:
        raise ValueError(f"{request.name}: template matching needs a 3D (z, y, x) tomogram, got "
                         f"shape {tuple(np.shape(data))}")
    if cancel is not None:
        cancel.raise_if_cancelled()

    templates: dict[str, Any] = {normalize_class_name(k): v
                                 for k, v in (request.templates or {}).items()}
    missing = [c for c in classes if c not in templates]
    t_templates = time.perf_counter()
    if missing:
        simulation = None
        if folder is not None:
            from ..io.dataset import load_dataset

            simulation = load_dataset(folder).simulation

        def template_progress(done: int, total: int, message: str = "") -> None:
            _say(progress, f"templates {done}/{total}: {message}")

        try:
            templates.update(dataset_templates(
                missing, simulation, vs, download=request.download,
                progress=template_progress if progress is not None else None, cancel=cancel))
        except StructureUnavailableError as exc:
            raise ValueError(f"no template: {exc}") from None
    t_templates = time.perf_counter() - t_templates

    result = match_classes(data, classes, request.match_params, request.select_params,
                           templates=templates, voxel_size_nm=vs, slab_z=slab,
                           keep_maps=request.keep_maps, progress=progress, cancel=cancel)
    timings = {k: float(v) for k, v in result.timings_s.items()}
    timings["templates"] += t_templates
    maps = {name: r.scores for name, r in result.results.items()}
    result.results.clear()  # the angle-index maps are not shown: free them now

    score = score_error = None
    if request.score and folder is not None:
        _say(progress, "scoring against the ground truth")
        try:
            score = _score(result.particles, folder, z_offset, request.name, cancel)
        except Cancelled:
            raise
        except Exception as exc:  # the picks are still worth showing
            score_error = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args \
                else str(exc)
    scale = request.scale_zyx or (vs, vs, vs)
    translate = request.translate_zyx or (0.0, 0.0, 0.0)
    kept = replace(request, volume=None, templates=None, classes=classes)
    return MatchOutput(
        particles=result.particles, request=kept, class_info=_jsonable(result.class_info),
        timings_s=timings, score_maps=maps,
        voxel_size_nm=vs, scale_zyx=tuple(float(s) for s in scale),  # type: ignore[arg-type]
        translate_zyx=tuple(float(t) for t in translate),  # type: ignore[arg-type]
        slab_z=result.slab_z, z_offset=int(z_offset), dataset_folder=folder,
        shape_zyx=tuple(int(s) for s in np.shape(data)),  # type: ignore[arg-type]
        elapsed_s=time.perf_counter() - start, score=score, score_error=score_error)


def _say(progress: ProgressCallback | None, message: str) -> None:
    if progress is not None:
        progress(0, 0, message)


def _jsonable(value: Any) -> Any:
    """numpy scalars and tuples → plain Python (for layer metadata and JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- layers
def _provenance(output: MatchOutput) -> dict[str, Any]:
    request = output.request
    return {
        "detector": "template matching",
        "tomogram": request.name,
        "request": request.settings(),
        "match_params": request.match_params.to_dict(),
        "select_params": _jsonable(request.select_params.to_dict()),
        "classes": output.class_info,
        "device": output.device,
        "timings_s": {k: round(float(v), 4) for k, v in output.timings_s.items()},
        "slab_z": list(output.slab_z),
        "grandmodel_z_offset": int(output.z_offset),
        "elapsed_s": round(float(output.elapsed_s), 3),
        "score": dict(output.score) if output.score else None,
    }


def tm_picks_layer(output: MatchOutput) -> LayerDataTuple:
    """The Points layer-data tuple of a template-matching run (``tm picks: <tomogram>``) on the
    tomogram's scale and translation; features ``class``, ``score``, ``source``, ``phi``,
    ``theta``, ``psi``."""
    from ..layers import particles_to_points_layer

    meta: dict[str, Any] = dict(output.request.metadata)
    if output.dataset_folder is not None:
        meta["dataset"] = str(output.dataset_folder)
    meta["napari_shrec"] = _provenance(output)
    data, kwargs, kind = particles_to_points_layer(
        output.particles, tm_picks_layer_name(output.request.name), source="predicted",
        voxel_size_nm=output.voxel_size_nm, metadata=meta)
    kwargs["scale"] = tuple(output.scale_zyx)
    kwargs["translate"] = tuple(output.translate_zyx)
    return (data, kwargs, kind)


def tm_score_map_layers(output: MatchOutput) -> list[LayerDataTuple]:
    """One hidden Image layer-data tuple per kept score map (``tm score <class>: <tomogram>``):
    additive blending in the class colour, contrast from 0 to the map's maximum."""
    from napari.utils.colormaps import Colormap

    from ..layers import AXIS_LABELS, UNITS_NM, class_color

    tomogram = output.request.name
    layers: list[LayerDataTuple] = []
    for name, scores in output.score_maps.items():
        rgba = [float(c) for c in class_color(name)[:3]]
        colormap = Colormap(colors=[[0.0, 0.0, 0.0, 1.0], [*rgba, 1.0]],
                            name=f"napari-shrec {name}")
        top = float(np.max(scores)) if scores.size else 0.0
        info = output.class_info.get(name, {})
        kwargs = {
            "name": tm_score_layer_name(name, tomogram),
            "scale": tuple(output.scale_zyx),
            "translate": tuple(output.translate_zyx),
            "units": UNITS_NM,
            "axis_labels": AXIS_LABELS,
            "colormap": colormap,
            "contrast_limits": (0.0, top if top > 0 else 1.0),
            "blending": "additive",
            "visible": False,
            "metadata": {"kind": KIND_TM_SCORE_MAP, "class": name, "tomogram": tomogram,
                         "napari_shrec": {"detector": "template matching",
                                          "angles": info.get("angles"),
                                          "angular_step_deg": info.get("angular_step_deg"),
                                          "slab_z": list(output.slab_z)}},
        }
        layers.append((scores, kwargs, "image"))
    return layers


# --------------------------------------------------------------------------- the section
class MatchSection(QGroupBox):
    """The template-matching settings of the Detect widget (module docstring).

    The Detect widget tells it the tomogram's dataset folder (:meth:`set_dataset`) and asks it
    for a :class:`MatchRequest` (:meth:`request`).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Template matching", parent)
        self._dataset: str | None = None
        self._defaults = MatchDefaults()
        self._extra_classes: list[str] = []

        # --- classes
        self.class_list = QListWidget()
        self.class_list.setToolTip("Classes to match, one template each (time grows with the "
                                   "number of classes); default: the classes of the dataset's "
                                   "simulation, else all 12")
        self.class_list.setMaximumHeight(150)
        self.all_button = QPushButton("All")
        self.all_button.setToolTip("Check every class")
        self.all_button.clicked.connect(lambda: self.set_checked_classes(self.class_names()))
        self.none_button = QPushButton("None")
        self.none_button.setToolTip("Uncheck every class")
        self.none_button.clicked.connect(lambda: self.set_checked_classes([]))
        self.dataset_button = QPushButton("Dataset's")
        self.dataset_button.setToolTip("Check the classes of the dataset's simulation")
        self.dataset_button.clicked.connect(self._check_dataset_classes)
        self.count_label = QLabel()
        self.count_label.setToolTip("Classes checked")
        buttons = QHBoxLayout()
        for button in (self.all_button, self.none_button, self.dataset_button):
            buttons.addWidget(button)
        buttons.addWidget(self.count_label)
        buttons.addStretch(1)
        class_box = QVBoxLayout()
        class_box.addWidget(self.class_list)
        class_box.addLayout(buttons)
        self._fill_classes()
        self.class_list.itemChanged.connect(self._update_count)

        # --- parameters
        self.step_spin = float_spin(
            0.0, 180.0, DEFAULT_ANGULAR_STEP_DEG, 2, 1.0,
            "Angular step of the uniform rotation set, in degrees. 12.85° (7250 rotations per "
            "class) is PyTom's list, the paper's setting. 0: each class's Crowther step "
            "(resolution / diameter; 4–15°, up to 200 000 rotations for the large classes: "
            "slow on a CPU)", " °")
        self.step_spin.setSpecialValueText("Crowther")
        self.rotations_label = QLabel()
        step_row = QHBoxLayout()
        step_row.addWidget(self.step_spin, 1)
        step_row.addWidget(self.rotations_label)
        self.strategy_combo = QComboBox()
        for strategy, label in STRATEGY_LABELS.items():
            self.strategy_combo.addItem(label, strategy)
        self.strategy_combo.setToolTip(
            "TM-F (paper): the top N of each class, biggest class first, skipping candidates "
            "that overlap a particle already picked. TM-T (paper): the top N of each class, "
            "overlaps kept. Statistical: each class keeps the candidates above a cut-off set by "
            "the false-alarm rate")
        self.expected_spin = int_spin(
            0, 1_000_000, 0, "N, particles picked per class (TM-F, TM-T; a cap for "
            "statistical). 0: the SHREC'20 crowding, 217 per class in 512 × 512 × 200 nm³, "
            "scaled to the searched volume")
        self.expected_spin.setSpecialValueText("SHREC'20 density")
        self.false_alarm_spin = float_spin(
            0.001, 1e6, 1.0, 3, 0.5, "Statistical: voxels per class score map expected above "
            "the cut-off by chance (Gaussian noise); raise it on low-passed (smooth) maps")
        self.lowpass_spin = float_spin(
            0.0, 100.0, 0.0, 1, 1.0, "Gaussian low-pass exp(−(q·L)²) of template and tomogram, "
            "L in nm (not in the paper's recipe; 10 nm helps at SNR 0.004). 0: off", " nm")
        self.lowpass_spin.setSpecialValueText("off")
        self.invert_check = QCheckBox("Invert contrast (protein dark)")
        self.invert_check.setToolTip("Negate the templates: for tomograms where protein is dark "
                                     "(napari-shrec reconstructions have protein bright)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(TM_DEVICES))
        self.device_combo.setCurrentText(settings_or_defaults().default_device)
        self.device_combo.setToolTip("Where the FFTs run. auto: a CUDA GPU through PyTorch when "
                                     "there is one, else the CPU (numpy/scipy, every core)")
        self.download_check = QCheckBox("Download missing structures (RCSB)")
        self.download_check.setChecked(True)
        self.download_check.setToolTip("Fetch structures the library lacks from the RCSB; off: "
                                       "classes without a structure use their surrogate shape")
        self.maps_check = QCheckBox("Keep score maps")
        self.maps_check.setToolTip("Add each class's score map (maximum FLCF over the "
                                   "rotations) as a hidden Image layer; memory: classes × "
                                   "voxels × 4 bytes")
        self.score_check = QCheckBox("Score against the ground truth")
        self.score_check.setToolTip("Inputs from a dataset folder with occupancy_mask.mrc: score "
                                    "the picks with the SHREC scorer (native mode)")
        self.score_check.setEnabled(False)  # until the tomogram belongs to a dataset
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setToolTip("Templates, CTF and missing wedge used, from the dataset's "
                                   "simulation record and tilt angles when there are some")

        form = QFormLayout()
        form.addRow("Classes", class_box)
        form.addRow("Angular step", step_row)
        form.addRow("Strategy", self.strategy_combo)
        form.addRow("Expected per class", self.expected_spin)
        form.addRow("False-alarm rate", self.false_alarm_spin)
        form.addRow("Low-pass", self.lowpass_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.invert_check)
        form.addRow("", self.download_check)
        form.addRow("", self.maps_check)
        form.addRow("", self.score_check)
        form.addRow(self.info_label)
        self.setLayout(form)

        self.step_spin.valueChanged.connect(self._update_rotations)
        self.strategy_combo.currentIndexChanged.connect(self.update_enabled)
        self._update_rotations()
        self._update_info()
        self._update_count()
        self.update_enabled()

    # ------------------------------------------------------------------ classes
    def _fill_classes(self) -> None:
        self.class_list.clear()
        for name in list(SHREC20_TABLE.names) + self._extra_classes:
            text = name
            color = None
            if name in SHREC21_TABLE:
                entry = SHREC21_TABLE.by_name(name)
                text = f"{name}  {entry.description}"
                color = entry.color
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            if color is not None:
                item.setData(Qt.ItemDataRole.DecorationRole,
                             QColor.fromRgbF(*(float(c) for c in color[:3])))
            self.class_list.addItem(item)

    def _update_count(self, *_: Any) -> None:
        self.count_label.setText(f"{len(self.checked_classes())} of {self.class_list.count()}")

    def class_names(self) -> list[str]:
        """Every class offered (list order)."""
        return [self.class_list.item(i).data(Qt.ItemDataRole.UserRole)
                for i in range(self.class_list.count())]

    def checked_classes(self) -> list[str]:
        """The checked classes (list order)."""
        out = []
        for i in range(self.class_list.count()):
            item = self.class_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def set_checked_classes(self, names: list[str] | tuple[str, ...]) -> None:
        """Check exactly these classes (others unchecked; unknown names are added)."""
        wanted = {normalize_class_name(n) for n in names}
        unknown = [n for n in sorted(wanted) if n not in self.class_names()]
        if unknown:
            self._extra_classes += unknown
            self._fill_classes()
        for i in range(self.class_list.count()):
            item = self.class_list.item(i)
            state = Qt.CheckState.Checked if item.data(Qt.ItemDataRole.UserRole) in wanted \
                else Qt.CheckState.Unchecked
            item.setCheckState(state)
        self._update_count()

    def _check_dataset_classes(self) -> None:
        self.set_checked_classes(self._defaults.classes or self.class_names())

    # ------------------------------------------------------------------ dataset
    def set_dataset(self, folder: str | Path | None) -> None:
        """The tomogram's dataset folder (None: none). A new folder checks its simulation's
        classes (all without a record), takes its microscope and tilt range, and allows
        scoring; the same folder again keeps the user's choices."""
        key = str(folder) if folder else None
        if key == self._dataset:
            return
        self._dataset = key
        try:
            self._defaults = dataset_match_defaults(key)
        except Exception:  # an unreadable dataset: SHREC'20 defaults, no scoring
            self._defaults = MatchDefaults()
            key = None
        self._check_dataset_classes()
        self.score_check.setEnabled(key is not None)
        if key is None:
            self.score_check.setChecked(False)
        self._update_info()

    @property
    def defaults(self) -> MatchDefaults:
        """What the current dataset says (SHREC'20 defaults without one)."""
        return self._defaults

    def _update_info(self) -> None:
        d = self._defaults
        mic = dict(d.microscope)
        ctf = (f"CTF {mic.get('defocus_um', 3.0):g} µm underfocus, "
               f"{mic.get('voltage_kv', 300.0):g} kV")
        wedge = f"missing wedge {d.tilt_range_deg[0]:g}…{d.tilt_range_deg[1]:g}°"
        if d.has_simulation:
            source = "templates: the structures of the dataset's simulation"
            if d.surrogate_classes:
                source += f" (surrogate shapes: {', '.join(d.surrogate_classes)})"
        else:
            source = ("templates: structure library ($NAPARI_SHREC_STRUCTURES, cache, RCSB, "
                      "else surrogate shapes)")
        self.info_label.setText(f"{ctf}; {wedge}; {source}")

    # ------------------------------------------------------------------ settings
    def _update_rotations(self, *_: Any) -> None:
        step = float(self.step_spin.value())
        if step <= 0:
            self.rotations_label.setText("per class")
        else:
            from ..core.tm_angles import angle_count

            self.rotations_label.setText(f"{angle_count(step):,} rotations".replace(",", " "))

    def strategy(self) -> str:
        """The chosen SelectParams strategy ("filtered", "thresholded", "statistical")."""
        return str(self.strategy_combo.currentData())

    def set_strategy(self, strategy: str) -> None:
        index = self.strategy_combo.findData(strategy)
        if index < 0:
            raise ValueError(f"Strategy: one of {tuple(STRATEGY_LABELS)}, got {strategy!r}")
        self.strategy_combo.setCurrentIndex(index)

    def update_enabled(self, *_: Any) -> None:
        self.false_alarm_spin.setEnabled(self.strategy() == "statistical")

    def params(self) -> tuple[MatchParams, SelectParams]:
        """MatchParams and SelectParams from the settings and the dataset's microscope.

        Raises:
            ValueError: a setting out of range (named).
        """
        from ..core.tm import MatchParams
        from ..core.tm_select import SelectParams

        step = float(self.step_spin.value())
        lowpass = float(self.lowpass_spin.value())
        expected = int(self.expected_spin.value())
        d = self._defaults
        try:
            match = MatchParams(angular_step_deg=step if step > 0 else None,
                                **dict(d.microscope), tilt_range_deg=d.tilt_range_deg,
                                lowpass_nm=lowpass if lowpass > 0 else None,
                                invert_contrast=self.invert_check.isChecked(),
                                device=self.device_combo.currentText())
            select = SelectParams(strategy=self.strategy(), expected=expected or None,
                                  false_alarm_rate=float(self.false_alarm_spin.value()))
        except ValueError as exc:
            raise ValueError(f"template matching settings: {exc}") from None
        return match, select

    def request(self, spec: dict[str, Any], *, layer_input: bool) -> MatchRequest:
        """The request for a tomogram described by the Detect widget (``spec``: name, data or
        path, voxel size, scale, translate, slab, z offset, dataset, metadata).

        Raises:
            ValueError: no class checked, a 2D input, anisotropic voxels, bad settings.
        """
        classes = tuple(self.checked_classes())
        if not classes:
            raise ValueError("Classes: check at least one class to match")
        if len(spec["shape"]) != 3:
            raise ValueError(f"{spec['name']}: template matching needs a 3D (z, y, x) "
                             f"tomogram, got shape {tuple(spec['shape'])}")
        if layer_input:
            scale = np.asarray(spec["scale"], dtype=float)
            if not np.allclose(scale, scale[-1], rtol=1e-3):
                raise ValueError(f"{spec['name']}: template matching needs isotropic voxels, "
                                 f"the layer's scale is (z, y, x) = {tuple(scale)} nm")
        match, select = self.params()
        folder = spec.get("dataset")
        return MatchRequest(
            name=spec["name"], classes=classes, match_params=match, select_params=select,
            volume=spec["data"] if layer_input else None,
            path=None if layer_input else spec["path"],
            voxel_size_nm=spec["voxel_size_nm"] if layer_input else None,
            scale_zyx=spec["scale"] if layer_input else None,
            translate_zyx=spec["translate"] if layer_input else None,
            slab_z=spec["slab"], z_offset=int(spec["z_offset"]),
            dataset_folder=Path(folder) if folder else None,
            download=self.download_check.isChecked(), keep_maps=self.maps_check.isChecked(),
            score=self.score_check.isChecked() and folder is not None,
            metadata=dict(spec.get("metadata") or {}))

    # ------------------------------------------------------------------ results
    @staticmethod
    def summary(output: MatchOutput) -> str:
        """The status line after a run: counts per class, rotations, time, device, score."""
        counts = output.particles.class_counts()
        classes = output.request.classes
        per_class = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in classes
                              if counts.get(name, 0))
        n_angles = sorted({int(info["angles"]) for info in output.class_info.values()})
        strategy = {"filtered": "TM-F", "thresholded": "TM-T"}.get(
            output.request.select_params.strategy, output.request.select_params.strategy)
        text = (f"Matched {len(classes)} class{'es' if len(classes) != 1 else ''} × "
                f"{'/'.join(map(str, n_angles))} rotations in {output.request.name} "
                f"({output.elapsed_s:.1f} s on {output.device}, {strategy}): "
                f"{len(output.particles)} picks ({per_class or 'none'})")
        if output.surrogate_classes:
            text += f"; surrogate templates: {', '.join(output.surrogate_classes)}"
        if output.score is not None:
            text += (f"; vs ground truth: loc F1 {output.score['loc_F1']:.3f}, mean class F1 "
                     f"{output.score['mean_class_F1']:.3f}")
        elif output.score_error:
            text += f"; not scored: {output.score_error}"
        return text

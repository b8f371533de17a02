"""The end-to-end demo: simulate → reconstruct → detect (shipped 3D U-Net) and template-match
(TM-F) → score both the SHREC way. ``napari-shrec demo`` runs it; it imports neither napari nor Qt.

:func:`run_demo` writes one folder::

    OUT/
      .napari-shrec-demo     marks the folder as a demo folder (a later demo may reuse it)
      dataset/               the simulated dataset (reconstruction.mrc, masks, ground truth,
                             tilt series, simulation.json); see core/simulate.py
      unet_picks.txt         the shipped 3D U-Net's picks (SHREC'20 particle list, grandmodel
                             voxels x y z, ZXZ degrees)
      tm_picks.txt           template matching's picks (TM-F), same format
      scores.json            both score results (napari-shrec score's JSON)
      demo.json              parameters, timings, headline figures; written last

Default settings (:class:`DemoParams`) keep the whole run to about 2 minutes on a 2-core CPU:
the ``small`` preset (64 × 128 × 128 voxels of 1 nm, 30–40 particles of the 12 SHREC'20
classes), and template matching of every class at a uniform 45° step (168 rotations; the
paper's PyTom list is 12.85°, 7112 rotations, and each class's Crowther step is finer still),
which costs template matching much of its accuracy on the small classes: the demo says so.

Conventions: arrays (z, y, x); particle files x, y, z voxels of the grandmodel frame (the
simulated reconstruction lies in that frame, so the offset is 0); voxel sizes in nm.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.progress import CancelToken, ProgressCallback, StagedProgress

if TYPE_CHECKING:
    from .core.score import ScoreResult

__all__ = [
    "DEMO_MARKER",
    "UNET_SUBMISSION",
    "TM_SUBMISSION",
    "DemoParams",
    "DemoResult",
    "check_demo_folder",
    "default_demo_folder",
    "run_demo",
    "format_demo_report",
]

log = logging.getLogger(__name__)

DEMO_MARKER = ".napari-shrec-demo"
UNET_SUBMISSION = "3D U-Net (shipped)"
TM_SUBMISSION = "TM-F"
DATASET_DIR = "dataset"
UNET_PICKS = "unet_picks.txt"
TM_PICKS = "tm_picks.txt"
SCORES_FILE = "scores.json"
SUMMARY_FILE = "demo.json"


@dataclass(frozen=True)
class DemoParams:
    """What the demo runs.

    Attributes:
        seed: simulation seed (the same seed gives the same dataset and the same scores).
        preset: simulation preset (``"small"``: 64 × 128 × 128 voxels of 1 nm).
        shape_zyx: (z, y, x) voxels instead of the preset's (tests use a tinier volume).
        n_particles: (min, max) particle count; None: the preset's, scaled by volume when
            ``shape_zyx`` is given (the preset's density).
        classes: simulated classes (SHREC'20 names); None: all 12. Template matching searches
            exactly these.
        device: "auto" (CUDA when PyTorch sees a GPU, else CPU), "cpu" or "cuda"; used by the
            tilt series, the reconstruction, the detector and template matching.
        tm_angular_step_deg: uniform rotation step of template matching (degrees).
        tm_lowpass_nm: Gaussian low-pass of template matching (nm); None: off, as the paper.
        structure_sources: structure folders for the simulation and the templates; None: those
            in ``$NAPARI_SHREC_STRUCTURES`` (classes without a file use surrogate shapes).
        download_structures: fetch missing structures from the RCSB (off: the demo runs offline
            and its time does not depend on the network).
    """

    seed: int = 0
    preset: str = "small"
    shape_zyx: tuple[int, int, int] | None = None
    n_particles: tuple[int, int] | None = None
    classes: tuple[str, ...] | None = None
    device: str = "auto"
    tm_angular_step_deg: float = 45.0
    tm_lowpass_nm: float | None = None
    structure_sources: tuple[str, ...] | None = None
    download_structures: bool = False

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if not 0 < self.tm_angular_step_deg <= 180:
            raise ValueError(f"tm_angular_step_deg {self.tm_angular_step_deg}: must be in "
                             "(0, 180] degrees")
        if self.tm_lowpass_nm is not None and self.tm_lowpass_nm <= 0:
            raise ValueError(f"tm_lowpass_nm {self.tm_lowpass_nm}: must be > 0 nm (or None)")

    def simulation(self) -> Any:
        """The :class:`~napari_shrec.core.simulate.SimulationParams` of the demo's dataset."""
        import numpy as np

        from .core.simulate import PRESETS, simulation_params

        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of "
                             f"{', '.join(PRESETS)}")
        overrides: dict[str, Any] = {"device": self.device}
        if self.shape_zyx is not None:
            overrides["shape_zyx"] = tuple(int(n) for n in self.shape_zyx)
        if self.n_particles is not None:
            overrides["n_particles"] = tuple(int(n) for n in self.n_particles)
        elif self.shape_zyx is not None:  # the preset's particle density
            preset = PRESETS[self.preset]
            ratio = float(np.prod(self.shape_zyx)) / float(np.prod(preset["shape_zyx"]))
            low, high = preset["n_particles"]
            overrides["n_particles"] = (max(1, round(low * ratio)), max(1, round(high * ratio)))
        if self.classes is not None:
            overrides["classes"] = tuple(self.classes)
        return simulation_params(self.preset, seed=self.seed,
                                 structure_sources=self.structure_sources,
                                 download_structures=self.download_structures,
                                 surrogate_structures=True, **overrides)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        folder: the demo folder; ``dataset``: its dataset folder; ``picks``: submission name →
            particle list file.
        scores: [3D U-Net, TM-F] score results (native mode, against the dataset's truth).
        timings_s: seconds per stage ("simulate", "reconstruct", "detect", "match", "score",
            "total").
        n_particles, classes, shape_zyx: the simulated sample.
        surrogate_classes: classes simulated (and matched) with surrogate shapes.
        devices: stage → the device it ran on.
        tm_rotations: rotations searched per class.
    """

    folder: Path
    dataset: Path
    picks: dict[str, Path]
    scores: list[ScoreResult]
    timings_s: dict[str, float]
    n_particles: int
    classes: tuple[str, ...]
    shape_zyx: tuple[int, int, int]
    voxel_size_nm: float
    surrogate_classes: list[str]
    devices: dict[str, str]
    tm_rotations: int
    params: DemoParams = field(default_factory=DemoParams)


def default_demo_folder() -> Path:
    """A new folder ``<cache>/demo/<YYYYmmdd-HHMMSS>`` (cache: the settings' cache directory)."""
    from datetime import datetime

    from .core.structure_sources import default_cache_dir

    root = default_cache_dir() / "demo"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = root / stamp
    k = 1
    while folder.exists():
        k += 1
        folder = root / f"{stamp}-{k}"
    return folder


def check_demo_folder(folder: str | os.PathLike) -> Path:
    """Refuse a folder the demo must not write into, before any work.

    A missing or empty folder is fine, and so is an earlier demo's folder (it holds the
    ``.napari-shrec-demo`` marker; its files are replaced).

    Raises:
        FileExistsError: ``folder`` holds files but is not a demo folder (message names it).
        NotADirectoryError: ``folder`` is a file.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; the demo needs a folder (--out DIR)")
    if path.is_dir() and any(path.iterdir()) and not (path / DEMO_MARKER).is_file():
        raise FileExistsError(f"{path} is not empty and is not a napari-shrec demo folder (no "
                              f"{DEMO_MARKER}); choose a new or empty folder with --out")
    return path


def run_demo(
    params: DemoParams = DemoParams(),
    folder: str | os.PathLike | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    log_line: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo into ``folder`` (default :func:`default_demo_folder`).

    Args:
        params: see :class:`DemoParams`.
        folder: the demo folder; refused (FileExistsError, before any work) when it holds other
            files (see :func:`check_demo_folder`).
        progress, cancel: overall progress (simulate 30 %, detect 20 %, match 45 %, score 5 %)
            and cancellation (between and within stages; ``demo.json`` is then not written).
        log_line: called with one line as each stage ends (the CLI prints them).

    Returns:
        :class:`DemoResult`; ``format_demo_report`` prints it.
    """
    from .core.pretrained import detect_with_model, load_model
    from .core.score import ScoreParams, score_submission
    from .core.score_report import write_json
    from .core.simulate import run_simulation
    from .io._atomic import write_text_atomic
    from .io.dataset import load_dataset, scoring_ground_truth
    from .io.particles import write_particles

    root = check_demo_folder(folder if folder is not None else default_demo_folder())
    sim_params = params.simulation()  # bad parameters fail before the folder is made
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARKER).write_text("napari-shrec demo folder: `napari-shrec demo --out` may "
                                    "replace the files here.\n", encoding="utf-8")
    summary = root / SUMMARY_FILE
    if summary.exists():
        summary.unlink()  # a stale summary must not vouch for a half-finished run
    say = log_line or (lambda _line: None)
    stages = StagedProgress(progress, {"simulate": 30, "detect": 20, "match": 45, "score": 5})
    timings: dict[str, float] = {}
    start = time.perf_counter()

    sim = run_simulation(sim_params, root / DATASET_DIR, overwrite=True,
                         progress=stages.callback("simulate"), cancel=cancel)
    stages.finish("simulate")
    timings["reconstruct"] = float(sim.timings_s.get("reconstruction", 0.0))
    timings["simulate"] = float(sim.timings_s["total"]) - timings["reconstruct"]
    ds = load_dataset(sim.folder)
    voxel = float(ds.voxel_size_nm)
    classes = tuple(sim_params.grandmodel.classes or sim.structures)  # None: every map built
    say(f"simulated {len(ds.particles)} particles of {len(classes)} classes in "
        f"{timings['simulate']:.1f} s, reconstructed in {timings['reconstruct']:.1f} s")

    t0 = time.perf_counter()
    volume = ds.read_volume("reconstruction", mmap=False)
    model = load_model(None, device=params.device)
    detected = detect_with_model(volume, model, progress=stages.callback("detect"),
                                 cancel=cancel)
    unet_picks = write_particles(root / UNET_PICKS, detected.particles, overwrite=True)
    timings["detect"] = time.perf_counter() - t0
    stages.finish("detect")
    say(f"3D U-Net: {len(detected.particles)} picks in {timings['detect']:.1f} s on "
        f"{model.device}")

    t0 = time.perf_counter()
    matched = _match(ds, volume, classes, voxel, params, stages.callback("match"), cancel)
    tm_picks = write_particles(root / TM_PICKS, matched.particles, overwrite=True)
    timings["match"] = time.perf_counter() - t0
    stages.finish("match")
    info = next(iter(matched.class_info.values()))
    say(f"template matching: {len(matched.particles)} picks in {timings['match']:.1f} s on "
        f"{info['device']}")

    if cancel is not None:
        cancel.raise_if_cancelled()
    t0 = time.perf_counter()
    gt = scoring_ground_truth(ds)
    scores = [score_submission(gt.particles, gt.occupancy_mask, picks, ScoreParams(mode="native"),
                               class_table=gt.class_table, submission_name=name)
              for name, picks in ((UNET_SUBMISSION, detected.particles),
                                  (TM_SUBMISSION, matched.particles))]
    write_json(root / SCORES_FILE, scores, overwrite=True)
    timings["score"] = time.perf_counter() - t0
    stages.finish("score")
    timings["total"] = time.perf_counter() - start

    result = DemoResult(
        folder=root, dataset=sim.folder,
        picks={UNET_SUBMISSION: unet_picks, TM_SUBMISSION: tm_picks}, scores=scores,
        timings_s=timings, n_particles=len(ds.particles), classes=classes,
        shape_zyx=tuple(int(n) for n in sim_params.grandmodel.shape_zyx),  # type: ignore[arg-type]
        voxel_size_nm=voxel, surrogate_classes=list(sim.surrogate_classes),
        devices={"detect": str(model.device), "match": str(info["device"])},
        tm_rotations=int(info["angles"]), params=params)
    write_text_atomic(summary, json.dumps(_summary(result), indent=2) + "\n", overwrite=True)
    return result


def _match(ds: Any, volume: Any, classes: tuple[str, ...], voxel: float, params: DemoParams,
           progress: ProgressCallback | None, cancel: CancelToken | None) -> Any:
    """TM-F over ``classes`` with the simulation's own structures, CTF and tilt range."""
    from .core.tm import MatchParams
    from .core.tm_classes import dataset_templates, match_classes
    from .core.tm_select import SelectParams

    simulation = ds.simulation or {}
    tilt = (simulation.get("params", {}) or {}).get("tiltseries", {}) or {}
    microscope = {k: float(tilt[k]) for k in ("defocus_um", "voltage_kv", "cs_mm",
                                              "amplitude_contrast") if k in tilt}
    angles = ds.tilt_angles_deg
    tilt_range = (float(min(angles)), float(max(angles))) \
        if angles is not None and len(angles) else (-60.0, 60.0)
    templates = dataset_templates(classes, simulation, voxel,
                                  sources=list(params.structure_sources or ()),
                                  download=params.download_structures, cancel=cancel)
    match = MatchParams(angular_step_deg=params.tm_angular_step_deg, ctf=True,
                        tilt_range_deg=tilt_range, lowpass_nm=params.tm_lowpass_nm,
                        device=params.device, **microscope)
    return match_classes(volume, classes, match, SelectParams(strategy="filtered"),
                         templates=templates, voxel_size_nm=voxel, progress=progress,
                         cancel=cancel)


def _summary(result: DemoResult) -> dict[str, Any]:
    from . import __version__

    return {
        "generator": f"napari-shrec {__version__} demo",
        "params": _jsonable(asdict(result.params)),
        "dataset": DATASET_DIR,
        "picks": {name: path.name for name, path in result.picks.items()},
        "scores_file": SCORES_FILE,
        "timings_s": result.timings_s,
        "devices": result.devices,
        "tm_rotations_per_class": result.tm_rotations,
        "n_particles": result.n_particles,
        "shape_zyx": list(result.shape_zyx),
        "surrogate_classes": result.surrogate_classes,
        "headline": {r.submission: {"F1": _finite(r.F1), "mean_class_F1":
                                    _finite(r.mean_class_F1)} for r in result.scores},
    }


def _finite(value: float) -> float | None:
    import math

    return None if value is None or math.isnan(value) else float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def format_demo_report(result: DemoResult) -> str:
    """Stage timings, the paper-style tables of both submissions, and where the files are."""
    from .core.score_report import format_report

    t = result.timings_s
    p = result.params
    z, y, x = result.shape_zyx
    surrogates = (f"; surrogate shapes for {', '.join(result.surrogate_classes)}"
                  if result.surrogate_classes else "")
    n_classes = len(result.classes)
    rows = [
        ("simulate (structures, crowded sample, tilt series)", t["simulate"]),
        ("reconstruct (weighted back-projection)", t["reconstruct"]),
        (f"detect: 3D U-Net (shipped model) on {result.devices['detect']}", t["detect"]),
        (f"template matching: TM-F, {n_classes} classes x {result.tm_rotations} rotations "
         f"on {result.devices['match']}", t["match"]),
        ("score (SHREC'20 evaluator, native mode)", t["score"]),
        ("total", t["total"]),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"napari-shrec demo: preset {p.preset!r}, seed {p.seed}: {x} x {y} x {z} voxels "
        f"(x, y, z) of {result.voxel_size_nm:g} nm, {result.n_particles} particles of "
        f"{n_classes} classes{surrogates}",
        "",
        "Stage timings",
    ]
    lines += [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in rows]
    lines += [
        "",
        f"Template matching here searches a uniform {p.tm_angular_step_deg:g} deg rotation step "
        f"({result.tm_rotations} rotations per class) to keep the demo short; the paper's TM-F "
        "used 12.85 deg (7112 rotations), so small classes suffer most. "
        "napari-shrec match DATASET --angular-step 12.85 runs the paper's setting.",
        "",
        format_report(result.scores).rstrip("\n"),
        "",
        f"Files in {result.folder}:",
    ]
    files = [(f"{DATASET_DIR}/", "simulated dataset: reconstruction.mrc, grandmodel, class and "
              "occupancy masks, particle_locations.txt (ground truth), tilt series, "
              "simulation.json"),
             (UNET_PICKS, "picks of the 3D U-Net (SHREC'20 particle list)"),
             (TM_PICKS, "picks of template matching (TM-F)"),
             (SCORES_FILE, "both score results (napari-shrec score JSON)"),
             (SUMMARY_FILE, "parameters, timings, headline figures")]
    name_width = max(len(name) for name, _ in files)
    lines += [f"  {name:<{name_width}}  {what}" for name, what in files]
    lines += [
        "",
        "Look at them in napari: napari-shrec view "
        f"{result.dataset} {result.picks[UNET_SUBMISSION]} {result.picks[TM_SUBMISSION]}",
    ]
    return "\n".join(lines) + "\n"

"""Batch tasks: one tomogram's simulation, reconstruction, detection or scoring.

A :class:`BatchTask` names its action, its input (a dataset folder or a file), its output (a
dataset folder for ``simulate``, a file otherwise) and the frozen settings of its action
(:class:`~napari_shrec.core.simulate.SimulationParams`, :class:`ReconstructSettings`,
:class:`DetectSettings` or :class:`ScoreSettings`). :func:`execute_task` runs it in the calling
process, writing its output so that a half-written output never looks finished (see
:mod:`napari_shrec.batch.provenance`); :mod:`napari_shrec.batch.engine` runs many on a
dask.distributed cluster. The ``plan_*`` functions build the task lists; :func:`check_tasks`
reads which outputs are finished and refuses, before any work, outputs that belong to somebody
else.

Volumes are (z, y, x), particle files x, y, z (voxels); voxel sizes nm. Nothing here imports
dask, napari or Qt.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..core.progress import CancelToken, ProgressCallback
from .provenance import (
    OutputState,
    file_output_state,
    file_stamp,
    folder_output_state,
    sidecar_path,
    write_sidecar,
)

__all__ = [
    "ACTIONS",
    "ReconstructSettings",
    "DetectSettings",
    "ScoreSettings",
    "BatchTask",
    "TaskResult",
    "expand_inputs",
    "plan_simulate",
    "plan_reconstruct",
    "plan_detect",
    "plan_score",
    "check_tasks",
    "clean_partials",
    "execute_task",
    "limit_threads",
]

Action = Literal["simulate", "reconstruct", "detect", "score"]
ACTIONS: tuple[str, ...] = ("simulate", "reconstruct", "detect", "score")
SIMULATION_FILE = "simulation.json"
_PARTIAL = ".partial-"


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ReconstructSettings:
    """How ``batch reconstruct`` reconstructs each tilt series (as ``napari-shrec
    reconstruct``).

    Attributes:
        frame: "native" or "shrec2020"; None: each input's own default frame.
        weighting: "ramp", "imod", "sirt" or "none".
        sirt_iterations: k of the SIRT-like filter.
        ctf_correction: phase-flip each projection (needs a recorded defocus).
        noisefree: a dataset's ``projections_noisefree.mrc``.
        device: "auto", "cpu", "numpy", "cuda" or "torch-cpu".
        output_name: file written into each dataset folder (a stack ``S.mrc`` gets
            ``S_rec.mrc`` beside it).
    """

    frame: str | None = None
    weighting: str = "ramp"
    sirt_iterations: int = 10
    ctf_correction: bool = False
    noisefree: bool = False
    device: str = "auto"
    output_name: str = "reconstruction.mrc"

    def __post_init__(self) -> None:
        from ..core.reconstruct import WEIGHTINGS
        from ..core.reconstruct_input import FRAMES

        if self.frame is not None and self.frame not in FRAMES:
            raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {self.frame!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, "
                             f"got {self.weighting!r}")
        _check_name("output_name", self.output_name)


@dataclass(frozen=True)
class DetectSettings:
    """How ``batch detect`` detects the particles of each tomogram (as ``napari-shrec detect``).

    Attributes:
        model: checkpoint file; None: the model shipped with napari-shrec.
        min_score: one threshold for every class (None: the model's tuned thresholds).
        device: "auto", "cpu", "cuda" or "mps".
        patch: cubic patch edge in voxels (None: the model's).
        output_name: particle list written into each dataset folder (``.txt``, ``.star`` or
            ``.csv``); a tomogram ``T.mrc`` gets ``T_<output_name>`` beside it.
    """

    model: str | None = None
    min_score: float | None = None
    device: str = "auto"
    patch: int | None = None
    output_name: str = "picks.txt"

    def __post_init__(self) -> None:
        from ..io.particles import particle_format_from_path

        _check_name("output_name", self.output_name)
        particle_format_from_path(Path(self.output_name))


@dataclass(frozen=True)
class ScoreSettings:
    """How ``batch score`` scores each dataset's picks against its ground truth.

    Attributes:
        picks_name: the particle list to score, in each dataset folder.
        mode: "native", "shrec2020" or "shrec2021"; None: the dataset's own.
        output_name: the score (JSON, schema in docs/scoring.md) written into each folder.
    """

    picks_name: str = "picks.txt"
    mode: str | None = None
    output_name: str = "score.json"

    def __post_init__(self) -> None:
        from ..core.score import SCORE_MODES

        if self.mode is not None and self.mode not in SCORE_MODES:
            raise ValueError(f"mode must be one of {', '.join(SCORE_MODES)}, got {self.mode!r}")
        _check_name("picks_name", self.picks_name)
        _check_name("output_name", self.output_name)


def _check_name(what: str, name: str) -> None:
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"{what} must be a plain file name (no folder), got {name!r}")


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class BatchTask:
    """One tomogram's unit of work.

    Attributes:
        action: "simulate", "reconstruct", "detect" or "score".
        name: short name shown in progress and reports (the dataset folder's name).
        output: the dataset folder (simulate) or output file.
        settings: the action's frozen parameters.
        input: dataset folder or file read (None for simulate).
        inputs: ``{file: [size, mtime_ns]}`` of the files the output depends on, recorded in
            its provenance (a changed input makes a finished output stale).
        overwrite: replace an output that is not this batch's.
    """

    action: Action
    name: str
    output: Path
    settings: Any
    input: Path | None = None
    inputs: dict[str, list[int]] = field(default_factory=dict)
    overwrite: bool = False

    def provenance_params(self) -> dict[str, Any]:
        """What the output's provenance must record for the output to count as finished."""
        if self.action == "simulate":
            return self.settings.to_dict()
        return {"action": self.action, "input": str(self.input), "inputs": dict(self.inputs),
                "settings": asdict(self.settings)}

    def state(self) -> OutputState:
        """The state of the output now (see :data:`~napari_shrec.batch.provenance.OutputState`)."""
        if self.action == "simulate":
            return folder_output_state(self.output, SIMULATION_FILE, self.provenance_params())
        return file_output_state(self.output, self.provenance_params())


@dataclass(frozen=True)
class TaskResult:
    """What a task hands back (small: it travels from the worker to the client).

    Attributes:
        name, output: the task's.
        skipped: the output was already finished.
        elapsed_s: seconds spent (0 when skipped).
        summary: one line for the report.
        metrics: numbers worth collecting (particles, F1 …).
    """

    name: str
    output: str
    skipped: bool
    elapsed_s: float
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- planning
def _natural_key(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", str(path)))


def expand_inputs(items: Sequence[str | os.PathLike], *, datasets: bool = True) -> list[Path]:
    """Paths from a list of paths and glob patterns, in natural order (model_2 before model_10),
    without repeats. A folder that is not itself a dataset but holds dataset folders stands for
    them (``datasets=True``).

    Raises:
        FileNotFoundError: a path or pattern that matches nothing (named).
    """
    from ..io.dataset import find_dataset_folders, is_dataset_folder

    found: list[Path] = []
    for item in items:
        text = os.path.expanduser(str(item))
        if glob.has_magic(text):
            matches = sorted((Path(m) for m in glob.glob(text)), key=_natural_key)
            if not matches:
                raise FileNotFoundError(f"{item}: matches no file or folder")
        else:
            if not Path(text).exists():
                raise FileNotFoundError(f"no such file or folder: {item}")
            matches = [Path(text)]
        for path in matches:
            if datasets and path.is_dir() and not is_dataset_folder(path):
                inner = find_dataset_folders(path)
                if not inner:
                    raise FileNotFoundError(f"{path}: not a dataset folder and holds none")
                found.extend(inner)
            else:
                found.append(path)
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def plan_simulate(out_dir: str | os.PathLike, n: int, *, preset: str = "small", seed: int = 0,
                  name_pattern: str = "model_{i}", overwrite: bool = False,
                  **simulation_kwargs: Any) -> list[BatchTask]:
    """``n`` simulations: task i writes ``out_dir/<name_pattern with i>`` with seed
    ``seed + i``. ``simulation_kwargs`` go to
    :func:`~napari_shrec.core.simulate.simulation_params` (overrides such as ``shape_zyx``,
    ``structure_sources``, ``download_structures`` …).

    Raises:
        ValueError: n < 1, a name pattern without ``{i}``, an unknown preset or parameter.
    """
    from ..core.simulate import simulation_params

    if n < 1:
        raise ValueError(f"--n must be ≥ 1, got {n}")
    if "{i}" not in name_pattern:
        raise ValueError(f"--name {name_pattern!r} must contain {{i}} (the task number)")
    root = Path(out_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--out {root}: exists and is not a folder")
    tasks = []
    for i in range(n):
        name = name_pattern.format(i=i)
        _check_name("--name", name)
        params = simulation_params(preset, seed=seed + i, **simulation_kwargs)
        tasks.append(BatchTask("simulate", name, root / name, params, overwrite=overwrite))
    return tasks


def _input_files(path: Path, names: Sequence[str]) -> dict[str, list[int]]:
    return {str(path / name): file_stamp(path / name) for name in names
            if (path / name).is_file()}


def plan_reconstruct(inputs: Sequence[Path], settings: ReconstructSettings = ReconstructSettings(),
                     *, overwrite: bool = False) -> list[BatchTask]:
    """One reconstruction per input: a dataset folder (its tilt series → ``folder /
    settings.output_name``) or a projection stack ``S.mrc`` with ``S.tlt`` (→ ``S_rec.mrc``)."""
    tasks = []
    for path in inputs:
        if path.is_dir():
            projections = "projections_noisefree.mrc" if settings.noisefree else "projections.mrc"
            if not (path / projections).is_file():
                raise FileNotFoundError(f"{path}: no {projections} to reconstruct")
            stamps = _input_files(path, [projections, "projections.tlt",
                                         "alignment_simulated.txt", SIMULATION_FILE])
            output = path / settings.output_name
        else:
            tlt = path.with_suffix(".tlt")
            if not tlt.is_file():
                raise FileNotFoundError(f"{path}: no tilt file {tlt.name} beside the stack")
            stamps = {str(path): file_stamp(path), str(tlt): file_stamp(tlt)}
            output = path.with_name(path.stem + "_rec.mrc")
        tasks.append(BatchTask("reconstruct", path.name, output, settings, input=path,
                               inputs=stamps, overwrite=overwrite))
    return tasks


def plan_detect(inputs: Sequence[Path], settings: DetectSettings = DetectSettings(), *,
                overwrite: bool = False) -> list[BatchTask]:
    """One detection per input: a dataset folder (its ``reconstruction.mrc``, picks in the
    grandmodel frame → ``folder / settings.output_name``) or a tomogram file ``T.mrc`` (→
    ``T_<output_name>`` beside it). The model file is part of each output's provenance."""
    from ..core.pretrained import default_model_path

    model = Path(settings.model).expanduser() if settings.model else default_model_path()
    if not model.is_file():
        raise FileNotFoundError(f"--model {model}: no such checkpoint")
    model_stamp = {str(model): file_stamp(model)}
    tasks = []
    for path in inputs:
        if path.is_dir():
            tomogram = path / "reconstruction.mrc"
            if not tomogram.is_file():
                raise FileNotFoundError(f"{path}: no reconstruction.mrc; reconstruct it first "
                                        "(napari-shrec batch reconstruct)")
            output = path / settings.output_name
            stamps = _input_files(path, ["reconstruction.mrc", SIMULATION_FILE])
        else:
            tomogram = path
            output = path.with_name(f"{path.stem}_{settings.output_name}")
            stamps = {str(path): file_stamp(path)}
        stamps.update(model_stamp)
        tasks.append(BatchTask("detect", path.name, output, settings, input=path, inputs=stamps,
                               overwrite=overwrite))
    return tasks


def plan_score(inputs: Sequence[Path], settings: ScoreSettings = ScoreSettings(), *,
               overwrite: bool = False) -> list[BatchTask]:
    """One score per dataset folder: ``folder / settings.picks_name`` against the folder's
    ground truth → ``folder / settings.output_name``."""
    tasks = []
    for path in inputs:
        if not path.is_dir():
            raise NotADirectoryError(f"{path}: batch score takes dataset folders")
        picks = path / settings.picks_name
        if not picks.is_file():
            raise FileNotFoundError(f"{path}: no {settings.picks_name} to score")
        stamps = _input_files(path, [settings.picks_name, "particle_locations.txt",
                                     "occupancy_mask.mrc"])
        tasks.append(BatchTask("score", path.name, path / settings.output_name, settings,
                               input=path, inputs=stamps, overwrite=overwrite))
    return tasks


def check_tasks(tasks: Sequence[BatchTask]) -> list[OutputState]:
    """The state of every task's output; refuses (before any work) outputs that are not the
    batch's unless the task may overwrite, and two tasks writing the same output.

    Raises:
        FileExistsError: naming the outputs (the first few) and how to proceed.
        ValueError: duplicate outputs.
    """
    outputs = [t.output.resolve() for t in tasks]
    if len(set(outputs)) != len(outputs):
        dupes = sorted({str(o) for o in outputs if outputs.count(o) > 1})
        raise ValueError(f"several tasks would write the same output: {', '.join(dupes[:3])}")
    states = [t.state() for t in tasks]
    foreign = [t for t, s in zip(tasks, states, strict=True) if s == "foreign" and not t.overwrite]
    if foreign:
        listing = ", ".join(str(t.output) for t in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise FileExistsError(
            f"{listing}{more} already exist(s) and was not written by this batch with these "
            "parameters; pass --overwrite (overwrite=True) to replace, or choose another "
            "output")
    return states


def clean_partials(tasks: Sequence[BatchTask]) -> list[Path]:
    """Remove what interrupted attempts of these tasks left behind (temporary folders and
    files under this batch's own temporary names); returns what was removed. Call it only
    while no attempt of these tasks runs."""
    removed: list[Path] = []
    for task in tasks:
        parent = task.output.parent
        if not parent.is_dir():
            continue
        patterns = [f".{task.output.name}{_PARTIAL}*", f".{task.output.name}.*.tmp*",
                    f".{sidecar_path(task.output).name}.*.tmp*"]
        for pattern in patterns:
            for path in parent.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


# --------------------------------------------------------------------------- running
@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Limit numba, PyTorch (when imported) and BLAS/OpenMP pools (threadpoolctl, when
    installed) to ``n`` threads in this block, restoring them after."""
    restore: list[Any] = []
    try:
        try:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
            restore.append(lambda: numba.set_num_threads(old))
        except ImportError:  # numba is optional for the numpy fallbacks
            pass
        torch = sys.modules.get("torch")
        if torch is not None:
            old_torch = torch.get_num_threads()
            torch.set_num_threads(n)
            restore.append(lambda: torch.set_num_threads(old_torch))
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=n)
            restore.append(limiter.restore_original_limits)
        except ImportError:
            pass
        yield
    finally:
        for undo in reversed(restore):
            undo()


def execute_task(task: BatchTask, *, threads: int = 1, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> TaskResult:
    """Run one task in this process with ``threads`` threads (compute pools limited to that),
    unless its output is already finished (then it is skipped).

    Raises:
        FileExistsError: the output is not the batch's and the task may not overwrite it.
        Cancelled: ``cancel`` was set (nothing half-written is left under the output's name).
        Whatever the action raises (FileNotFoundError, ValueError …), naming the input.
    """
    state = task.state()
    if state == "finished":
        return TaskResult(task.name, str(task.output), True, 0.0, "already finished")
    if state == "foreign" and not task.overwrite:
        raise FileExistsError(f"{task.output} exists and is not this batch's; not replaced")
    threads = max(1, int(threads))
    start = time.perf_counter()
    run = {"simulate": _simulate, "reconstruct": _reconstruct, "detect": _detect,
           "score": _score}[task.action]
    with limit_threads(threads):
        summary, metrics = run(task, threads, progress, cancel)
    return TaskResult(task.name, str(task.output), False, time.perf_counter() - start, summary,
                      metrics)


def _simulate(task: BatchTask, threads: int, progress: ProgressCallback | None,
              cancel: CancelToken | None) -> tuple[str, dict[str, float]]:
    from ..core.simulate import run_simulation

    params = task.settings
    gm = replace(params.grandmodel, threads=threads)
    ts = replace(params.tiltseries, threads=threads) if params.tiltseries else None
    rc = replace(params.reconstruction, threads=threads) if params.reconstruction else None
    params = replace(params, grandmodel=gm, tiltseries=ts, reconstruction=rc)
    final = task.output
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}{_PARTIAL}{uuid.uuid4().hex[:8]}"
    try:
        result = run_simulation(params, tmp, progress=progress, cancel=cancel)
        _move_folder_into_place(tmp, task)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report = result.grandmodel.report
    return (f"{report.n_placed} particles, seed {params.seed}",
            {"particles": float(report.n_placed)})


def _move_folder_into_place(tmp: Path, task: BatchTask) -> None:
    """Rename a finished temporary folder onto the task's output (replacing an old one only
    when the task may overwrite; another attempt's finished folder is kept)."""
    final = task.output
    try:
        os.rename(tmp, final)  # atomic; fails when ``final`` exists and is not empty
        return
    except OSError:
        if not final.exists():
            raise
    if task.state() == "finished":  # another attempt of this task got there first
        return
    if not task.overwrite:
        raise FileExistsError(f"{final} appeared while simulating; not replaced")
    old = final.parent / f".{final.name}{_PARTIAL}old-{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _file_task(task: BatchTask, write: Any, extra: dict[str, Any]) -> None:
    """Write the output (``write`` writes atomically) and mark it finished; the task marked
    it as being written before its computation started."""
    write(task.output)
    write_sidecar(task.output, action=task.action, params=task.provenance_params(),
                  status="finished", extra=extra)


def _reconstruct(task: BatchTask, threads: int, progress: ProgressCallback | None,
                 cancel: CancelToken | None) -> tuple[str, dict[str, float]]:
    import numpy as np

    from ..core.reconstruct import ReconstructionParams, reconstruct
    from ..core.reconstruct_input import frame_geometry, load_tilt_series, reconstruction_metadata
    from ..core.volume import Volume
    from ..io.mrc import write_mrc

    s: ReconstructSettings = task.settings
    series = load_tilt_series(task.input, noisefree=s.noisefree)
    frame = s.frame or series.default_frame
    thickness, axis_z, offset = frame_geometry(frame, series)
    defocus = series.defocus_um
    if s.ctf_correction and defocus is None:
        raise ValueError(f"{task.input}: CTF correction needs the defocus, which this input "
                         "does not record")
    params = ReconstructionParams(thickness=thickness, axis_z=axis_z, weighting=s.weighting,
                                  sirt_iterations=s.sirt_iterations,
                                  ctf_correction=s.ctf_correction, device=s.device,
                                  threads=threads, **series.microscope)
    write_sidecar(task.output, action=task.action, params=task.provenance_params(),
                  status="writing")
    volume, info = reconstruct(series.projections, series.tilt_angles_deg, params,
                               pixel_size_nm=series.pixel_size_nm,
                               defocus_um=None if defocus is None else np.asarray(defocus),
                               progress=progress, cancel=cancel)
    px = float(series.pixel_size_nm)
    metadata = reconstruction_metadata(series, frame, info, offset)
    _file_task(task, lambda out: write_mrc(out, Volume(volume, voxel_size_nm=(px,) * 3),
                                           overwrite=True),
               {"reconstruction": metadata})
    nz, ny, nx = volume.shape
    return (f"{nz}×{ny}×{nx} (z, y, x), frame {frame}, {info.get('device', '?')}",
            {"slices": float(nz)})


_MODELS: dict[tuple[str, str], Any] = {}


def _load_model(path: str | None, device: str) -> Any:
    """The model, loaded once per worker process."""
    from ..core.pretrained import load_model

    key = (str(path), device)
    if key not in _MODELS:
        _MODELS[key] = load_model(path, device=device)
    return _MODELS[key]


def _detect(task: BatchTask, threads: int, progress: ProgressCallback | None,
            cancel: CancelToken | None) -> tuple[str, dict[str, float]]:
    import torch

    from .._cli_detect import _open_tomogram, write_picks
    from ..core.pretrained import detect_with_model

    s: DetectSettings = task.settings
    torch.set_num_threads(threads)
    volume, slab, z_offset, _ = _open_tomogram(Path(task.input), None)
    model = _load_model(s.model, s.device)
    params = model.detect_params()
    if s.min_score is not None:
        params = params.replace(min_score=s.min_score, class_thresholds=None)
    patch = (s.patch,) * 3 if s.patch else None
    write_sidecar(task.output, action=task.action, params=task.provenance_params(),
                  status="writing")
    result = detect_with_model(volume, model, params, slab_z=slab, patch_size=patch,
                               progress=progress, cancel=cancel)
    written: dict[str, Any] = {}

    def write(out: Path) -> None:
        written["particles"], written["summary"] = write_picks(
            out, result.particles, model.class_names, z_offset, True)

    _file_task(task, write, {"model": str(model.path), "device": str(model.device)})
    n = len(written["particles"])
    return f"{n} particles ({written['summary'] or 'none'})", {"particles": float(n)}


def _score(task: BatchTask, threads: int, progress: ProgressCallback | None,
           cancel: CancelToken | None) -> tuple[str, dict[str, float]]:
    from ..core.score import ScoreParams, score_submission
    from ..core.score_report import write_json
    from ..io.dataset import load_dataset, scoring_ground_truth
    from ..io.particles import read_particles

    s: ScoreSettings = task.settings
    gt = scoring_ground_truth(load_dataset(task.input))
    predictions = read_particles(Path(task.input) / s.picks_name)
    params = ScoreParams(mode=s.mode or gt.default_mode,
                         z_offset=int(gt.z_offset if gt.z_offset is not None else 156))
    write_sidecar(task.output, action=task.action, params=task.provenance_params(),
                  status="writing")
    result = score_submission(gt.particles, gt.occupancy_mask, predictions, params,
                              class_table=gt.class_table, submission_name=task.name,
                              progress=progress, cancel=cancel)
    _file_task(task, lambda out: write_json(out, [result], overwrite=True), {})
    metrics = {"F1": float(result.F1), "recall": float(result.recall),
               "precision": float(result.precision),
               "mean_class_F1": float(result.mean_class_F1)}
    return (f"F1 {result.F1:.3f}, recall {result.recall:.3f}, precision "
            f"{result.precision:.3f}, mean class F1 {result.mean_class_F1:.3f}", metrics)

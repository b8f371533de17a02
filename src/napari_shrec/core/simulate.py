"""Simulate a SHREC'20-protocol dataset: structures → grandmodel → tilt series → dataset folder.

:func:`simulation_params` builds the parameters of a preset with overrides;
:func:`run_simulation` runs every stage and writes a napari-shrec dataset folder:

=================================  ===========================================================
``grandmodel.mrc``                 sample potential (V) with structural noise, (z, y, x)
``grandmodel_noisefree.mrc``       the same without noise
``class_mask.mrc``                 voxel → class id (napari-shrec ids, see simulation.json)
``occupancy_mask.mrc``             voxel → particle row (1-based) in particle_locations.txt
``class_bbox.mrc``, ``occupancy_bbox.mrc``  the same over each particle's bounding box
``particle_locations.txt``         SHREC'20 format: class x y z phi theta psi (ZXZ, degrees)
``projections.mrc``                tilt series with detector noise, (tilt, y, x)
``projections_noisefree.mrc``      the same without detector noise
``reconstruction.mrc``             weighted back-projection of ``projections.mrc`` in the
                                   grandmodel's frame (same shape; ramp weighting)
``projections.tlt``                tilt angles (IMOD), one per projection
``alignment_simulated.txt``        the same in SHREC'21's alignment format
``simulation.json``                every parameter, seed, structure provenance, report, timings
=================================  ===========================================================

``simulation.json`` is written last: a folder without it is not a finished simulation. The same
parameters and seed give identical files (apart from the creation time in simulation.json).

Presets:

- ``shrec2020``: 512 × 512 × 200 voxels of 1 nm, 2400–2800 particles of the 12 SHREC'20
  classes, 41 tilts −60:3:60°, 300 kV, 3 µm underfocus, SNR 0.004 on the paper's scale
  (image variance ratio 0.3, see :data:`~napari_shrec.core.tiltseries.IMAGE_SNR_PER_SNR`) —
  the paper's protocol with uniform orientations (``orientation_sampler="shrec2020"`` restores
  its biased sampler).
- ``small``: 128 × 128 × 64 voxels, 30–40 particles, same physics: for the demo, sample data and
  tests (seconds).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .grandmodel import Grandmodel, GrandmodelParams, build_grandmodel
from .progress import CancelToken, ProgressCallback, StagedProgress
from .reconstruct import ReconstructionParams, reconstruct
from .structures import StructureLibrary, StructureMap, StructureParams
from .tiltseries import (IMAGE_SNR_PER_SNR, TiltSeries, TiltSeriesParams, shrec_tilt_angles,
                         simulate_tilt_series)

__all__ = [
    "PRESETS",
    "SimulationParams",
    "SimulationResult",
    "simulation_params",
    "run_simulation",
    "STRUCTURE_SOURCES_ENV",
    "default_structure_sources",
]

log = logging.getLogger(__name__)

STRUCTURE_SOURCES_ENV = "NAPARI_SHREC_STRUCTURES"
"""Environment variable: structure source folders (``os.pathsep``-separated) used when none are
given, e.g. ``export NAPARI_SHREC_STRUCTURES=~/pdb:~/maps``."""

PRESETS: dict[str, dict[str, Any]] = {
    "shrec2020": {"shape_zyx": (200, 512, 512), "n_particles": (2400, 2800)},
    "small": {"shape_zyx": (64, 128, 128), "n_particles": (30, 40)},
}

_GRANDMODEL_KEYS = {"shape_zyx", "voxel_size_nm", "n_particles", "classes",
                    "orientation_sampler", "max_tries", "support_threshold_v",
                    "structural_noise_v", "threads"}
_TILT_KEYS = {"tilt_angles_deg", "voltage_kv", "defocus_um", "defocus_jitter_um", "cs_mm",
              "amplitude_contrast", "envelope_fraction_of_nyquist", "slice_thickness_nm",
              "ice_thickness_nm", "ice_potential_v", "ice_variation_v", "noise", "snr",
              "dose_per_tilt_e_per_nm2", "device"}


def default_structure_sources() -> tuple[str, ...]:
    """Folders from ``$NAPARI_SHREC_STRUCTURES`` (those that exist), else none."""
    value = os.environ.get(STRUCTURE_SOURCES_ENV, "")
    return tuple(p for p in value.split(os.pathsep) if p and Path(p).expanduser().exists())


@dataclass(frozen=True)
class SimulationParams:
    """Everything a simulation needs.

    Attributes:
        preset: name of the preset the parameters started from ("custom" otherwise).
        seed: master seed; the grandmodel and the tilt series draw from seeds derived from it.
        grandmodel: sample parameters.
        tiltseries: microscope parameters; None simulates the ground truth only.
        structure_sources: folders/files for the structure library (see docs/structures.md).
        download_structures: let the library fetch missing PDB ids from the RCSB.
        surrogate_structures: let classes without a structure use their surrogate shapes.
        structure_params: how structures become maps (its voxel size must be the grandmodel's).
        reconstruction: how ``reconstruction.mrc`` is made (its thickness and axis are set to
            the grandmodel's frame); None writes no reconstruction. Needs a tilt series.
    """

    preset: str
    seed: int
    grandmodel: GrandmodelParams
    tiltseries: TiltSeriesParams | None
    structure_sources: tuple[str, ...] = ()
    download_structures: bool = True
    surrogate_structures: bool = True
    structure_params: StructureParams = field(default_factory=StructureParams)
    reconstruction: ReconstructionParams | None = field(default_factory=ReconstructionParams)

    def __post_init__(self) -> None:
        if not np.isclose(self.structure_params.voxel_size_nm, self.grandmodel.voxel_size_nm):
            raise ValueError("structure_params.voxel_size_nm must equal the grandmodel's "
                             f"voxel_size_nm ({self.grandmodel.voxel_size_nm})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset, "seed": self.seed,
            "grandmodel": _jsonable(asdict(self.grandmodel)),
            "tiltseries": self.tiltseries.to_dict() if self.tiltseries else None,
            "structure_sources": list(self.structure_sources),
            "download_structures": self.download_structures,
            "surrogate_structures": self.surrogate_structures,
            "structure_params": self.structure_params.to_dict(),
            "reconstruction": self.reconstruction.to_dict() if self.reconstruction else None,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _derived_seeds(seed: int) -> tuple[int, int]:
    state = np.random.SeedSequence(seed).generate_state(2)
    return int(state[0]), int(state[1])


def simulation_params(preset: str = "small", *, seed: int = 0, tilt_series: bool = True,
                      reconstruction: bool = True,
                      structure_sources: tuple[str, ...] | list[str] | None = None,
                      download_structures: bool = True, surrogate_structures: bool = True,
                      **overrides: Any) -> SimulationParams:
    """Parameters of a preset (``"shrec2020"`` or ``"small"``) with keyword overrides.

    Overrides name fields of :class:`GrandmodelParams` (``shape_zyx``, ``n_particles``,
    ``classes``, ``orientation_sampler``, …) or :class:`TiltSeriesParams` (``tilt_angles_deg``,
    ``snr``, ``defocus_um``, ``noise``, …). Unknown names raise ValueError.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - _GRANDMODEL_KEYS - _TILT_KEYS
    if unknown:
        raise ValueError(f"unknown simulation parameter(s) {', '.join(sorted(unknown))}")
    grandmodel_seed, tilt_seed = _derived_seeds(seed)
    grandmodel_kwargs = dict(PRESETS[preset])
    grandmodel_kwargs.update({k: v for k, v in overrides.items() if k in _GRANDMODEL_KEYS})
    grandmodel = GrandmodelParams(seed=grandmodel_seed, **grandmodel_kwargs)
    tilt_kwargs: dict[str, Any] = {"tilt_angles_deg": shrec_tilt_angles()}
    tilt_kwargs.update({k: v for k, v in overrides.items() if k in _TILT_KEYS})
    tilt_kwargs.setdefault("threads", grandmodel.threads)
    tiltseries = TiltSeriesParams(seed=tilt_seed, **tilt_kwargs) if tilt_series else None
    sources = default_structure_sources() if structure_sources is None \
        else tuple(str(s) for s in structure_sources)
    nz = grandmodel.shape_zyx[0]
    reconstruction_params = ReconstructionParams(
        thickness=nz, axis_z=float(nz // 2), device=tilt_kwargs.get("device", "auto"),
        **{k: tilt_kwargs[k] for k in ("voltage_kv", "cs_mm", "amplitude_contrast")
           if k in tilt_kwargs}) if tilt_series and reconstruction else None
    return SimulationParams(
        preset=preset, seed=int(seed), grandmodel=grandmodel, tiltseries=tiltseries,
        reconstruction=reconstruction_params,
        structure_sources=sources, download_structures=download_structures,
        surrogate_structures=surrogate_structures,
        structure_params=StructureParams(voxel_size_nm=grandmodel.voxel_size_nm))


@dataclass
class SimulationResult:
    """What :func:`run_simulation` produced (arrays stay in memory; files are in ``folder``)."""

    folder: Path
    grandmodel: Grandmodel
    tiltseries: TiltSeries | None
    structures: dict[str, StructureMap]
    surrogate_classes: list[str]
    timings_s: dict[str, float]
    record: dict[str, Any]


def run_simulation(
    params: SimulationParams,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    library: StructureLibrary | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SimulationResult:
    """Run a simulation and write its dataset folder (see the module docstring).

    Args:
        params: from :func:`simulation_params`.
        folder: output folder (created). Existing files are refused unless ``overwrite``;
            the check covers every output before any work starts.
        library: structure library to use (default: one built from ``params``).
        progress, cancel: overall progress (structures 5 %, grandmodel 35 %, tilt series 50 %,
            writing 10 %) and cancellation.
    """
    from .. import __version__
    from ..io._atomic import check_overwrite
    from ..io.dataset import SIMULATION_FILE, write_dataset
    from ..io.tilt_angles import write_alignment_file, write_tlt

    root = Path(folder)
    names = ["grandmodel", "grandmodel_noisefree", "class_mask", "class_bbox", "occupancy_mask",
             "occupancy_bbox"]
    if params.tiltseries is not None:
        names += ["projections", "projections_noisefree"]
        if params.reconstruction is not None:
            names.append("reconstruction")
    extra = ["projections.tlt", "alignment_simulated.txt"] if params.tiltseries else []
    for name in [f"{n}.mrc" for n in names] + extra + ["particle_locations.txt",
                                                        SIMULATION_FILE]:
        check_overwrite(root / name, overwrite)

    with_reconstruction = params.tiltseries is not None and params.reconstruction is not None
    stages = StagedProgress(progress, {"structures": 5, "grandmodel": 35,
                                "tilt series": 45 if params.tiltseries else 0,
                                "reconstruction": 5 if with_reconstruction else 0,
                                "writing": 10})
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if library is None:
        library = StructureLibrary(params.structure_sources,
                                   download=params.download_structures,
                                   surrogates=params.surrogate_structures)
    classes = params.grandmodel.classes
    structures = library.build(classes, params.structure_params,
                               progress=stages.callback("structures"), cancel=cancel, warn=False)
    surrogates = [name for name, m in structures.items() if m.is_surrogate]
    if surrogates:
        log.warning("classes using their offline surrogate shapes (no structure file or "
                    "download): %s", ", ".join(surrogates))
    stages.finish("structures")
    timings["structures"] = time.perf_counter() - start

    t0 = time.perf_counter()
    grandmodel = build_grandmodel(structures, params.grandmodel,
                                  progress=stages.callback("grandmodel"), cancel=cancel)
    stages.finish("grandmodel")
    timings["grandmodel"] = time.perf_counter() - t0

    tiltseries = None
    if params.tiltseries is not None:
        t0 = time.perf_counter()
        tiltseries = simulate_tilt_series(grandmodel.potential_noisefree,
                                          params.grandmodel.voxel_size_nm, params.tiltseries,
                                          progress=stages.callback("tilt series"), cancel=cancel)
        stages.finish("tilt series")
        timings["tilt series"] = time.perf_counter() - t0
    reconstruction = None
    if tiltseries is not None and params.reconstruction is not None:
        t0 = time.perf_counter()
        nz = params.grandmodel.shape_zyx[0]
        recon_params = params.reconstruction
        if recon_params.thickness is None:  # the grandmodel's frame, whatever was given
            recon_params = replace(recon_params, thickness=nz, axis_z=float(nz // 2))
        reconstruction, _ = reconstruct(tiltseries.projections, tiltseries.tilt_angles_deg,
                                        recon_params,
                                        pixel_size_nm=params.grandmodel.voxel_size_nm,
                                        defocus_um=np.asarray(tiltseries.defocus_um),
                                        progress=stages.callback("reconstruction"),
                                        cancel=cancel)
        stages.finish("reconstruction")
        timings["reconstruction"] = time.perf_counter() - t0

    if cancel is not None:
        cancel.raise_if_cancelled()
    t0 = time.perf_counter()
    volumes: dict[str, np.ndarray] = {
        "grandmodel": grandmodel.potential,
        "grandmodel_noisefree": grandmodel.potential_noisefree,
        "class_mask": grandmodel.class_mask,
        "class_bbox": grandmodel.class_bbox,
        "occupancy_mask": grandmodel.occupancy_mask,
        "occupancy_bbox": grandmodel.occupancy_bbox,
    }
    if tiltseries is not None:
        volumes["projections"] = tiltseries.projections
        volumes["projections_noisefree"] = tiltseries.projections_noisefree
    if reconstruction is not None:
        volumes["reconstruction"] = reconstruction
    timings["total_before_writing"] = time.perf_counter() - start
    record: dict[str, Any] = {
        "generator": f"napari-shrec {__version__} core.simulate",
        "params": params.to_dict(),
        "seed": params.seed,
        "tilt_angles_deg": list(tiltseries.tilt_angles_deg) if tiltseries else None,
        "tilt_axis": "y",
        "tilt_convention": "x' = x cos θ + z sin θ about the volume centre (voxel n // 2)",
        "defocus_um": list(tiltseries.defocus_um) if tiltseries else None,
        "measured_snr": list(tiltseries.measured_snr) if tiltseries and
        tiltseries.measured_snr else None,
        "image_snr_per_snr": IMAGE_SNR_PER_SNR,
        "structures": {name: {"kind": m.kind, "surrogate": m.is_surrogate,
                              "source": m.provenance.get("source"),
                              "source_sha256": m.provenance.get("source_sha256"),
                              "assembly": m.provenance.get("assembly"),
                              "box": list(m.potential.shape),
                              "metrics": m.metrics.to_dict()}
                       for name, m in structures.items()},
        "surrogate_classes": surrogates,
        "report": _jsonable(asdict(grandmodel.report)),
        "timings_s": timings,
        "units": {"grandmodel": "V (voxel-averaged electrostatic potential)",
                  "projections": "intensity relative to the incident beam"},
    }
    if cancel is not None:
        cancel.raise_if_cancelled()
    # From here on nothing checks for cancellation: every file is written, simulation.json last.
    if tiltseries is not None:
        write_tlt(root / "projections.tlt", tiltseries.tilt_angles_deg, overwrite=overwrite)
        write_alignment_file(root / "alignment_simulated.txt", tiltseries.tilt_angles_deg,
                             overwrite=overwrite)
    write_dataset(root, particles=grandmodel.particles, volumes=volumes, simulation=record,
                  voxel_size_nm=params.grandmodel.voxel_size_nm, grandmodel_z_offset=0,
                  overwrite=overwrite)
    timings["writing"] = time.perf_counter() - t0
    stages.finish("writing")
    timings["total"] = time.perf_counter() - start
    return SimulationResult(root, grandmodel, tiltseries, structures, surrogates, timings, record)


"""napari sample data: "SHREC demo (small)" (File ▸ Open Sample ▸ SHREC cryo-ET).

The sample is simulated on this machine, nothing is downloaded: the ``small`` preset
(64 × 128 × 128 voxels of 1 nm, 30–40 particles of the 12 SHREC'20 classes, 41 tilts, SNR 0.004)
with a fixed seed, into ``<cache>/sample_data/shrec-demo-small-<key>/`` (cache: the settings'
cache directory; the key is a hash of every simulation parameter, so different structure
sources or devices give different folders). The first opening takes 10–30 s on a laptop CPU;
later openings reuse the finished folder (one with ``simulation.json``, which the simulation
writes last) and take a second.

Structures come from ``$NAPARI_SHREC_STRUCTURES`` when it names folders; classes without a file
use their offline surrogate shapes.

The layers, all scaled in nm on the same grid (the simulated reconstruction lies in the
grandmodel's frame): the reconstruction (Image), the class mask (Labels, class colours) and the
ground-truth particles (Points coloured by class). Arrays are (z, y, x).

This module imports neither napari nor the compute core at import time (napari imports it when
its menus are built).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.progress import CancelToken, ProgressCallback
    from .core.simulate import SimulationParams
    from .layers import LayerDataTuple

__all__ = [
    "SAMPLE_SEED",
    "SAMPLE_PREFIX",
    "sample_params",
    "sample_folder",
    "is_complete_sample",
    "ensure_sample_dataset",
    "sample_layers",
    "make_shrec_demo_small",
]

log = logging.getLogger(__name__)

SAMPLE_SEED = 2020
SAMPLE_PREFIX = "SHREC demo"
_REQUIRED = ("simulation.json", "reconstruction.mrc", "class_mask.mrc", "particle_locations.txt")


def sample_params(seed: int = SAMPLE_SEED, device: str | None = None) -> SimulationParams:
    """The simulation parameters of the sample: the ``small`` preset, offline (no download),
    ``device`` (default: the settings' ``default_device``)."""
    from .core.simulate import simulation_params
    from .settings import load_settings

    device = device or load_settings().default_device
    return simulation_params("small", seed=seed, download_structures=False,
                             surrogate_structures=True, device=device)


def sample_folder(params: SimulationParams, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/sample_data/shrec-demo-small-<hash of the parameters>``."""
    from .core.structure_sources import default_cache_dir
    from .core.tiltseries import IMAGE_SNR_PER_SNR

    # the SNR's calibration is part of what the noise means: a sample cached before it changed
    # has the same parameters but other noise
    record = {**params.to_dict(), "image_snr_per_snr": IMAGE_SNR_PER_SNR}
    text = json.dumps(record, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "sample_data" / f"shrec-demo-{params.preset}-{key}"


def is_complete_sample(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished simulation with the files the sample shows."""
    path = Path(folder)
    return all((path / name).is_file() for name in _REQUIRED)


def ensure_sample_dataset(
    params: SimulationParams | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """The sample's dataset folder, simulated first if no complete one is cached.

    The simulation goes to a temporary folder beside the final one and is renamed only when
    complete, so an interrupted run or a second napari opening the sample at the same time
    never leaves (or reads) a half-written folder.
    """
    from .core.simulate import run_simulation

    params = params if params is not None else sample_params()
    folder = sample_folder(params, cache_dir)
    if is_complete_sample(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)  # our own leftover (same process id)
    log.info("simulating the napari-shrec sample into %s", folder)
    try:
        run_simulation(params, temp, progress=progress, cancel=cancel)
        if folder.exists() and not is_complete_sample(folder):
            shutil.rmtree(folder)  # an incomplete cache entry of ours, never a user's folder
        if not folder.exists():
            os.replace(temp, folder)
    finally:
        if temp.exists():
            shutil.rmtree(temp)
    return folder


def sample_layers(folder: str | os.PathLike, prefix: str = SAMPLE_PREFIX
                  ) -> list[LayerDataTuple]:
    """Reconstruction (Image), class mask (Labels, class colours) and ground truth (Points) of
    a simulated dataset folder, read into memory, scaled by its voxel size (nm)."""
    from .io.dataset import load_dataset
    from .layers import (
        class_mask_to_labels_layer,
        particles_to_points_layer,
        volume_to_image_layer,
    )

    ds = load_dataset(folder)
    vs = float(ds.voxel_size_nm)
    common: dict[str, Any] = {"dataset": str(ds.folder), "flavour": ds.flavour,
                              "grandmodel_z_offset": int(ds.grandmodel_z_offset),
                              "sample": "napari-shrec SHREC demo (small)",
                              "seed": (ds.simulation or {}).get("seed")}
    offset = (float(ds.grandmodel_z_offset), 0.0, 0.0)
    return [
        volume_to_image_layer(
            ds.read_volume("reconstruction", mmap=False), f"{prefix} reconstruction",
            voxel_size_nm=vs,
            metadata={**common, "volume": "reconstruction", "frame": "reconstruction"}),
        class_mask_to_labels_layer(
            ds.read_class_mask("class_mask"), f"{prefix} class mask",
            class_table=ds.class_table, translate_zyx_vox=offset, voxel_size_nm=vs,
            metadata={**common, "volume": "class_mask", "frame": "grandmodel"}),
        particles_to_points_layer(
            ds.particles, f"{prefix} ground truth", class_table=ds.class_table,
            source="ground truth", voxel_size_nm=vs, translate_zyx_vox=offset,
            metadata={**common, "frame": "grandmodel"}),
    ]


def make_shrec_demo_small() -> list[LayerDataTuple]:
    """napari sample-data command "SHREC demo (small)": simulate (or reuse) and open."""
    try:  # inside napari: its Preferences page may hold newer settings (cache folder, device)
        from .widgets.settings import sync_napari_preferences

        sync_napari_preferences()
    except ImportError:  # no Qt binding: settings.json alone
        pass
    return sample_layers(ensure_sample_dataset())

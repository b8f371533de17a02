"""Re-noise a simulated dataset at another SNR without simulating it again.

A napari-shrec simulation keeps its noise-free tilt series (``projections_noisefree.mrc``), so a
copy of the dataset at another signal-to-noise ratio costs one noise draw and one reconstruction
(seconds) instead of a whole simulation (minutes): SNR sweeps, and training sets that mix noise
levels (``scripts/train_default_model.py``).

The noise is the simulator's ``gaussian`` detector model: per tilt, white Gaussian noise of
variance var(noise-free image) / (``IMAGE_SNR_PER_SNR`` × SNR), SNR being on the SHREC'20 paper's
scale (:mod:`napari_shrec.core.tiltseries`). The reconstruction
repeats the simulation's own parameters in the grandmodel's frame. Ground-truth files are
hard-linked into the new folder (copied where links are impossible), so the copy costs only the
new projections and reconstruction on disk.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np

from .progress import CancelToken, ProgressCallback, ProgressReporter

__all__ = ["GROUND_TRUTH_FILES", "renoise_dataset"]

GROUND_TRUTH_FILES: tuple[str, ...] = (
    "grandmodel.mrc", "grandmodel_noisefree.mrc", "class_mask.mrc", "class_bbox.mrc",
    "occupancy_mask.mrc", "occupancy_bbox.mrc", "particle_locations.txt",
    "projections_noisefree.mrc", "projections.tlt", "alignment_simulated.txt")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def renoise_dataset(folder: str | os.PathLike, out: str | os.PathLike, *, snr: float,
                    seed: int, overwrite: bool = False,
                    progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> Path:
    """Write ``out``: the dataset ``folder`` with a new noisy tilt series at ``snr`` and its
    reconstruction.

    Args:
        folder: a napari-shrec simulation (with ``projections_noisefree.mrc`` and
            ``simulation.json``).
        out: the new dataset folder (must not exist, unless ``overwrite``).
        snr: SNR on the paper's scale (> 0), as ``TiltSeriesParams.snr``.
        seed: seed of the noise.
        overwrite: replace ``out`` when it exists.
        progress, cancel: one step per tilt, then the reconstruction.

    Returns:
        ``out``. Its ``simulation.json`` is the source's with the new ``snr`` and
        ``measured_snr`` and a ``renoised_from`` record (source folder, snr, seed); it is
        written last, so a folder without it is unfinished.

    Raises:
        FileNotFoundError: ``folder`` lacks the noise-free projections or simulation.json.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: ``snr`` is not positive.
    """
    from ..io._atomic import write_text_atomic
    from ..io.mrc import read_mrc, write_mrc
    from .reconstruct import ReconstructionParams, reconstruct
    from .tiltseries import IMAGE_SNR_PER_SNR, add_detector_noise
    from .volume import Volume

    src, dst = Path(folder), Path(out)
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be > 0, got {snr!r}")
    for name in ("projections_noisefree.mrc", "simulation.json"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src}: no {name}; only napari-shrec simulations with a "
                                    "noise-free tilt series can be re-noised")
    if dst.exists():
        if not overwrite:
            raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
        shutil.rmtree(dst)
    record = json.loads((src / "simulation.json").read_text(encoding="utf-8"))
    params = record["params"]
    recon_dict = dict(params.get("reconstruction") or {})
    known = {f.name for f in fields(ReconstructionParams)}
    recon_params = ReconstructionParams(**{k: v for k, v in recon_dict.items() if k in known})
    noisefree = read_mrc(src / "projections_noisefree.mrc")
    n_tilts = noisefree.shape[0]
    reporter = ProgressReporter(n_tilts + 2, progress, cancel)
    reporter.start(f"re-noising {src.name} at SNR {snr:g}")

    dst.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    noisy = np.empty(noisefree.shape, dtype=np.float32)
    measured = []
    for i in range(n_tilts):
        reporter.check()
        image = np.asarray(noisefree.data[i], dtype=np.float32)
        noisy[i], measured_snr = add_detector_noise(image, snr, rng)
        measured.append(measured_snr)
        reporter.advance(f"tilt {i + 1}/{n_tilts}")
    angles = np.asarray(record["tilt_angles_deg"], dtype=np.float64)
    defocus = record.get("defocus_um")
    volume, _ = reconstruct(noisy, angles, recon_params,
                            pixel_size_nm=float(record.get("voxel_size_nm", 1.0)),
                            defocus_um=None if defocus is None else np.asarray(defocus),
                            cancel=cancel)
    reporter.advance("reconstruction")
    voxel = (float(record.get("voxel_size_nm", 1.0)),) * 3
    write_mrc(dst / "projections.mrc", Volume(noisy, voxel_size_nm=voxel))
    write_mrc(dst / "reconstruction.mrc", Volume(volume, voxel_size_nm=voxel))
    for name in GROUND_TRUTH_FILES:
        if (src / name).is_file():
            _link_or_copy(src / name, dst / name)
    params.setdefault("tiltseries", {})
    if isinstance(params["tiltseries"], dict):
        params["tiltseries"]["snr"] = float(snr)
    record["measured_snr"] = measured
    record["image_snr_per_snr"] = IMAGE_SNR_PER_SNR
    record["renoised_from"] = {"folder": str(src), "snr": float(snr), "seed": int(seed)}
    write_text_atomic(dst / "simulation.json", json.dumps(record, indent=1) + "\n")
    reporter.advance("done")
    return dst

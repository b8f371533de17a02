"""``napari-shrec detect``: find and classify the particles of a tomogram with a trained model.

Usage::

    napari-shrec detect TOMOGRAM --out PARTICLES [--model MODEL.pt] [--slab Z0 Z1]
        [--min-score S] [--threshold CLASS=S ...] [--overlap F] [--peak-method maxpool|components]
        [--patch N] [--test-time-flips N] [--device auto|cpu|cuda|mps] [--max-memory MB]
        [--maps-dir DIR] [--score] [--overwrite]

TOMOGRAM is an MRC file, an OME-Zarr folder (``.zarr``/``.ome.zarr``, read lazily, full
resolution) or a dataset folder (its reconstruction.mrc, searched over the sample slab, with
coordinates written in the grandmodel frame so that they score against the folder's ground
truth). The output format follows the extension: SHREC ``.txt``, RELION ``.star`` or ``.csv``.
Exit codes: 0 done, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ._cli_progress import progress_bar

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  napari-shrec detect demo/ --out picks.txt            # shipped model, dataset's slab
  napari-shrec detect tomo.mrc --out picks.star --slab 156 356
  napari-shrec detect tomo.mrc --model mine.pt --out picks.csv --min-score 0.4
  napari-shrec detect big.ome.zarr --out picks.star --max-memory 1024   # larger than the RAM
  napari-shrec detect demo/ --out picks.txt --score    # and score against demo/'s ground truth

Without --model the model shipped with napari-shrec is used (trained on simulated shrec2020
tomograms; see docs/results.md). Its tuned per-class thresholds apply unless --min-score or
--threshold change them. Coordinates are voxels of the tomogram (x, y, z), or of the grandmodel
frame for a dataset folder.
"""


def add_parser(subparsers: Any) -> None:
    from .core.detect import BLENDS, PEAK_METHODS

    p = subparsers.add_parser(
        "detect", help="find and classify particles with a trained 3D U-Net",
        description="Detect the particles of a tomogram with a trained model (default: the "
        "model shipped with napari-shrec) and write a particle list.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tomogram", type=Path, metavar="TOMOGRAM",
                   help="tomogram (MRC or OME-Zarr folder) or dataset folder")
    p.add_argument("--out", type=Path, required=True,
                   help="particle list: .txt (SHREC), .star (RELION) or .csv")
    p.add_argument("--model", type=Path, default=None,
                   help="model checkpoint (.pt) from 'napari-shrec train' (default: shipped)")
    p.add_argument("--slab", type=int, nargs=2, default=None, metavar=("Z0", "Z1"),
                   help="search z slices Z0…Z1-1 only (default: the dataset's sample slab, "
                   "else all)")
    p.add_argument("--min-score", type=float, default=None,
                   help="one score threshold for every class (replaces the model's tuned ones; "
                   "with the model's rescorer it is the threshold of the rescored score and "
                   "also the lowest peak a candidate may have)")
    p.add_argument("--threshold", action="append", default=[], metavar="CLASS=S",
                   help="threshold of one class (repeatable)")
    p.add_argument("--no-rescore", action="store_true",
                   help="keep the classes and scores of the probability maps' peaks instead of "
                   "the model's candidate rescorer (and the thresholds tuned for the peaks)")
    p.add_argument("--overlap", type=float, default=None,
                   help="patch overlap fraction (default 0.25; 0.5 on a GPU is worth it)")
    p.add_argument("--blend", choices=BLENDS, default=None)
    p.add_argument("--peak-method", choices=PEAK_METHODS, default=None,
                   help="maxpool (ball NMS, default) or components")
    p.add_argument("--patch", type=int, default=None,
                   help="cubic patch edge (multiple of 2**depth; default the model's)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per forward pass")
    p.add_argument("--test-time-flips", type=int, default=None, metavar="N",
                   help="average the network over N wedge-preserving flips of each patch (1: "
                   "off … 8; inference time × N; default the model's)")
    p.add_argument("--device", default="auto", help="auto (CUDA → MPS → CPU), cpu, cuda, mps")
    p.add_argument("--max-memory", type=float, default=None, metavar="MB",
                   help="memory (MiB) for probability maps and peak finding (default 2048, "
                   "or a quarter of a lazily read tomogram of 1 GiB or more); a larger "
                   "tomogram is detected in blocks, a larger value means fewer patches run "
                   "twice; 0: no limit")
    p.add_argument("--maps-dir", type=Path, default=None,
                   help="also write each class's probability map as DIR/prob_<class>.mrc")
    p.add_argument("--score", action="store_true",
                   help="score the picks against a dataset folder's ground truth (native mode)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (and maps)")
    p.set_defaults(func=run)


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """``["1s3x=0.4", …]`` → {"1s3x": 0.4}; ValueError names a bad item."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--threshold {item!r}: expected CLASS=SCORE, e.g. 1s3x=0.4") \
                from None
    return out


def run(args: argparse.Namespace) -> int:
    from .core.pretrained import detect_with_model, load_model
    from .io._atomic import check_overwrite
    from .io.particles import particle_format_from_path

    particle_format_from_path(args.out)  # a bad extension fails before any work
    check_overwrite(args.out, args.overwrite)
    volume, slab, z_offset, dataset = _open_tomogram(args.tomogram, args.slab)
    model = load_model(args.model, device=args.device)
    params = model.detect_params(rescore=not args.no_rescore)
    changes: dict[str, Any] = {}
    if args.min_score is not None:
        changes.update(min_score=args.min_score, class_thresholds=None)
    own = parse_thresholds(args.threshold)
    if own:
        merged = dict(changes.get("class_thresholds", params.class_thresholds) or {})
        merged.update(own)
        changes["class_thresholds"] = merged
    for name in ("overlap", "blend", "peak_method", "batch_size", "max_memory",
                 "test_time_flips"):
        value = getattr(args, name)
        if value is not None:
            changes["max_memory_mb" if name == "max_memory" else name] = value
    if args.maps_dir is not None:
        changes["keep_probability_maps"] = True
        for name in model.class_names:
            check_overwrite(args.maps_dir / f"prob_{name}.mrc", args.overwrite)
    params = params.replace(**changes)
    patch = (args.patch,) * 3 if args.patch else None
    progress, close = progress_bar("detect")
    start = time.perf_counter()
    try:
        result = detect_with_model(volume, model, params, slab_z=slab, patch_size=patch,
                                   rescore=not args.no_rescore, progress=progress)
    finally:
        close()
    elapsed = time.perf_counter() - start
    particles, summary = write_picks(args.out, result.particles, model.class_names, z_offset,
                                     args.overwrite)
    print(f"wrote {args.out}: {len(particles)} particles ({summary or 'none'}); "
          f"{result.n_patches} patches in {elapsed:.1f} s on {model.device}; model "
          f"{model.path}")
    if args.maps_dir is not None and result.probability_maps is not None:
        _write_maps(args.maps_dir, result, volume, args.overwrite)
    if args.score:
        if dataset is None:
            raise ValueError("--score needs a dataset folder (with occupancy_mask.mrc) as "
                             "TOMOGRAM")
        _print_score(dataset, particles, args.out.name)
    return 0


def write_picks(out: Path, particles, class_names, z_offset: int, overwrite: bool):
    """Write picks (tomogram voxels) to ``out``, shifted by ``-z_offset`` in z into the
    grandmodel frame when the tomogram came from a dataset folder; returns the written list and
    a "class count, …" summary."""
    from .io.particles import write_particles

    if z_offset:
        particles = particles.copy()
        particles.table["z"] = particles.table["z"] - z_offset
        particles.metadata["frame"] = "grandmodel"
    write_particles(out, particles, overwrite=overwrite)
    counts = particles.class_counts()
    summary = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in class_names
                        if counts.get(name, 0))
    return particles, summary


def _open_tomogram(path: Path, slab: list[int] | None):
    """(volume, slab_z, z offset of the grandmodel frame, dataset or None)."""
    from .io.tomogram import open_tomogram

    opened = open_tomogram(path, reconstruct_hint=f"run 'napari-shrec reconstruct {path}' first")
    volume = opened.volume
    if opened.dataset is not None:
        z0, nz = opened.z_offset, opened.grandmodel_nz
        default_slab = (z0, z0 + nz) if nz is not None else None
        return volume, tuple(slab) if slab else default_slab, z0, opened.dataset
    if slab is not None and not 0 <= slab[0] < slab[1] <= volume.shape[0]:
        raise ValueError(f"--slab {slab[0]} {slab[1]} is not inside the tomogram's "
                         f"{volume.shape[0]} z slices ({path})")
    return volume, tuple(slab) if slab else None, 0, None


def _write_maps(folder: Path, result, volume, overwrite: bool) -> None:
    import numpy as np

    from .core.volume import Volume
    from .io.mrc import write_mrc

    folder.mkdir(parents=True, exist_ok=True)
    voxel = getattr(volume, "voxel_size_nm", (1.0, 1.0, 1.0))
    for k, name in enumerate(result.class_names, start=1):
        write_mrc(folder / f"prob_{name}.mrc",
                  Volume(np.asarray(result.probability_maps[k], dtype=np.float32),
                         voxel_size_nm=voxel), overwrite=overwrite)
    print(f"wrote {len(result.class_names)} probability maps to {folder}")


def _print_score(dataset, particles, name: str) -> None:
    from .core.score import ScoreParams, score_submission
    from .core.score_report import format_report
    from .io.dataset import scoring_ground_truth

    gt = scoring_ground_truth(dataset)
    result = score_submission(gt.particles, gt.occupancy_mask, particles,
                              ScoreParams(mode="native"), class_table=gt.class_table,
                              submission_name=name)
    print(format_report([result]))

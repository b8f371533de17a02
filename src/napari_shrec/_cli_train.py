"""``napari-shrec train``: train a 3D U-Net particle detector on dataset folders or annotated
tomograms.

Usage::

    napari-shrec train DATASET [DATASET ...] --out MODEL.pt [--val DATASET ...]
        [--pair TOMOGRAM PARTICLES ...] [--target auto|class_mask|spheres|shapes]
        [--classes NAME ...] [--epochs N] [--steps N] [--patch N] [--batch N] [--lr LR]
        [--width W] [--depth D] [--stride 1|2] [--denoise] [--resume CKPT]
        [--device auto|cpu|cuda|mps] [--threads N] [--seed S] [--overwrite]

Exit codes: 0 done, 2 bad input, 130 interrupted (the checkpoints of finished epochs stay;
``--resume`` continues).
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
  napari-shrec train model_0/ model_1/ model_2/ --val model_3/ --out mine.pt
  napari-shrec train --pair tomo.mrc my_clicks.txt --out clicks.pt --classes 4v94 1bxn
  napari-shrec train model_0/ --out mine.pt --resume mine.pt --epochs 40
  napari-shrec train model_0/ --val model_1/ --out mine.pt --denoise --stride 2 --device cuda

Targets: a dataset's class mask (voxel labels) when it has one, else balls around each centre of
a class-dependent radius (--target spheres), or each particle's rotated structure (--target
shapes, needs orientations). With --val, every epoch is scored with the SHREC scorer, the best
epoch is kept as MODEL.best.pt and, at the end, per-class thresholds are tuned on the validation
data and stored in both checkpoints. See docs/training.md.
"""


def add_parser(subparsers: Any) -> None:
    from .core.train import SCHEDULES, TARGET_KINDS

    p = subparsers.add_parser(
        "train", help="train a 3D U-Net particle detector",
        description="Train a 3D U-Net that outputs a class probability map (background + one "
        "channel per class) on simulated datasets or annotated tomograms.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", type=Path, nargs="*", metavar="DATASET",
                   help="training dataset folders (reconstruction.mrc + ground truth)")
    p.add_argument("--pair", type=Path, nargs=2, action="append", default=[],
                   metavar=("TOMOGRAM", "PARTICLES"),
                   help="a tomogram (MRC) and its particle list (.txt/.star/.csv; centres in "
                   "its voxels): trained with ball targets (repeatable)")
    p.add_argument("--val", type=Path, nargs="+", default=[], metavar="DATASET",
                   help="validation dataset folders (with occupancy_mask.mrc)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    p.add_argument("--target", choices=TARGET_KINDS, default="auto")
    p.add_argument("--input-volume", default="reconstruction",
                   help="the dataset volume to learn from (default reconstruction)")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="the model's classes, in channel order (default: all in the data)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per epoch")
    p.add_argument("--patch", type=int, default=48,
                   help="cubic patch edge in voxels, a multiple of 2**depth (48 is fastest per "
                   "voxel on a CPU; 64–96 on a GPU)")
    p.add_argument("--batch", type=int, default=2, help="patches per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    p.add_argument("--class-weights", choices=("none", "balanced"), default="none",
                   help="cross-entropy weights per class (default none: patches are already "
                   "class-balanced)")
    p.add_argument("--dice-weight", type=float, default=0.0,
                   help="weight of the Dice (Tversky) term beside cross-entropy (default 0)")
    p.add_argument("--width", type=int, default=16, help="channels of the first level")
    p.add_argument("--depth", type=int, default=3, help="down-samplings")
    p.add_argument("--stride", type=int, choices=(1, 2), default=1,
                   help="output stride (2: half-resolution maps, faster detection)")
    p.add_argument("--denoise", action="store_true",
                   help="add the denoising decoder (UMC-style; needs grandmodel_noisefree.mrc)")
    p.add_argument("--validate-every", type=int, default=1)
    p.add_argument("--tune-min-score", type=float, default=0.3,
                   help="candidate threshold when tuning per-class thresholds on --val")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    p.add_argument("--device", default="auto", help="auto (CUDA → MPS → CPU), cpu, cuda, mps")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing checkpoints")
    p.set_defaults(func=run)


def load_training_data(datasets: list[Path], pairs: list[list[Path]], *, target: str,
                       input_volume: str, class_names: list[str] | None, denoise: bool):
    """TrainingData from dataset folders and (tomogram, particle list) pairs."""
    from .core.train import TrainingData, TrainingVolume
    from .io.mrc import read_mrc
    from .io.particles import read_particles

    if not datasets and not pairs:
        raise ValueError("give training DATASET folders or --pair TOMOGRAM PARTICLES")
    if pairs and denoise:
        raise ValueError("--denoise needs dataset folders (grandmodel_noisefree.mrc); --pair "
                         "tomograms have no noise-free target")
    read = [(tomo, read_particles(parts)) for tomo, parts in pairs]
    if class_names is None and read:
        seen: dict[str, None] = {}
        for _, particles in read:
            seen.update(dict.fromkeys(str(n).lower() for n in particles.class_names))
        if datasets:
            from .io.dataset import load_dataset

            for folder in datasets:
                seen.update(dict.fromkeys(str(n).lower()
                                          for n in load_dataset(folder).particles.class_names))
        from .core.classes import SHREC21_TABLE

        table = SHREC21_TABLE.extended_with(sorted(seen))
        class_names = [c.name for c in table if c.name in seen]  # the class table's order
    volumes = []
    names: tuple[str, ...] | None = None
    if datasets:
        data = TrainingData.from_folders(datasets, class_names=class_names, target=target,
                                         input_volume=input_volume, denoise=denoise)
        volumes += data.volumes
        names = data.class_names
    for tomo, particles in read:
        volume = read_mrc(tomo, mmap=False)
        if target not in ("auto", "spheres"):
            raise ValueError(f"--pair {tomo}: only ball targets (--target spheres) can be made "
                             "from centres alone")
        vs = float(volume.voxel_size_nm[2])
        volumes.append(TrainingVolume.from_arrays(
            volume.data, particles, names or class_names, name=str(tomo),
            radii_vox=_radii(names or class_names, vs)))
    return TrainingData(volumes, tuple(names or class_names))


def _radii(class_names, voxel_size_nm: float) -> dict[str, float]:
    from .core.targets import default_sphere_radii

    return default_sphere_radii(class_names, voxel_size_nm)


def run(args: argparse.Namespace) -> int:
    from .core.detect import DetectParams
    from .core.nets.checkpoint import load_checkpoint
    from .core.nets.unet import UNet3DConfig
    from .core.train import (
        TrainingData,
        TrainParams,
        best_checkpoint_path,
        store_detection_settings,
        train,
        tune_thresholds,
    )
    from .io._atomic import check_overwrite

    params = TrainParams(patch_size=(args.patch,) * 3, batch_size=args.batch,
                         epochs=args.epochs, steps_per_epoch=args.steps,
                         learning_rate=args.lr, schedule=args.schedule, device=args.device,
                         class_weights=args.class_weights, tversky_weight=args.dice_weight,
                         seed=args.seed, validate_every=args.validate_every,
                         threads=args.threads)
    if args.resume is None:
        for p in (args.out, best_checkpoint_path(args.out)):
            check_overwrite(p, args.overwrite)
    data = load_training_data(args.datasets, args.pair, target=args.target,
                              input_volume=args.input_volume, class_names=args.classes,
                              denoise=args.denoise)
    val = None
    if args.val:
        val = TrainingData.from_folders(args.val, class_names=data.class_names,
                                        target=args.target, input_volume=args.input_volume)
    config = None
    if args.resume is None:
        config = UNet3DConfig(n_classes=data.n_channels, width=args.width, depth=args.depth,
                              output_stride=args.stride, denoise_head=args.denoise)
    counts = data.particle_counts()
    print(f"training on {len(data.volumes)} volume(s), {sum(counts.values())} particles of "
          f"{len(data.class_names)} classes; {params.total_steps} steps of "
          f"{params.batch_size} × {args.patch}³", flush=True)

    def on_epoch(record: dict) -> None:
        line = (f"epoch {record['epoch']}/{params.epochs}: loss {record['loss']:.4f}, "
                f"{record['patches_per_s']:.1f} patches/s")
        if "val_loc_F1" in record:
            line += (f", validation loc F1 {record['val_loc_F1']:.3f}, mean class F1 "
                     f"{record['val_mean_class_F1']:.3f}")
        print(line, flush=True)

    progress, close = progress_bar("train")
    start = time.perf_counter()
    try:
        result = train(data, params, model_config=config, val_data=val, out=args.out,
                       resume=args.resume, overwrite=args.overwrite,
                       detect_params=DetectParams(min_score=args.tune_min_score),
                       progress=progress, on_epoch=on_epoch)
    finally:
        close()
    print(f"wrote {result.checkpoint} and {result.best_checkpoint} (best epoch "
          f"{result.best_epoch}) in {time.perf_counter() - start:.0f} s", flush=True)
    if val is not None:
        best = load_checkpoint(result.best_checkpoint, device=args.device)
        tuned = tune_thresholds(best, val, min_score=args.tune_min_score)
        names = [str(v) for v in args.val]
        for path in {result.checkpoint, result.best_checkpoint}:
            store_detection_settings(path, tuned["params"], patch_size=params.patch_size,
                                     tuned_on=names, rescorer=tuned["rescorer"],
                                     params_without_rescorer=tuned["params_without_rescorer"])
        thresholds = tuned["params"].class_thresholds or {}
        print("tuned thresholds: " + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items()))
        if tuned["rescorer"] is not None:
            print(f"candidate rescorer fitted on {tuned['rescorer'].fitted_on['n_candidates']} "
                  "validation candidates (the thresholds above are on its scores)")
        elif tuned["rescorer_note"]:
            print(f"no candidate rescorer: {tuned['rescorer_note']}")
    return 0

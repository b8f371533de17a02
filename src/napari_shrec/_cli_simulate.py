"""``napari-shrec simulate``: a SHREC'20-protocol dataset (ground truth + tilt series) in a folder.

Usage::

    napari-shrec simulate --preset small|shrec2020 --out DIR [--seed N] [--structures DIR ...]
        [--particles MIN MAX] [--shape Z Y X] [--classes a,b,...] [--orientations uniform|shrec2020]
        [--tilt-range START STOP STEP] [--defocus UM] [--snr SNR | --dose E_PER_NM2 | --no-noise]
        [--no-tilt-series] [--no-download] [--no-surrogates] [--threads N] [--overwrite]

Prints a summary (particles placed, classes on surrogate shapes, timings) on stdout; progress and
warnings on stderr. Exit codes: 0 done, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._cli_progress import progress_bar

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  napari-shrec simulate --preset small --out demo/ --seed 1
  napari-shrec simulate --preset shrec2020 --out model_0/ --structures pdb/ --structures maps/
  napari-shrec simulate --preset small --out sparse/ --particles 10 12 --classes 1bxn,4cr2
  napari-shrec simulate --preset shrec2020 --out biased/ --orientations shrec2020 --snr 0.01

Structures come from --structures folders (or $NAPARI_SHREC_STRUCTURES), earlier downloads, the
RCSB, or offline surrogate shapes, in that order (docs/structures.md). See docs/simulation.md for
the physics, every parameter and the output files.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate", help="simulate a crowded sample, its masks and its tilt series",
        description="Simulate a SHREC'20-protocol dataset: grandmodel (sample potential), class "
        "and occupancy masks, particle list and a multislice tilt series, written as a "
        "napari-shrec dataset folder.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=("small", "shrec2020"),
                   help="small: 128×128×64 voxels, ~35 particles; shrec2020: 512×512×200, "
                   "2400–2800 particles (default small)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_simulation_options(p)
    p.add_argument("--threads", type=int, default=0, help="worker threads (0 = all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    p.set_defaults(func=run)


def add_simulation_options(p: argparse.ArgumentParser) -> None:
    """The simulation's options (structures, sample, microscope, noise, outputs), shared by
    ``napari-shrec simulate`` and ``napari-shrec batch simulate``; read back by
    :func:`simulation_overrides`."""
    p.add_argument("--structures", action="append", default=None, metavar="DIR",
                   help="structure files or folders named by PDB id (repeatable; default "
                   "$NAPARI_SHREC_STRUCTURES)")
    p.add_argument("--no-download", action="store_true", help="never download structures")
    p.add_argument("--no-surrogates", action="store_true",
                   help="fail when a class has no structure instead of using its surrogate")
    p.add_argument("--particles", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="particle count range (inclusive)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="volume size in voxels (z along the beam)")
    p.add_argument("--voxel-size", type=float, default=None, metavar="NM",
                   help="voxel size in nm (default 1.0)")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: the "
                   "12 SHREC'20 classes)")
    p.add_argument("--orientations", choices=("uniform", "shrec2020"), default=None,
                   help="uniform SO(3) (default) or the released SHREC'20 simulator's biased "
                   "sampling")
    p.add_argument("--tilt-range", type=float, nargs=3, metavar=("START", "STOP", "STEP"),
                   help="tilt angles in degrees, inclusive (default -60 60 3)")
    p.add_argument("--defocus", type=float, default=None, metavar="UM",
                   help="underfocus in µm (default 3)")
    p.add_argument("--defocus-jitter", type=float, default=None, metavar="UM",
                   help="σ of a per-tilt defocus error in µm (default 0)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--snr", type=float, default=None,
                       help="detector SNR on the SHREC'20 paper's scale (default 0.004): "
                       "the image ratio var(noise-free) / var(noise) per tilt is 75 × SNR "
                       "(0.004 → 0.3; docs/simulation.md)")
    noise.add_argument("--dose", type=float, default=None, metavar="E_PER_NM2",
                       help="Poisson noise at this many electrons per nm² per tilt instead")
    noise.add_argument("--no-noise", action="store_true", help="no detector noise")
    p.add_argument("--no-tilt-series", action="store_true",
                   help="ground truth only (grandmodel, masks, particle list)")
    p.add_argument("--no-reconstruction", action="store_true",
                   help="do not write reconstruction.mrc (weighted back-projection of the "
                   "tilt series in the grandmodel's frame)")


def simulation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .core.tiltseries import shrec_tilt_angles

    overrides: dict[str, Any] = {"threads": args.threads}
    if args.particles:
        overrides["n_particles"] = tuple(args.particles)
    if args.shape:
        overrides["shape_zyx"] = tuple(args.shape)
    if args.voxel_size is not None:
        overrides["voxel_size_nm"] = args.voxel_size
    if args.classes:
        overrides["classes"] = tuple(c.strip().lower() for c in args.classes.split(",")
                                     if c.strip())
    if args.orientations:
        overrides["orientation_sampler"] = args.orientations
    if args.tilt_range:
        start, stop, step = args.tilt_range
        if step <= 0 or stop < start:
            raise ValueError("--tilt-range: need START ≤ STOP and STEP > 0")
        overrides["tilt_angles_deg"] = shrec_tilt_angles(start, stop, step)
    if args.defocus is not None:
        overrides["defocus_um"] = args.defocus
    if args.defocus_jitter is not None:
        overrides["defocus_jitter_um"] = args.defocus_jitter
    if args.snr is not None:
        overrides["snr"] = args.snr
    if args.dose is not None:
        overrides.update(noise="dose", dose_per_tilt_e_per_nm2=args.dose)
    if args.no_noise:
        overrides["noise"] = "none"
    return overrides


def run(args: argparse.Namespace) -> int:
    from .core.simulate import run_simulation, simulation_params
    from .core.structures import StructureUnavailableError

    for source in args.structures or []:
        if not Path(source).exists():
            print(f"napari-shrec simulate: error: --structures {source}: no such file or "
                  "folder", file=sys.stderr)
            return 2
    if args.voxel_size is not None and args.voxel_size <= 0:
        raise ValueError("--voxel-size must be > 0")
    params = simulation_params(args.preset, seed=args.seed,
                               tilt_series=not args.no_tilt_series,
                               reconstruction=not args.no_reconstruction,
                               structure_sources=args.structures,
                               download_structures=not args.no_download,
                               surrogate_structures=not args.no_surrogates,
                               **simulation_overrides(args))
    progress, close = progress_bar("simulate")
    try:
        result = run_simulation(params, args.out, overwrite=args.overwrite, progress=progress)
    except StructureUnavailableError as exc:
        print(f"napari-shrec simulate: error: {exc}", file=sys.stderr)
        return 2
    finally:
        close()
    report = result.grandmodel.report
    print(f"wrote {result.folder}")
    print(f"particles: {report.n_placed} placed of {report.n_requested} requested"
          + (f" ({len(report.not_fitted)} did not fit)" if report.not_fitted else ""))
    kinds: dict[str, list[str]] = {}
    for name, structure_map in result.structures.items():
        kinds.setdefault(structure_map.kind, []).append(name)
    print("structures: " + "; ".join(f"{kind}: {', '.join(names)}"
                                     for kind, names in kinds.items()))
    if result.tiltseries is not None:
        angles = result.tiltseries.tilt_angles_deg
        print(f"tilt series: {len(angles)} tilts {angles[0]:g}…{angles[-1]:g}°")
    timings = result.timings_s
    print("time: " + ", ".join(f"{stage} {timings[stage]:.1f} s" for stage in
                               ("structures", "grandmodel", "tilt series", "reconstruction",
                                "writing", "total")
                               if stage in timings))
    return 0

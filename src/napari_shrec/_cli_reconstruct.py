"""``napari-shrec reconstruct``: weighted back-projection of a dataset's tilt series or a stack.

Usage::

    napari-shrec reconstruct INPUT [--tlt FILE] [--out FILE] [--frame native|shrec2020]
        [--thickness N] [--axis-z Z] [--weighting ramp|imod|sirt|none] [--sirt-iterations K]
        [--ctf-correct] [--defocus UM] [--invert-tilt] [--noisefree] [--device ...] [--overwrite]

INPUT is a dataset folder (its projections.mrc and tilt angles) or a projection stack (MRC) with
a ``.tlt`` file. Exit codes: 0 done, 2 bad input, 130 interrupted.
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
  napari-shrec reconstruct demo/                       # writes demo/reconstruction.mrc
  napari-shrec reconstruct model_9/ --frame shrec2020 --out rec512.mrc
  napari-shrec reconstruct stack.mrc --tlt stack.tlt --thickness 300 --weighting imod
  napari-shrec reconstruct demo/ --ctf-correct --weighting sirt --sirt-iterations 15

Frames: native (napari-shrec datasets: the grandmodel's z extent, overlaying it voxel for voxel)
and shrec2020 (a cube as wide as the detector, tilt axis at its centre: SHREC'20's 512³ with the
sample at z 156…355). See docs/reconstruction.md for the conventions.
"""


def add_parser(subparsers: Any) -> None:
    from .core.reconstruct import DEVICES, WEIGHTINGS
    from .core.reconstruct_input import FRAMES

    p = subparsers.add_parser(
        "reconstruct", help="weighted back-projection of a tilt series to a tomogram",
        description="Reconstruct a tomogram from a dataset's tilt series or a projection stack "
        "by weighted back-projection, in the frame of the ground truth.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="dataset folder or projection stack (MRC)")
    p.add_argument("--tlt", type=Path, default=None,
                   help="tilt angles: IMOD .tlt or SHREC'21 alignment file")
    p.add_argument("--out", type=Path, default=None,
                   help="output MRC (default: DATASET/reconstruction.mrc in the dataset's own "
                   "frame, else <stack>_rec.mrc)")
    p.add_argument("--frame", choices=FRAMES, default=None,
                   help="output frame (default: native for napari-shrec datasets, else "
                   "shrec2020)")
    p.add_argument("--thickness", type=int, default=None, help="number of z slices "
                   "(overrides the frame)")
    p.add_argument("--axis-z", type=float, default=None,
                   help="z index of the tilt axis in the output (default thickness // 2)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="ramp",
                   help="ramp (SHREC's, clipped at the Crowther frequency), imod (radial "
                   "cut-off + Gaussian fall-off), sirt (SIRT-like filter), none")
    p.add_argument("--sirt-iterations", type=int, default=10,
                   help="iterations the SIRT-like filter imitates (default 10)")
    p.add_argument("--ctf-correct", action="store_true",
                   help="phase-flip each projection with its CTF (defocus from the dataset or "
                   "--defocus)")
    p.add_argument("--defocus", type=float, default=None, metavar="UM",
                   help="underfocus in µm for --ctf-correct when the input does not record it")
    p.add_argument("--invert-tilt", action="store_true",
                   help="negate the tilt angles (data with the opposite tilt sign)")
    p.add_argument("--noisefree", action="store_true",
                   help="use a dataset's projections_noisefree.mrc")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto (GPU when present), cpu (compiled, all cores), numpy, cuda, "
                   "torch-cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .core.reconstruct import ReconstructionParams, reconstruct
    from .core.reconstruct_input import frame_geometry, load_tilt_series
    from .core.volume import Volume
    from .io._atomic import check_overwrite
    from .io.mrc import write_mrc

    series = load_tilt_series(args.input, tlt=args.tlt, noisefree=args.noisefree)
    frame = args.frame or series.default_frame
    if args.thickness is not None:
        thickness, axis_z = args.thickness, None
        offset = None
    else:
        thickness, axis_z, offset = frame_geometry(frame, series)
    if args.axis_z is not None:
        axis_z = args.axis_z
    out = args.out
    if out is None:
        if series.dataset_folder is not None:
            own_frame = frame == series.default_frame and args.thickness is None \
                and args.axis_z is None
            out = series.dataset_folder / ("reconstruction.mrc" if own_frame
                                           else f"reconstruction_{frame}.mrc")
        else:
            out = series.source.with_name(series.source.stem + "_rec.mrc")
    check_overwrite(out, args.overwrite)
    defocus = series.defocus_um
    if args.defocus is not None:
        defocus = np.full(len(series.tilt_angles_deg), args.defocus)
    if args.ctf_correct and defocus is None:
        raise ValueError(f"{series.source}: --ctf-correct needs the defocus; this input does "
                         "not record it: give --defocus UM")
    params = ReconstructionParams(thickness=thickness, axis_z=axis_z, weighting=args.weighting,
                                  sirt_iterations=args.sirt_iterations,
                                  ctf_correction=args.ctf_correct,
                                  invert_tilt_angles=args.invert_tilt, device=args.device,
                                  **series.microscope)
    progress, close = progress_bar("reconstruct")
    start = time.perf_counter()
    try:
        volume, info = reconstruct(series.projections, series.tilt_angles_deg, params,
                                   pixel_size_nm=series.pixel_size_nm, defocus_um=defocus,
                                   progress=progress)
    finally:
        close()
    elapsed = time.perf_counter() - start
    write_mrc(out, Volume(volume, voxel_size_nm=(series.pixel_size_nm,) * 3),
              overwrite=args.overwrite)
    where = (f"; grandmodel slab at z {offset}…{offset + (series.grandmodel_nz or 0) - 1}"
             if offset is not None and series.grandmodel_nz else "")
    print(f"wrote {out}: {volume.shape[0]}×{volume.shape[1]}×{volume.shape[2]} (z, y, x), "
          f"{len(series.tilt_angles_deg)} tilts, {args.weighting} weighting, frame "
          f"{frame if args.thickness is None else 'custom'}{where}; {elapsed:.1f} s on "
          f"{info['device']}")
    return 0


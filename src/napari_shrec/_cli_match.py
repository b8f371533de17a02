"""``napari-shrec match``: find particles by template matching (the paper's TM-T / TM-F baseline).

Usage::

    napari-shrec match TOMOGRAM --out PARTICLES [--classes C1,C2,…] [--angular-step DEG]
        [--strategy filtered|thresholded|statistical] [--expected N | CLASS=N …]
        [--false-alarm-rate F] [--no-ctf] [--defocus UM] [--tilt-range MIN MAX | --no-wedge]
        [--lowpass NM] [--invert-contrast]
        [--slab Z0 Z1] [--device auto|cpu|cuda] [--threads N] [--structures DIR …]
        [--no-download] [--score-map-dir DIR] [--score] [--overwrite]

TOMOGRAM is an MRC file or a dataset folder (its reconstruction.mrc, searched over the sample
slab, with coordinates written in the grandmodel frame so that they score against the folder's
ground truth; a napari-shrec simulation's own structures, defocus and tilt range are used unless
given). The output format follows the extension: SHREC ``.txt``, RELION ``.star`` or ``.csv``.
Exit codes: 0 done, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ._cli_progress import progress_bar

__all__ = ["add_parser", "run", "parse_expected"]

_EPILOG = """\
examples:
  napari-shrec match demo/ --out tm.txt --score                 # TM-F over the 12 classes
  napari-shrec match demo/ --out tm.txt --strategy thresholded --expected 217
  napari-shrec match tomo.mrc --out tm.star --classes 4d8q,4cr2 --angular-step 12
  napari-shrec match demo/ --out tm.csv --strategy statistical --false-alarm-rate 0.1 \\
      --score-map-dir maps/

Templates come from the structure library (--structures folders, $NAPARI_SHREC_STRUCTURES, the
download cache, the RCSB, else each class's surrogate shape), modulated by the CTF (zero beyond its
first zero) and the missing wedge. Without --angular-step each class uses its Crowther step
(resolution / diameter). Coordinates are voxels of the tomogram (x, y, z), or of the grandmodel
frame for a dataset folder; angles are the best rotation, ZXZ degrees. See
docs/template_matching.md.
"""


def add_parser(subparsers: Any) -> None:
    from .core.tm_backends import DEVICES
    from .core.tm_select import STRATEGIES

    p = subparsers.add_parser(
        "match", help="find particles by template matching (TM-T / TM-F)",
        description="Match every class's template (CTF- and wedge-modulated structure) over a "
        "tomogram with the fast local normalised cross-correlation and write the picks.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tomogram", type=Path, metavar="TOMOGRAM",
                   help="tomogram (MRC) or dataset folder")
    p.add_argument("--out", type=Path, required=True,
                   help="particle list: .txt (SHREC), .star (RELION) or .csv")
    p.add_argument("--classes", default=None, metavar="C1,C2,…",
                   help="comma-separated classes (default: the dataset's simulated classes, else "
                   "the 12 SHREC'20 classes)")
    p.add_argument("--angular-step", type=float, default=None, metavar="DEG",
                   help="rotation step in degrees (default: each class's Crowther step)")
    p.add_argument("--strategy", choices=STRATEGIES, default="filtered",
                   help="filtered (TM-F, default), thresholded (TM-T) or statistical")
    p.add_argument("--expected", action="append", default=[], metavar="N|CLASS=N",
                   help="particles per class: N for every class and/or CLASS=N (repeatable; "
                   "default: the SHREC'20 density scaled to the searched volume)")
    p.add_argument("--false-alarm-rate", type=float, default=1.0, metavar="F",
                   help="statistical: chance voxels per class map above the cut-off (default 1)")
    p.add_argument("--max-candidates", type=int, default=2000, metavar="N",
                   help="candidates kept per class (default 2000, as the paper)")
    p.add_argument("--no-ctf", action="store_true", help="do not modulate templates by the CTF")
    p.add_argument("--defocus", type=float, default=None, metavar="UM",
                   help="underfocus of the template CTF in µm (default: the dataset's, else 3)")
    wedge = p.add_mutually_exclusive_group()
    wedge.add_argument("--tilt-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                       help="missing wedge: tilt range about y in degrees (default: the "
                       "dataset's, else -60 60)")
    wedge.add_argument("--no-wedge", action="store_true", help="no missing-wedge filter")
    p.add_argument("--lowpass", type=float, default=None, metavar="NM",
                   help="Gaussian low-pass exp(-(q·NM)²) of template and tomogram (not in the "
                   "paper's recipe; helps on noisy data, e.g. 10)")
    p.add_argument("--invert-contrast", action="store_true",
                   help="protein is dark in the tomogram (napari-shrec reconstructions: bright)")
    p.add_argument("--slab", type=int, nargs=2, default=None, metavar=("Z0", "Z1"),
                   help="search z slices Z0…Z1-1 only (default: the dataset's sample slab, "
                   "else all)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto (CUDA when PyTorch sees a GPU, else CPU), cpu, cuda, torch-cpu")
    p.add_argument("--threads", type=int, default=0, help="FFT threads on the CPU (0 = all)")
    p.add_argument("--structures", action="append", default=[], metavar="DIR",
                   help="structure source folder or file (repeatable)")
    p.add_argument("--no-download", action="store_true", help="never download structures")
    p.add_argument("--score-map-dir", type=Path, default=None, metavar="DIR",
                   help="also write DIR/scores_<class>.mrc, DIR/angle_index_<class>.mrc and "
                   "DIR/angles_<class>.txt (the rotation of each index)")
    p.add_argument("--score", action="store_true",
                   help="score the picks against a dataset folder's ground truth (native mode)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (and maps)")
    p.set_defaults(func=run)


def parse_expected(items: list[str]) -> int | dict[str, int] | None:
    """``["217"]`` → 217; ``["4d8q=30", "1s3x=10"]`` → {"4d8q": 30, "1s3x": 10}; a plain N with
    CLASS=N items → {"*": N, …} (N for the classes not named). ValueError names a bad item."""
    from .core.classes import normalize_class_name

    default: int | None = None
    per_class: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            count = int(value if sep else name)
            if count < 0 or (sep and not name.strip()):
                raise ValueError
        except ValueError:
            raise ValueError(f"--expected {item!r}: expected N or CLASS=N with N an integer "
                             "≥ 0, e.g. 217 or 4d8q=30") from None
        if sep:
            per_class[normalize_class_name(name)] = count
        else:
            default = count
    if not per_class:
        return default
    if default is not None:
        per_class["*"] = default
    return per_class


def run(args: argparse.Namespace) -> int:
    from .core.classes import SHREC20_TABLE, normalize_class_name
    from .core.structures import StructureUnavailableError
    from .core.tm import MatchParams
    from .core.tm_classes import dataset_templates, match_classes, simulated_microscope
    from .core.tm_select import SelectParams
    from .io._atomic import check_overwrite
    from .io.particles import particle_format_from_path

    particle_format_from_path(args.out)  # a bad extension fails before any work
    check_overwrite(args.out, args.overwrite)
    for folder in args.structures:
        if not Path(folder).exists():
            raise FileNotFoundError(f"--structures {folder}: no such file or folder")
    if args.angular_step is not None and not 0 < args.angular_step <= 180:
        raise ValueError(f"--angular-step {args.angular_step}: must be in (0, 180] degrees")
    if args.false_alarm_rate <= 0:
        raise ValueError(f"--false-alarm-rate {args.false_alarm_rate}: must be > 0")
    if args.max_candidates < 1:
        raise ValueError(f"--max-candidates {args.max_candidates}: must be ≥ 1")
    expected = parse_expected(args.expected)

    from ._cli_detect import _open_tomogram, write_picks

    volume, slab, z_offset, dataset = _open_tomogram(args.tomogram, args.slab)
    simulation = dataset.simulation if dataset is not None else None
    if args.classes:
        classes = [normalize_class_name(c) for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise ValueError(f"--classes {args.classes!r}: no class names")
    else:
        simulated = ((simulation or {}).get("params", {}) or {}).get("grandmodel", {}) or {}
        classes = [normalize_class_name(c) for c in simulated.get("classes") or []] \
            or list(SHREC20_TABLE.names)
    if isinstance(expected, dict) and "*" in expected:
        default = expected.pop("*")
        expected = {name: expected.get(name, default) for name in classes}
    map_files: list[Path] = []
    if args.score_map_dir is not None:
        for name in classes:
            map_files += [args.score_map_dir / f"scores_{name}.mrc",
                          args.score_map_dir / f"angle_index_{name}.mrc",
                          args.score_map_dir / f"angles_{name}.txt"]
        for path in map_files:
            check_overwrite(path, args.overwrite)
    if args.score and dataset is None:
        raise ValueError("--score needs a dataset folder (with occupancy_mask.mrc) as TOMOGRAM")

    tilt_range: tuple[float, float] | None = (-60.0, 60.0)
    if args.no_wedge:
        tilt_range = None
    elif args.tilt_range is not None:
        tilt_range = (float(args.tilt_range[0]), float(args.tilt_range[1]))
    elif dataset is not None and dataset.tilt_angles_deg is not None \
            and len(dataset.tilt_angles_deg):
        tilts = dataset.tilt_angles_deg
        tilt_range = (float(min(tilts)), float(max(tilts)))
    microscope = simulated_microscope(simulation)
    if args.defocus is not None:
        microscope["defocus_um"] = float(args.defocus)
    params = MatchParams(angular_step_deg=args.angular_step, ctf=not args.no_ctf,
                         **microscope, tilt_range_deg=tilt_range,
                         lowpass_nm=args.lowpass, invert_contrast=args.invert_contrast,
                         device=args.device,
                         threads=args.threads)
    select = SelectParams(strategy=args.strategy, expected=expected,
                          max_candidates=args.max_candidates,
                          false_alarm_rate=args.false_alarm_rate)
    voxel = volume.isotropic_voxel_size_nm
    try:
        templates = dataset_templates(classes, simulation, voxel, sources=args.structures,
                                      download=not args.no_download)
    except StructureUnavailableError as exc:
        raise ValueError(f"no template: {exc}") from None

    written: list[str] = []

    def write_maps(name: str, result: Any) -> None:
        _write_maps(args.score_map_dir, name, result, volume, args.overwrite)
        written.append(name)

    progress, close = progress_bar("match")
    start = time.perf_counter()
    try:
        result = match_classes(volume, classes, params, select, templates=templates,
                               voxel_size_nm=voxel, slab_z=slab,
                               on_class_done=write_maps if args.score_map_dir else None,
                               progress=progress)
    finally:
        close()
    elapsed = time.perf_counter() - start
    particles, summary = write_picks(args.out, result.particles, classes, z_offset,
                                     args.overwrite)
    n_angles = sorted({info["angles"] for info in result.class_info.values()})
    device = next(iter(result.class_info.values()))["device"]
    surrogates = [n for n, info in result.class_info.items() if info["surrogate"]]
    print(f"wrote {args.out}: {len(particles)} particles ({summary or 'none'}); "
          f"{len(classes)} classes × {'/'.join(map(str, n_angles))} rotations in "
          f"{elapsed:.1f} s on {device}; strategy {args.strategy}")
    if surrogates:
        print(f"templates from surrogate shapes: {', '.join(surrogates)}")
    if args.score_map_dir is not None:
        print(f"wrote score and best-rotation maps of {len(written)} classes to "
              f"{args.score_map_dir}")
    if args.score:
        from ._cli_detect import _print_score

        _print_score(dataset, particles, args.out.name)
    return 0


def _write_maps(folder: Path, name: str, result: Any, volume: Any, overwrite: bool) -> None:
    import numpy as np

    from .core.volume import Volume
    from .io._atomic import write_text_atomic
    from .io.mrc import write_mrc

    folder.mkdir(parents=True, exist_ok=True)
    voxel = getattr(volume, "voxel_size_nm", (1.0, 1.0, 1.0))
    write_mrc(folder / f"scores_{name}.mrc", Volume(result.scores, voxel_size_nm=voxel),
              overwrite=overwrite)
    write_mrc(folder / f"angle_index_{name}.mrc",
              Volume(np.asarray(result.angle_index), voxel_size_nm=voxel), overwrite=overwrite)
    lines = ["# index phi theta psi (ZXZ degrees, active; -1 in the map: not searched)"]
    lines += [f"{i} {a[0]:.4f} {a[1]:.4f} {a[2]:.4f}"
              for i, a in enumerate(result.angles_zxz_deg)]
    write_text_atomic(folder / f"angles_{name}.txt", "\n".join(lines) + "\n",
                      overwrite=overwrite)

"""``napari-shrec demo``: the whole system end to end on a small simulated tomogram.

Usage::

    napari-shrec demo [--out DIR] [--seed N] [--device auto|cpu|cuda] [--tm-step DEG]
        [--shape Z Y X] [--classes C1,C2,…] [--structures DIR …] [--download] [--view]

Simulates the ``small`` preset (64 × 128 × 128 voxels, 30–40 particles of the 12 SHREC'20
classes), reconstructs it, detects particles with the shipped 3D U-Net and with template
matching (TM-F), scores both the SHREC way and prints the stage timings, the paper-style tables
and where the files are. ``--view`` then opens napari with every layer. See docs/demo.md.
Exit codes: 0 done, 2 bad input (e.g. ``--out`` names a folder holding other files), 130
interrupted.
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
  napari-shrec demo                         # into a new folder under the cache directory
  napari-shrec demo --out demo/ --view      # then open napari with every layer
  napari-shrec demo --seed 3 --device cpu

Without --structures, the structures come from $NAPARI_SHREC_STRUCTURES; classes without a
file use their offline surrogate shapes (nothing is downloaded unless --download).
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="simulate, reconstruct, detect (3D U-Net and TM-F) and score a small "
        "tomogram end to end",
        description="The whole system in about two minutes on a laptop CPU: simulate a small "
        "SHREC'20-style tomogram, reconstruct it, pick particles with the shipped 3D U-Net and "
        "with template matching, score both the SHREC way and print the paper-style tables.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="demo folder (default: a new folder under the cache directory's demo/); "
                   "an existing folder must be empty or an earlier demo's")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="device for every stage (default: the settings' default_device, "
                   "'auto' unless changed: CUDA when PyTorch sees a GPU, else CPU)")
    p.add_argument("--tm-step", type=float, default=45.0, metavar="DEG",
                   help="template matching's rotation step in degrees (default 45: 168 "
                   "rotations per class; the paper used 12.85, 7112 rotations, ~40x longer)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="volume in voxels instead of the small preset's 64 128 128 (the "
                   "particle density stays the preset's)")
    p.add_argument("--classes", default=None, metavar="C1,C2,…",
                   help="simulate and match only these SHREC'20 classes (default: all 12)")
    p.add_argument("--structures", action="append", default=None, metavar="DIR",
                   help="structure source folder or file (repeatable; default "
                   "$NAPARI_SHREC_STRUCTURES)")
    p.add_argument("--download", action="store_true",
                   help="download missing structures from the RCSB (default: offline, "
                   "surrogate shapes)")
    p.add_argument("--view", action="store_true",
                   help="afterwards, open napari with the dataset, both pick lists and the "
                   "plugin's widgets")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .demo import DemoParams, check_demo_folder, default_demo_folder, format_demo_report, \
        run_demo
    from .settings import load_settings

    folder = check_demo_folder(args.out) if args.out is not None else default_demo_folder()
    for source in args.structures or ():
        if not Path(source).exists():
            raise FileNotFoundError(f"--structures {source}: no such file or folder")
    if args.view:
        _check_napari()
    device = args.device or load_settings().default_device
    classes = None
    if args.classes is not None:
        from .core.classes import normalize_class_name

        classes = tuple(normalize_class_name(c) for c in args.classes.split(",") if c.strip())
        if not classes:
            raise ValueError(f"--classes {args.classes!r}: no class names")
    if args.shape is not None and min(args.shape) < 16:
        raise ValueError(f"--shape {' '.join(map(str, args.shape))}: each size must be at "
                         "least 16 voxels")
    params = DemoParams(seed=args.seed, device=device, tm_angular_step_deg=args.tm_step,
                        shape_zyx=tuple(args.shape) if args.shape else None, classes=classes,
                        structure_sources=tuple(args.structures) if args.structures else None,
                        download_structures=args.download)
    print(f"napari-shrec demo: writing to {folder}", flush=True)
    progress, close = progress_bar("demo")
    try:
        result = run_demo(params, folder, progress=progress,
                          log_line=lambda line: _print_above_bar(line, progress is not None))
    finally:
        close()
    print()
    print(format_demo_report(result), end="")
    if args.view:
        return view_demo(result.dataset, list(result.picks.values()))
    return 0


def _print_above_bar(line: str, has_bar: bool) -> None:
    if has_bar:
        from tqdm import tqdm

        tqdm.write(f"  {line}", file=sys.stdout)
    else:
        print(f"  {line}", flush=True)


def _check_napari() -> None:
    try:
        import napari  # noqa: F401
    except ImportError:
        raise ValueError("--view needs napari and a Qt binding: pip install "
                         "'napari-shrec[napari]'") from None


def view_demo(dataset: Path, picks: list[Path]) -> int:
    """Open napari with the dataset's layers, the pick lists and every plugin widget."""
    import napari

    from ._viewer import dock_plugin_widgets

    viewer = napari.Viewer(title="napari-shrec demo")
    dock_plugin_widgets(viewer)
    viewer.open(str(dataset), plugin="napari-shrec")
    for path in picks:
        viewer.open(str(path), plugin="napari-shrec")
    napari.run()
    return 0

"""``napari-shrec``: the command line of napari-shrec. Each action is a subcommand calling the same
core functions as the napari widgets; ``napari-shrec ACTION --help`` documents each.

Errors a user can fix (missing file, bad line, refused overwrite) print one clear message naming
the file and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["main", "build_parser"]

log = logging.getLogger("napari_shrec")

# Exceptions that mean "the user's input is wrong", printed without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
)


def _add_view(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "view",
        help="open napari with the napari-shrec widgets docked and PATHs loaded",
        description="Open napari with every napari-shrec dock widget and load the given files or "
        "dataset folders (MRC volumes, particle lists, SHREC/napari-shrec dataset folders).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or dataset folders to open")
    p.add_argument("--no-widgets", action="store_true", help="do not dock the plugin's widgets")
    p.set_defaults(func=_run_view)


def _run_view(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
    try:
        import napari
    except ImportError:
        print("napari-shrec view needs napari and a Qt binding: "
              "pip install 'napari-shrec[napari]'", file=sys.stderr)
        return 2
    from ._viewer import dock_plugin_widgets

    viewer = napari.Viewer(title="napari-shrec")
    if not args.no_widgets:
        dock_plugin_widgets(viewer)
    for path in args.paths:
        viewer.open(path, plugin="napari-shrec")
    napari.run()
    return 0


def _add_info(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe an MRC file, a particle list or a dataset folder",
        description="Print what napari-shrec reads from a file or folder: MRC shape (z, y, x), "
        "dtype, voxel size and origin; particle counts per class; a dataset's flavour, "
        "volumes and frame offset.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .io.dataset import is_dataset_folder, load_dataset
    from .io.mrc import MRC_SUFFIXES, read_mrc_header
    from .io.particles import read_particles
    from .io.zarr import format_ome_zarr_info, is_ome_zarr, read_ome_zarr_info

    for raw in args.paths:
        path = Path(raw)
        if path.is_dir() and is_ome_zarr(path):
            print(format_ome_zarr_info(read_ome_zarr_info(path)))
        elif path.is_dir():
            if not is_dataset_folder(path):
                raise ValueError(f"{path}: not a dataset folder (no particle_locations.txt with "
                                 "volumes, no simulation.json)")
            ds = load_dataset(path)
            print(f"{path}: {ds.flavour} dataset, {len(ds.particles)} particles, voxel size "
                  f"{ds.voxel_size_nm:g} nm, grandmodel z offset {ds.grandmodel_z_offset}")
            for name, header in ds.headers.items():
                print(f"  {name:22s} {header['shape_zyx']} {header['dtype']}")
            _print_counts(ds.particles.class_counts())
        elif path.suffix.lower() in MRC_SUFFIXES:
            h = read_mrc_header(path)
            vs = h["voxel_size_nm"]
            note = "" if h["voxel_size_from_header"] else " (header has none; assumed)"
            print(f"{path}: shape (z, y, x) {h['shape_zyx']}, {h['dtype']}, voxel size (z, y, x) "
                  f"{vs[0]:g} {vs[1]:g} {vs[2]:g} nm{note}, origin (z, y, x) "
                  f"{tuple(round(o, 3) for o in h['origin_nm'])} nm"
                  + (", image stack" if h["is_image_stack"] else ""))
        else:
            particles = read_particles(path)
            fmt = particles.metadata.get("format", "?")
            flavour = particles.metadata.get("flavour")
            print(f"{path}: {len(particles)} particles ({fmt}{', ' + flavour if flavour else ''})")
            _print_counts(particles.class_counts())
    return 0


def _print_counts(counts: Any) -> None:
    for name, count in counts.items():
        print(f"  {name:10s} {count:6d}")


def _add_convert(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a particle list between SHREC txt, RELION STAR and CSV",
        description="Convert a particle list; formats follow the suffixes (.txt SHREC, .star "
        "RELION, .csv). Angles are converted through rotation matrices (ZXZ ⇄ RELION ZYZ).",
    )
    p.add_argument("source", help="input particle list")
    p.add_argument("target", help="output particle list")
    p.add_argument("--relion-version", type=int, choices=(3, 4, 5), default=4,
                   help="STAR flavour to write: 3/4 pixel coordinates, 5 centred Ångström "
                        "coordinates (default 4)")
    p.add_argument("--voxel-size", type=float, metavar="NM",
                   help="voxel size in nm (needed for RELION 5 and written to STAR optics)")
    p.add_argument("--tomogram-shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="tomogram size in voxels, x y z (needed for RELION 5 coordinates)")
    p.add_argument("--flavour", choices=("shrec2020", "shrec2021"), default="shrec2020",
                   help="SHREC txt label case to write (default shrec2020: lower case)")
    p.add_argument("--overwrite", action="store_true", help="replace TARGET if it exists")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .io.particles import read_particles, write_particles

    shape = tuple(args.tomogram_shape) if args.tomogram_shape else None
    particles = read_particles(args.source, voxel_size_nm=args.voxel_size,
                               tomogram_shape_xyz=shape)
    target = Path(args.target)
    suffix = target.suffix.lower()
    options: dict[str, Any] = {}
    if suffix == ".star":
        options.update(relion_version=args.relion_version, voxel_size_nm=args.voxel_size,
                       tomogram_shape_xyz=shape)
    elif suffix == ".txt":
        options.update(flavour=args.flavour)
    write_particles(target, particles, overwrite=args.overwrite, **options)
    print(f"wrote {len(particles)} particles to {target}")
    return 0


def _optional_actions() -> list[Callable[[Any], None]]:
    """Subcommands that live in their own modules (one per action)."""
    adders: list[Callable[[Any], None]] = []
    from . import (
        _cli_batch,
        _cli_demo,
        _cli_detect,
        _cli_match,
        _cli_reconstruct,
        _cli_score,
        _cli_simulate,
        _cli_structures,
        _cli_train,
    )

    adders.append(_cli_simulate.add_parser)
    adders.append(_cli_reconstruct.add_parser)
    adders.append(_cli_train.add_parser)
    adders.append(_cli_detect.add_parser)
    adders.append(_cli_match.add_parser)
    adders.append(_cli_score.add_parser)
    adders.append(_cli_structures.add_parser)
    adders.append(_cli_batch.add_parser)
    adders.append(_cli_demo.add_parser)
    return adders


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-shrec",
        description="The SHREC'20 cryo-ET benchmark system on your machine: score particle "
        "picks exactly as the SHREC organizers did, convert particle lists, inspect files and "
        "open them in napari.",
    )
    parser.add_argument("--version", action="version", version=f"napari-shrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(title="actions", metavar="ACTION", dest="action")
    for adder in _optional_actions():
        adder(subparsers)
    _add_convert(subparsers)
    _add_info(subparsers)
    _add_view(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"napari-shrec {args.action}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``napari-shrec structures list|fetch|build|show``: the structure library on the command line.

Usage::

    napari-shrec structures list  [--source DIR ...] [--no-download]
    napari-shrec structures fetch ID [ID ...] | --all   [--overwrite]
    napari-shrec structures build --source FILE_OR_DIR [...] --out DIR [--voxel-size NM] [...]
    napari-shrec structures show  NAME_OR_FILE [--source DIR ...] [--json] [--view]

Common options: ``--cache-dir DIR`` (default: $NAPARI_SHREC_CACHE_DIR or the user cache),
``--url-template URL`` (download URL with ``{pdb_id}``). Tables go to stdout; warnings (surrogate
fallbacks, failed downloads) and progress to stderr. Exit codes: 0 done, 2 bad input.

This module imports neither napari nor Qt (``show --view`` imports napari when asked).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ._cli_progress import progress_bar

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  napari-shrec structures list --source ../shared/structures/pdb
  napari-shrec structures fetch 4d8q 4cr2
  napari-shrec structures build --source pdb/ --source maps/ --out structures_1nm/
  napari-shrec structures build --source pdb/ --out structures_05nm/ --voxel-size 0.5 \\
      --resolution 1.0 --classes 1bxn,3cf3
  napari-shrec structures show 1bxn --source pdb/ --json

A class without a file or download uses its surrogate shape (with a warning) unless
--no-surrogates is given. See docs/structures.md for units, thresholds and sources.
"""


def add_parser(subparsers: Any) -> None:
    """Add the ``structures`` subcommand (with its own sub-actions)."""
    p = subparsers.add_parser(
        "structures",
        help="build, fetch and inspect the potential maps of the particle classes",
        description="The structure library: electrostatic potential maps (V) of the SHREC'20 "
        "classes from atomic models (PDB/mmCIF), maps (MRC) or offline surrogate shapes.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="structures_action", metavar="ACTION")

    def common(q: argparse.ArgumentParser, sources: bool = True) -> None:
        if sources:
            q.add_argument("--source", action="append", default=[], metavar="FILE_OR_DIR",
                           help="structure file, or folder of files named by PDB id "
                           "(repeatable; searched in order)")
            q.add_argument("--no-download", action="store_true",
                           help="never download from the RCSB")
        q.add_argument("--cache-dir", type=Path, default=None,
                       help="cache for downloads and computed maps")
        q.add_argument("--url-template", default=None,
                       help="download URL containing {pdb_id} (default: RCSB mmCIF)")

    def map_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--voxel-size", type=float, default=1.0, metavar="NM",
                       help="voxel edge of the maps in nm (default 1.0, SHREC'20)")
        q.add_argument("--resolution", type=float, default=None, metavar="NM",
                       help="Gaussian blur to this resolution, molmap convention (default none)")
        q.add_argument("--b-factor", type=float, default=0.0, metavar="A2",
                       help="isotropic B-factor in Å² added to every atom (default 0)")
        q.add_argument("--atom-b-factors", action="store_true",
                       help="also apply each atom's own B-factor")
        q.add_argument("--no-hydrogens", action="store_true",
                       help="do not add implicit hydrogens to amino acids")
        q.add_argument("--assembly", default="auto",
                       help="'auto' (closest to the class weight), 'deposited' or an assembly "
                       "name such as 1")
        q.add_argument("--margin", type=float, default=1.0, metavar="NM",
                       help="empty margin around the structure in nm (default 1.0)")
        q.add_argument("--threshold", type=float, default=None, metavar="V",
                       help="shape-mask threshold in volts (default 0.5)")
        q.add_argument("--no-surrogates", action="store_true",
                       help="fail instead of using a surrogate shape")
        q.add_argument("--no-cache", action="store_true",
                       help="neither read nor write computed maps in the cache")

    q = actions.add_parser("list", help="the classes and where each one's structure would come "
                           "from")
    common(q)
    q.set_defaults(func=run)

    q = actions.add_parser("fetch", help="download atomic models (mmCIF) by PDB id into the cache")
    q.add_argument("ids", nargs="*", metavar="ID", help="PDB ids")
    q.add_argument("--all", action="store_true", help="every SHREC'20 class")
    q.add_argument("--overwrite", action="store_true", help="download again even if cached")
    common(q, sources=False)
    q.set_defaults(func=run)

    q = actions.add_parser("build", help="write one <pdb-id>.mrc per class and structures.json")
    common(q)
    map_options(q)
    q.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    q.add_argument("--classes", default=None,
                   help="comma-separated class names (default: all SHREC'20 classes)")
    q.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    q.set_defaults(func=run)

    q = actions.add_parser("show", help="statistics and provenance of one map")
    q.add_argument("target", metavar="NAME_OR_FILE",
                   help="a class name (searched in --source) or a structure file")
    common(q)
    map_options(q)
    q.add_argument("--json", action="store_true", help="print the full record as JSON")
    q.add_argument("--view", action="store_true", help="open the map in napari (3D)")
    q.set_defaults(func=run)
    p.set_defaults(func=lambda args: _print_help(p))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


class _CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def run(args: argparse.Namespace) -> int:
    from .core.structure_sources import StructureDownloadError
    from .core.structures import StructureUnavailableError

    action = args.structures_action
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning  # one line, no source echo
            return {"list": _list, "fetch": _fetch, "build": _build, "show": _show}[action](args)
    except (_CliError, StructureUnavailableError, StructureDownloadError) as exc:
        print(f"napari-shrec structures {action}: error: {exc}", file=sys.stderr)
        return 2


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _library(args: argparse.Namespace, surrogates: bool = True) -> Any:
    from .core.structures import StructureLibrary

    sources = [Path(s) for s in getattr(args, "source", [])]
    for source in sources:
        if not source.exists():
            raise _CliError(f"--source {source}: no such file or folder")
    return StructureLibrary(sources, cache_dir=args.cache_dir,
                            download=not getattr(args, "no_download", True),
                            surrogates=surrogates and not getattr(args, "no_surrogates", False),
                            use_cache=not getattr(args, "no_cache", False),
                            url_template=args.url_template)


def _params(args: argparse.Namespace) -> Any:
    from .core.shape_metrics import DEFAULT_MASK_THRESHOLD_V
    from .core.structures import StructureParams

    try:
        return StructureParams(
            voxel_size_nm=args.voxel_size, b_factor_a2=args.b_factor,
            use_atom_b_factors=args.atom_b_factors, resolution_nm=args.resolution,
            implicit_hydrogens=not args.no_hydrogens, assembly=args.assembly,
            margin_nm=args.margin,
            mask_threshold_v=DEFAULT_MASK_THRESHOLD_V if args.threshold is None
            else args.threshold)
    except ValueError as exc:
        raise _CliError(str(exc)) from None


def _list(args: argparse.Namespace) -> int:
    from .core.classes import SHREC20_TABLE

    library = _library(args)
    print(f"{'id':>3}  {'class':<6} {'kDa':>8} {'V nm³':>7} {'Ψ':>6}  {'source':<12} where")
    for cls in SHREC20_TABLE:
        source = library.locate(cls)
        where = str(source.path) if source.path else source.detail
        print(f"{cls.id:>3}  {cls.name:<6} {cls.weight_kda:>8.2f} {cls.volume_nm3:>7.1f} "
              f"{cls.sphericity:>6.3f}  {source.kind:<12} {where}")
    print(f"cache: {library.cache_dir}", file=sys.stderr)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .core.classes import SHREC20_TABLE
    from .core.structure_sources import download_structure

    ids = [cls.name for cls in SHREC20_TABLE] if args.all else list(args.ids)
    if not ids:
        raise _CliError("give PDB ids or --all")
    failed = []
    for pdb_id in ids:
        try:
            path = download_structure(pdb_id, args.cache_dir, url_template=args.url_template,
                                      overwrite=args.overwrite)
            print(f"{pdb_id}: {path}")
        except ValueError as exc:
            raise _CliError(str(exc)) from None
        except OSError as exc:
            print(f"{pdb_id}: failed: {exc}", file=sys.stderr)
            failed.append(pdb_id)
    if failed:
        print(f"{len(failed)} of {len(ids)} downloads failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def _build(args: argparse.Namespace) -> int:
    from .core.classes import SHREC20_TABLE
    from .io.structures import write_structure_maps

    if args.classes:
        names = [name.strip().lower() for name in args.classes.split(",") if name.strip()]
        unknown = [name for name in names if name not in SHREC20_TABLE]
        if unknown:
            raise _CliError(f"--classes: unknown class(es) {', '.join(unknown)}; known: "
                            + ", ".join(c.name for c in SHREC20_TABLE))
    else:
        names = None
    if not args.overwrite:  # fail before the work, not after it
        from .core.structures import STRUCTURES_JSON
        from .io._atomic import check_overwrite

        for name in names or [cls.name for cls in SHREC20_TABLE]:
            check_overwrite(args.out / f"{name}.mrc", False)
        check_overwrite(args.out / STRUCTURES_JSON, False)
    library = _library(args)
    params = _params(args)
    progress, close = progress_bar("structures")
    try:
        maps = library.build(names, params, progress=progress)
    finally:
        close()
    write_structure_maps(maps, args.out, overwrite=args.overwrite)
    _print_metrics_table(maps)
    surrogates = [name for name, m in maps.items() if m.is_surrogate]
    print(f"wrote {len(maps)} maps to {args.out}"
          + (f"; surrogates: {', '.join(surrogates)}" if surrogates else ""), file=sys.stderr)
    return 0


def _print_metrics_table(maps: dict[str, Any]) -> None:
    from .io.structures import table1_comparison

    print(f"{'class':<6} {'source':<12} {'box':>4} {'V nm³':>7} {'V/T1':>5} {'A nm²':>7} "
          f"{'Ψ':>6} {'Ψ T1':>6} {'r_eff':>6} {'r_bound':>7} {'∫V V·nm³':>9}")
    for name, structure_map in maps.items():
        m = structure_map.metrics
        t1 = table1_comparison(structure_map) or {}
        ratio = f"{t1['volume_ratio']:.2f}" if "volume_ratio" in t1 else "-"
        psi_t1 = f"{t1['sphericity']:.3f}" if t1.get("sphericity") else "-"
        print(f"{name:<6} {structure_map.kind:<12} {structure_map.potential.shape[0]:>4} "
              f"{m.volume_nm3:>7.1f} {ratio:>5} {m.area_nm2:>7.1f} {m.sphericity:>6.3f} "
              f"{psi_t1:>6} {m.effective_radius_nm:>6.2f} {m.bounding_radius_nm:>7.2f} "
              f"{m.integrated_potential_v_nm3:>9.0f}")


def _show(args: argparse.Namespace) -> int:
    from .core.structure_sources import is_atomic_model_file, is_map_file
    from .core.structures import StructureLibrary
    from .io.structures import table1_comparison

    target = Path(args.target)
    if target.is_file():
        if not (is_atomic_model_file(target) or is_map_file(target)):
            raise _CliError(f"{target}: not a PDB/mmCIF or MRC file")
        name = target.name.lower().split(".")[0].removeprefix("pdb")
        library = StructureLibrary(files={name: target}, cache_dir=args.cache_dir,
                                   download=False, surrogates=False,
                                   use_cache=not args.no_cache)
    else:
        if target.suffix or "/" in args.target:
            raise _CliError(f"{target}: no such file")
        name = args.target.lower()
        library = _library(args)
    structure_map = library.get(name, _params(args))
    record = structure_map.summary()
    record["table1"] = table1_comparison(structure_map)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        _print_metrics_table({structure_map.name: structure_map})
        provenance = structure_map.provenance
        print(f"kind: {provenance.get('kind')}"
              + ("  (SURROGATE shape)" if structure_map.is_surrogate else ""))
        for key in ("source", "assembly", "model_mass_kda", "n_atoms", "detail", "cache"):
            if provenance.get(key) not in (None, ""):
                print(f"{key}: {provenance[key]}")
    if args.view:
        return _view(structure_map)
    return 0


def _view(structure_map: Any) -> int:
    try:
        import napari
    except ImportError:
        print("--view needs napari and a Qt binding: pip install 'napari-shrec[napari]'",
              file=sys.stderr)
        return 2
    viewer = napari.Viewer(title=f"napari-shrec structure {structure_map.name}", ndisplay=3)
    viewer.add_image(structure_map.potential, name=f"structure: {structure_map.name}",
                     scale=(structure_map.voxel_size_nm,) * 3, rendering="iso",
                     iso_threshold=structure_map.metrics.threshold_v,
                     metadata={"napari_shrec": {"structure": structure_map.summary()}})
    napari.run()
    return 0


"""Time the grandmodel build (rotations, placement, masks and noise) at SHREC'20 size.

Run:  python benchmarks/bench_grandmodel.py [--size full|small] [--structures DIR ...]
                                            [--seed N] [--threads N] [--json OUT]

``full`` (default): 200 × 512 × 512 voxels (z, y, x) at 1 nm, 2400–2800 particles of the 12
SHREC'20 classes (target: well under 60 s). ``small``: 64 × 128 × 128, 30 particles.
The maps come from the structure library: ``--structures`` folders (default
``../shared/structures/pdb`` and ``../shared/structures/polnet_maps_10A`` beside the repository)
with offline surrogates for the rest, cached in the library's cache directory (``--cache-dir``).
Prints the time of each stage, placed vs requested counts and the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import warnings
from pathlib import Path

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"
SIZES = {"full": {"shape_zyx": (200, 512, 512), "n_particles": (2400, 2800)},
         "small": {"shape_zyx": (64, 128, 128), "n_particles": (30, 30)}}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def time_grandmodel(shape_zyx: tuple[int, int, int], n_particles: tuple[int, int], *,
                    sources: list[Path] | None = None, seed: int = 0, threads: int = 0) -> dict:
    """Build the 12 maps (library cache) and one grandmodel of ``shape_zyx`` (z, y, x voxels at
    1 nm) with ``n_particles`` (min, max); times per stage, placed/requested, occupied fraction.
    """
    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.core.grandmodel import GrandmodelParams, build_grandmodel
    from napari_shrec.core.structures import (
        StructureFallbackWarning,
        StructureLibrary,
        StructureParams,
    )

    folders = sources or [DEFAULT_STRUCTURES / "pdb", DEFAULT_STRUCTURES / "polnet_maps_10A"]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFallbackWarning)
        library = StructureLibrary([f for f in folders if f.exists()], download=False,
                                   surrogates=True)
        maps = library.build(SHREC20_TABLE.names, StructureParams(voxel_size_nm=1.0), warn=False)
    maps_s = time.perf_counter() - start
    params = GrandmodelParams(shape_zyx=tuple(shape_zyx), n_particles=tuple(n_particles),
                              seed=seed, threads=threads)
    gm = build_grandmodel(maps, params)
    report = gm.report
    return {"shape_zyx": list(shape_zyx), "maps_s": maps_s,
            "timings_s": dict(report.timings_s), "build_s": report.timings_s["total"],
            "placed": report.n_placed, "requested": report.n_requested,
            "threads": report.n_threads,
            "occupied_fraction": float((gm.occupancy_mask > 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--structures", type=Path, action="append", default=None,
                        help="structure folder (repeatable; default: the shared PDB files and "
                             "PolNet maps)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--sampler", choices=("uniform", "shrec2020"), default="uniform")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.core.grandmodel import GrandmodelParams, build_grandmodel
    from napari_shrec.core.structures import (
        StructureFallbackWarning,
        StructureLibrary,
        StructureParams,
    )

    folders = args.structures or [DEFAULT_STRUCTURES / "pdb",
                                  DEFAULT_STRUCTURES / "polnet_maps_10A"]
    sources = [f for f in folders if f.exists()]
    for missing in sorted(set(folders) - set(sources)):
        print(f"note: {missing} does not exist; its classes use surrogates")

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFallbackWarning)
        library = StructureLibrary(sources, cache_dir=args.cache_dir, download=False,
                                   surrogates=True)
        maps = library.build(SHREC20_TABLE.names, StructureParams(voxel_size_nm=1.0), warn=False)
    maps_s = time.perf_counter() - start
    rss_after_maps = _peak_rss_mib()

    params = GrandmodelParams(**SIZES[args.size], seed=args.seed, threads=args.threads,
                              orientation_sampler=args.sampler)
    gm = build_grandmodel(maps, params)
    report = gm.report
    timings = report.timings_s
    peak = _peak_rss_mib()

    kinds = {name: m.kind for name, m in maps.items()}
    print(f"grandmodel {args.size}: {params.shape_zyx} (z, y, x) at 1 nm, seed {params.seed}, "
          f"{params.orientation_sampler} orientations, {report.n_threads} threads "
          f"(cpu_count {os.cpu_count()})")
    print(f"  maps: {maps_s:.2f} s  ({', '.join(f'{k}:{v}' for k, v in kinds.items())})")
    print(f"  rotations       {timings['rotations']:7.2f} s")
    print(f"  placement       {timings['placement']:7.2f} s  ({report.total_tries} tries)")
    print(f"  masks and noise {timings['masks_and_noise']:7.2f} s")
    print(f"  total build     {timings['total']:7.2f} s  (target well under 60 s at full size)")
    print(f"  placed {report.n_placed} of {report.n_requested} requested "
          f"({len(report.not_fitted)} not fitted; "
          f"{report.n_centre_below_threshold} with a hollow centre voxel added)")
    occupied = float((gm.occupancy_mask > 0).mean())
    print(f"  occupied volume fraction {occupied:.4f}")
    for name, entry in report.per_class.items():
        print(f"    {name}: {entry['placed']}/{entry['requested']}")
    print(f"  peak RSS {peak:.0f} MiB (after the maps: {rss_after_maps:.0f} MiB)")

    if args.json:
        result = {"machine": {"python": platform.python_version(),
                              "processor": platform.processor() or platform.machine(),
                              "cpu_count": os.cpu_count()},
                  "size": args.size, "params": params.to_dict(), "maps_s": maps_s,
                  "map_kinds": kinds, "report": report.to_dict(),
                  "occupied_fraction": occupied, "peak_rss_mib": peak,
                  "peak_rss_after_maps_mib": rss_after_maps}
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

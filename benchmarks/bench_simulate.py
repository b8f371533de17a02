"""Time a whole simulation (structures → grandmodel → tilt series → files) and its peak memory.

Run:  python benchmarks/bench_simulate.py [--preset small|shrec2020] [--structures DIR ...]
                                          [--device auto|cpu|cuda] [--json OUT]

Targets (issue 5, 2-core laptop CPU): ``small`` ≤ 20 s; ``shrec2020`` (≈ 2600 particles, 41 tilts,
512 × 512 × 200) ≤ 10 min (goal 5 min) with ≤ 8 GB peak memory. Peak memory is the process's
maximum resident set size (``resource.getrusage``), so run one preset per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"


def time_simulation(preset: str, out_dir: Path, *, seed: int = 0,
                    sources: list[Path] | None = None, device: str = "auto",
                    **overrides) -> dict:
    """One whole simulation (structures → grandmodel → tilt series → reconstruction → files)
    into ``out_dir``: wall time, per-stage times, particles, tilts, output size.
    ``overrides``: :func:`~napari_shrec.core.simulate.simulation_params` keywords (e.g.
    ``shape_zyx``, ``n_particles``)."""
    from napari_shrec.core.simulate import run_simulation, simulation_params

    sources = sources or [p for p in (DEFAULT_STRUCTURES / "pdb",
                                      DEFAULT_STRUCTURES / "polnet_maps_10A") if p.is_dir()]
    params = simulation_params(preset, seed=seed, structure_sources=sources,
                               download_structures=False, device=device, **overrides)
    start = time.perf_counter()
    result = run_simulation(params, Path(out_dir))
    wall = time.perf_counter() - start
    report = result.grandmodel.report
    return {"preset": preset, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in overrides.items()},
            "shape_zyx": list(params.grandmodel.shape_zyx), "wall_s": wall,
            "timings_s": dict(result.timings_s),
            "output_mb": sum(f.stat().st_size for f in Path(out_dir).iterdir()) / 2 ** 20,
            "particles_requested": report.n_requested, "particles_placed": report.n_placed,
            "tilts": len(result.tiltseries.tilt_angles_deg) if result.tiltseries else 0,
            "device": result.tiltseries.device if result.tiltseries else None,
            "surrogate_classes": list(result.surrogate_classes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=("small", "shrec2020"))
    parser.add_argument("--structures", action="append", type=Path, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from napari_shrec.core.simulate import run_simulation, simulation_params

    sources = args.structures or [p for p in (DEFAULT_STRUCTURES / "pdb",
                                              DEFAULT_STRUCTURES / "polnet_maps_10A")
                                  if p.is_dir()]
    params = simulation_params(args.preset, seed=args.seed, structure_sources=sources,
                               download_structures=False, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_simulation(params, Path(tmp) / "sim")
        wall = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in (Path(tmp) / "sim").iterdir()) / 2 ** 20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = result.grandmodel.report
    record = {
        "preset": args.preset, "wall_s": wall, "timings_s": result.timings_s,
        "peak_rss_mb": peak_mb, "output_mb": size_mb,
        "particles_requested": report.n_requested, "particles_placed": report.n_placed,
        "tilts": len(result.tiltseries.tilt_angles_deg) if result.tiltseries else 0,
        "device": result.tiltseries.device if result.tiltseries else None,
        "surrogate_classes": result.surrogate_classes,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
    }
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings_s.items())
    print(f"{args.preset}: {wall:.1f} s wall ({timings}); peak RSS {peak_mb:.0f} MB; "
          f"{report.n_placed}/{report.n_requested} particles; {record['tilts']} tilts on "
          f"{record['device']}; output {size_mb:.0f} MB; surrogates: "
          f"{', '.join(result.surrogate_classes) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

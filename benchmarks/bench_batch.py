"""Batch simulation on a 2-worker LocalCluster vs the same simulations in series.

Run:  python benchmarks/bench_batch.py [--n 4] [--preset small] [--workers 2] [--json OUT]

Both sides start a fresh Python process and are timed from outside, imports and warm-up included:

- series: one process simulating task 0 … n−1 one after another with every core (what
  ``napari-shrec simulate`` does by default: ``threads=0``);
- batch: ``napari-shrec batch simulate --n N --preset P --out DIR --workers W`` (a LocalCluster of
  W single-threaded worker processes, cluster start-up included).

Both write the same datasets (seed i for task i); the particle lists are compared. Target
(issue 12): batch ≥ 1.6× faster than series for 4 ``small`` simulations on 2 workers. The
machine's load average is printed: other processes on the cores make the ratio meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"

_SERIES = """
import os, sys
from napari_shrec.batch import execute_task, plan_simulate
out, n, preset = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sources = sys.argv[4:]
for task in plan_simulate(out, n, preset=preset, seed=0, structure_sources=sources,
                          download_structures=False):
    execute_task(task, threads=os.cpu_count() or 1)
"""


def _sources() -> list[str]:
    return [str(p) for p in (DEFAULT_STRUCTURES / "pdb", DEFAULT_STRUCTURES / "polnet_maps_10A")
            if p.is_dir()]


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--preset", default="small", choices=("small", "shrec2020"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json} exists; not replaced")

    sources = _sources()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        series_dir, batch_dir = Path(tmp) / "series", Path(tmp) / "batch"
        load_before = os.getloadavg()
        series_s = _timed([sys.executable, "-c", _SERIES, str(series_dir), str(args.n),
                           args.preset, *sources])
        cli = [sys.executable, "-m", "napari_shrec.cli", "batch", "simulate", "--n",
               str(args.n), "--preset", args.preset, "--out", str(batch_dir), "--seed", "0",
               "--workers", str(args.workers), "--no-download"]
        for source in sources:
            cli += ["--structures", source]
        batch_s = _timed(cli)
        load_after = os.getloadavg()
        same = all((series_dir / f"model_{i}" / "particle_locations.txt").read_text()
                   == (batch_dir / f"model_{i}" / "particle_locations.txt").read_text()
                   for i in range(args.n))
    ratio = series_s / batch_s
    result = {"n": args.n, "preset": args.preset, "workers": args.workers,
              "cores": os.cpu_count(), "series_s": series_s, "batch_s": batch_s,
              "speedup": ratio, "same_outputs": same, "target_speedup": 1.6,
              "load_average_before": load_before, "load_average_after": load_after}
    print(f"{args.n} × {args.preset} simulations, {os.cpu_count()} cores")
    print(f"  series (one process, all cores)      {series_s:7.1f} s")
    print(f"  batch  ({args.workers}-worker LocalCluster)        {batch_s:7.1f} s")
    print(f"  speed-up {ratio:.2f}× (target ≥ 1.6×); same outputs: {same}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          "(1 min)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Batch simulation on a 2-worker LocalCluster vs the same simulations in series.

Run:  python benchmarks/bench_batch.py [--n 4] [--preset small] [--workers 2] [--json OUT]

Every side is timed from outside, process start, imports and warm-up included:

- CLI series: ``napari-shrec simulate --preset P --out DIR/model_i --seed i`` run n times one
  after another, each with every core (its default ``--threads 0``): what a user does without
  ``batch``, and the baseline of the target;
- one-process series (stricter): a single Python process simulating task 0 … n−1 one after
  another with every core, paying the imports once;
- batch: ``napari-shrec batch simulate --n N --preset P --out DIR --workers W`` (a LocalCluster of
  W single-threaded worker processes, cluster start-up included), with the command line's
  default start method (workers forked on Linux), and again with ``--start-method spawn``.

All write the same datasets (seed i for task i); the particle lists are compared. Target
(issue 12): batch ≥ 1.6× faster than the same four in series for 4 ``small`` simulations on 2
workers. The machine's load average is printed: other processes on the cores make the ratios
meaningless.

To tell the cluster's overhead from what the cores can give, it also times one simulation's
compute (imports excluded) three ways: alone with one thread, alone with every core, and W
single-threaded ones at once (the batch's steady state, where the runs share caches and memory
bandwidth). The **ceiling** is the CLI series' time over ⌈n / W⌉ concurrent runs: the speed-up
of a batch with no start-up and no imports at all.
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


_ONE_TASK = """
import sys, time
from napari_shrec.batch import execute_task, plan_simulate
out, preset, index, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sources = sys.argv[5:]
task = plan_simulate(out, index + 1, preset=preset, seed=0, structure_sources=sources,
                     download_structures=False)[index]
start = time.perf_counter()
execute_task(task, threads=threads)
print(time.perf_counter() - start)
"""


def _task_seconds(out: Path, preset: str, indices: list[int], threads: int,
                  sources: list[str]) -> list[float]:
    """Compute time (imports excluded) of simulations ``indices``, run at once, one process
    each, with ``threads`` threads each."""
    procs = [subprocess.Popen([sys.executable, "-c", _ONE_TASK, str(out), preset, str(i),
                               str(threads), *sources], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in indices]
    times = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"one-task simulation failed ({proc.returncode}):\n"
                               f"{stderr[-3000:]}")
        times.append(float(stdout.strip().splitlines()[-1]))
    return times


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
        cli_dir = Path(tmp) / "cli"
        load_before = os.getloadavg()
        cli_series_s = 0.0
        for i in range(args.n):
            cmd = [sys.executable, "-m", "napari_shrec.cli", "simulate", "--preset", args.preset,
                   "--out", str(cli_dir / f"model_{i}"), "--seed", str(i), "--no-download"]
            for source in sources:
                cmd += ["--structures", source]
            cli_series_s += _timed(cmd)
        series_s = _timed([sys.executable, "-c", _SERIES, str(series_dir), str(args.n),
                           args.preset, *sources])
        cli = [sys.executable, "-m", "napari_shrec.cli", "batch", "simulate", "--n",
               str(args.n), "--preset", args.preset, "--out", str(batch_dir), "--seed", "0",
               "--workers", str(args.workers), "--no-download"]
        for source in sources:
            cli += ["--structures", source]
        batch_s = _timed(cli)
        spawn_dir = Path(tmp) / "batch-spawn"
        spawn_s = _timed([str(spawn_dir) if a == str(batch_dir) else a for a in cli]
                         + ["--start-method", "spawn"])
        cores = os.cpu_count() or 1
        alone_1_s = _task_seconds(Path(tmp) / "alone1", args.preset, [0], 1, sources)[0]
        alone_all_s = _task_seconds(Path(tmp) / "aloneN", args.preset, [0], cores, sources)[0]
        concurrent_s = max(_task_seconds(Path(tmp) / "concurrent", args.preset,
                                         list(range(args.workers)), 1, sources))
        load_after = os.getloadavg()
        same = all((series_dir / f"model_{i}" / "particle_locations.txt").read_text()
                   == (batch_dir / f"model_{i}" / "particle_locations.txt").read_text()
                   == (cli_dir / f"model_{i}" / "particle_locations.txt").read_text()
                   == (spawn_dir / f"model_{i}" / "particle_locations.txt").read_text()
                   for i in range(args.n))
    ratio = cli_series_s / batch_s
    rounds = -(-args.n // args.workers)
    ceiling = cli_series_s / (rounds * concurrent_s)
    result = {"n": args.n, "preset": args.preset, "workers": args.workers,
              "cores": cores, "cli_series_s": cli_series_s, "series_s": series_s,
              "batch_s": batch_s, "batch_spawn_s": spawn_s, "speedup": ratio,
              "speedup_spawn": cli_series_s / spawn_s, "speedup_vs_one_process": series_s / batch_s,
              "same_outputs": same, "target_speedup": 1.6,
              "task_alone_one_thread_s": alone_1_s, "task_alone_all_cores_s": alone_all_s,
              "task_concurrent_one_thread_s": concurrent_s, "ceiling_speedup": ceiling,
              "load_average_before": load_before, "load_average_after": load_after}
    print(f"{args.n} × {args.preset} simulations, {os.cpu_count()} cores")
    print(f"  CLI series ({args.n} × napari-shrec simulate)    {cli_series_s:7.1f} s")
    print(f"  one-process series (all cores)        {series_s:7.1f} s")
    print(f"  batch ({args.workers}-worker LocalCluster)           {batch_s:7.1f} s")
    print(f"  batch, workers spawned                {spawn_s:7.1f} s "
          f"({cli_series_s / spawn_s:.2f}× over the CLI series)")
    print(f"  speed-up {ratio:.2f}× over the CLI series (target ≥ 1.6×), "
          f"{series_s / batch_s:.2f}× over the one-process series; same outputs: {same}")
    print(f"  one simulation's compute: {alone_1_s:.1f} s alone on 1 thread, {alone_all_s:.1f} s "
          f"alone on {cores} threads ({alone_1_s / alone_all_s:.2f}×), {concurrent_s:.1f} s with "
          f"{args.workers} running at once on 1 thread each")
    print(f"  ceiling (no start-up, no imports): {ceiling:.2f}× over the CLI series; the batch "
          f"reaches {ratio / ceiling:.0%} of it")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          "(1 min)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

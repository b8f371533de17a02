"""Benchmark ``napari_shrec.core.score.score_submission`` at SHREC'20 scale.

Builds a synthetic 200 × 512 × 512 float32 occupancy mask (the released masks are float32) with
about 2600 touching-allowed blob particles, writes it to a temporary MRC file and reads it back
memory-mapped, as real use does; builds 2800 predictions (hits with jitter, duplicates, wrong
labels, background, a few outside the volume). Then, each in a fresh Python process so peak
memory is its own:

- ``fast``: ``score_submission`` on the memmap (7-voxel lookups, no dilation of the volume);
- ``reference``: what the organizers' scripts do — read the whole mask, ``grey_dilation`` with the
  6-connected cross, (shrec2020: pad to 512 slices), then a Python loop over the predictions.

Prints wall time (median of ``--runs`` warm runs; and one cold run after the mask file was
dropped from the page cache, with the bytes it read from disk; imports excluded), the
tracemalloc peak of one run (numpy buffers included) and the scoring process's peak RSS (Linux
VmHWM: imports and touched memory-mapped pages included), checks that both scorers give the same
numbers, and writes ``--json OUT``.

    python benchmarks/bench_score.py [--runs 7] [--mode native|shrec2020|both] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

SHAPE_ZYX = (200, 512, 512)
Z_OFFSET = 156


# --------------------------------------------------------------------------- synthetic data
def build_data(folder: Path, n_particles: int, n_predictions: int, seed: int,
               shape_zyx: tuple[int, int, int] = SHAPE_ZYX) -> dict:
    """Write mask.mrc and data.npz (GT names/centres, predictions) into ``folder``; the mask is
    ``shape_zyx`` (z, y, x) voxels, centres and predictions are x, y, z voxels."""
    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.io.mrc import write_mrc

    rng = np.random.default_rng(seed)
    classes = np.array(SHREC20_TABLE.names)
    mask = np.zeros(shape_zyx, dtype=np.float32)
    nz, ny, nx = shape_zyx
    centres: list[tuple[float, float, float]] = []
    names: list[str] = []
    tries = 0
    while len(centres) < n_particles and tries < 20 * n_particles:
        tries += 1
        r = int(rng.integers(2, 7))
        cz, cy, cx = (int(rng.integers(r, s - r)) for s in shape_zyx)
        sl = (slice(cz - r, cz + r + 1), slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
        dz, dy, dx = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
        ball = dz * dz + dy * dy + dx * dx <= r * r
        region = mask[sl]
        if np.any(region[ball] != 0):  # no overlap (touching allowed), like the simulator
            continue
        region[ball] = len(centres) + 1
        centres.append((cx, cy, cz))
        names.append(str(rng.choice(classes)))
    gt_xyz = np.asarray(centres, dtype=np.float64)
    gt_names = np.asarray(names)

    n = len(gt_xyz)
    n_bg = n_predictions // 14
    n_out = 10
    n_dup = n_predictions // 20
    n_hit = n_predictions - n_bg - n_out - n_dup
    hit_rows = rng.choice(n, size=min(n_hit, n), replace=False)
    dup_rows = rng.choice(hit_rows, size=n_dup, replace=True)
    rows = np.concatenate([hit_rows, dup_rows])
    xyz = gt_xyz[rows] + rng.normal(0.0, 1.0, size=(rows.size, 3))
    labels = gt_names[rows].copy()
    wrong = rng.random(rows.size) < 0.15
    labels[wrong] = rng.choice(classes, size=int(wrong.sum()))
    bg = rng.uniform(0, 1, size=(n_bg, 3)) * np.array([nx - 1, ny - 1, nz - 1])
    out = rng.uniform(-20, 0, size=(n_out, 3)) + np.array([0, ny / 2, nz / 2])
    pred_xyz = np.concatenate([xyz, bg, out])
    pred_names = np.concatenate([labels, rng.choice(classes, size=n_bg + n_out)])
    order = rng.permutation(len(pred_xyz))
    write_mrc(folder / "mask.mrc", mask, overwrite=True)
    np.savez(folder / "data.npz", gt_names=gt_names, gt_xyz=gt_xyz,
             pred_names=pred_names[order], pred_xyz=pred_xyz[order])
    return {"n_particles": int(n), "n_predictions": len(pred_xyz),
            "mask_shape_zyx": list(shape_zyx), "mask_dtype": "float32",
            "mask_file_mb": round((folder / "mask.mrc").stat().st_size / 2**20, 1)}


# --------------------------------------------------------------------------- the two scorers
def reference_score(mask_path: Path, gt_names, gt_xyz, pred_names, pred_xyz, mode: str) -> dict:
    """The organizers' algorithm, literally: read the whole mask, dilate it, then loop in Python
    (``bench_score_reference.reference_score``)."""
    import mrcfile

    if __package__:
        from .bench_score_reference import reference_score as reference
    else:  # run as a script from benchmarks/
        from bench_score_reference import reference_score as reference

    with mrcfile.open(mask_path, permissive=True) as f:
        mask = np.asarray(f.data)
    return reference(mask, gt_names, gt_xyz, pred_names, pred_xyz, mode=mode, z_offset=Z_OFFSET)


def fast_score(mask_path: Path, gt_names, gt_xyz, pred_names, pred_xyz, mode: str) -> dict:
    from napari_shrec.core.particles import ParticleList
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.io.mrc import read_mrc

    volume = read_mrc(mask_path)  # memory-mapped
    gt = ParticleList.from_arrays(list(gt_names), gt_xyz)
    preds = ParticleList.from_arrays(list(pred_names), pred_xyz)
    r = score_submission(gt, volume.data, preds, ScoreParams(mode=mode))
    confusion: dict[str, int] = {}
    for true in r.confusion.index:
        for pred in r.confusion.columns:
            count = int(r.confusion.loc[true, pred])
            if count:
                confusion[f"{true}->{pred}"] = count
    return {"RR": r.RR, "TP": r.TP, "FP": r.FP, "FN": r.FN, "MH": r.MH, "RO": r.RO,
            "AD": None if math.isnan(r.AD) else r.AD, "confusion": confusion}


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB, memory-mapped file pages included.

    Linux: ``VmHWM`` of /proc/self/status (``ru_maxrss`` would also count the parent's memory
    at the fork before ``exec``); elsewhere ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def evict_from_page_cache(path: Path) -> bool:
    """Drop the file's pages from the page cache (POSIX_FADV_DONTNEED), so the next read comes
    from disk: a cold start, without root. False where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def disk_read_bytes() -> int | None:
    """Bytes this process caused to be read from storage (Linux /proc/self/io), or None."""
    io = Path("/proc/self/io")
    if not io.is_file():
        return None
    for line in io.read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return None


def run_child(which: str, folder: Path, mode: str, runs: int) -> dict:
    """Time one scorer in this process (called in a fresh process by the parent)."""
    data = np.load(folder / "data.npz")
    pred_xyz = data["pred_xyz"]
    if mode == "shrec2020":  # submissions in the 512-slice reconstruction frame
        pred_xyz = pred_xyz + np.array([0.0, 0.0, Z_OFFSET])
    args = (folder / "mask.mrc", data["gt_names"], data["gt_xyz"], data["pred_names"], pred_xyz)
    scorer = fast_score if which == "fast" else reference_score
    # import everything first: the first timed run then measures page faults, not imports
    for module in ("mrcfile", "scipy.ndimage", "napari_shrec.core.score", "napari_shrec.io.mrc"):
        importlib.import_module(module)

    cold_read_mb = None
    if evict_from_page_cache(folder / "mask.mrc"):
        before = disk_read_bytes()
        t0 = time.perf_counter()
        scorer(*args, mode=mode)
        cold_s: float | None = time.perf_counter() - t0
        after = disk_read_bytes()
        if before is not None and after is not None:
            cold_read_mb = (after - before) / 2**20
    else:
        cold_s = None
    times = []
    result = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = scorer(*args, mode=mode)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    scorer(*args, mode=mode)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"scorer": which, "mode": mode, "runs": runs, "cold_s": cold_s,
            "cold_read_mb": cold_read_mb, "median_s": statistics.median(times),
            "min_s": min(times),
            "tracemalloc_peak_mb": traced_peak / 2**20, "max_rss_mb": peak_rss_mb(),
            "result": result}


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per scorer (median)")
    parser.add_argument("--reference-runs", type=int, default=2,
                        help="timed runs of the slow reference")
    parser.add_argument("--mode", choices=("native", "shrec2020", "both"), default="both")
    parser.add_argument("--n-particles", type=int, default=2600)
    parser.add_argument("--n-predictions", type=int, default=2800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers as JSON")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference scorer")
    parser.add_argument("--child", choices=("fast", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.data, args.mode, args.runs)))
        return 0

    modes = ("native", "shrec2020") if args.mode == "both" else (args.mode,)
    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        info = build_data(folder, args.n_particles, args.n_predictions, args.seed)
        info["build_s"] = round(time.perf_counter() - t0, 2)
        print(f"data: {info['n_particles']} particles in a {SHAPE_ZYX} float32 mask "
              f"({info['mask_file_mb']} MB MRC, memory-mapped), {info['n_predictions']} "
              f"predictions (built in {info['build_s']} s)")
        rows = []
        for mode in modes:
            for which in ("fast",) + (() if args.no_reference else ("reference",)):
                runs = args.runs if which == "fast" else args.reference_runs
                cmd = [sys.executable, __file__, "--child", which, "--data", str(folder),
                       "--mode", mode, "--runs", str(runs)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
                rows.append(json.loads(out.stdout))
    header = (f"{'mode':10s} {'scorer':10s} {'median s':>9s} {'cold s':>7s} "
              f"{'cold disk MB':>12s} {'tracemalloc MB':>15s} {'peak RSS MB':>12s}")
    print(header)
    print("-" * len(header))

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for row in rows:
        print(f"{row['mode']:10s} {row['scorer']:10s} {row['median_s']:9.4f} "
              f"{num(row['cold_s'], '7.3f'):>7s} {num(row['cold_read_mb'], '12.1f'):>12s} "
              f"{row['tracemalloc_peak_mb']:15.1f} {row['max_rss_mb']:12.1f}")
    agree = True
    for mode in modes:
        by = {r["scorer"]: r["result"] for r in rows if r["mode"] == mode}
        if "reference" in by:
            fast, ref = by["fast"], by["reference"]
            same = all(fast[k] == ref[k] for k in ("RR", "TP", "FP", "FN", "MH", "RO",
                                                    "confusion"))
            same = same and math.isclose(fast["AD"] or 0.0, ref["AD"] or 0.0, rel_tol=1e-9)
            agree = agree and same
            print(f"{mode}: fast and reference agree: {same} "
                  f"(TP {fast['TP']}, FP {fast['FP']}, FN {fast['FN']}, MH {fast['MH']}, "
                  f"RO {fast['RO']}, AD {fast['AD']:.4f})")
    if args.json is not None:
        payload = {"data": info, "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
                   "rows": [{k: v for k, v in r.items() if k != "result"} for r in rows],
                   "agree": agree}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

"""A straightforward reference implementation of the SHREC localization scoring, and its
comparison with ``napari_shrec.core.score`` on the same inputs.

Run:  python benchmarks/bench_score_reference.py [--shape 200 512 512] [--particles 2600]
                                                 [--predictions 2800] [--runs 3] [--json OUT]

The reference does literally what the organizers' scripts do: dilate the whole occupancy mask
once with the 6-connected cross (``scipy.ndimage.grey_dilation``), then loop over the picks in
Python — round the coordinate, clip it into the volume, read the particle id under it, append
the pick to that particle's hits — and count TP (particles with ≥ 1 hit), FP (picks on
background), FN, MH (particles with > 1 hit), RO (clipped picks), AD (mean distance to the first
hit) and the first-hit confusion. ``compare_scorers`` runs it and ``core.score.score_submission``
in one process on the same synthetic data (``bench_score.build_data``), asserts that every count
is identical and reports the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHREC2020_Z_OFFSET = 156
COUNT_KEYS = ("RR", "TP", "FP", "FN", "MH", "RO")


def reference_score(occupancy_mask: np.ndarray, gt_names, gt_xyz, pred_names, pred_xyz,
                    mode: str = "native", z_offset: int = SHREC2020_Z_OFFSET) -> dict:
    """The organizers' algorithm on arrays: dilate the whole mask, then a Python loop.

    Args:
        occupancy_mask: (z, y, x) particle ids (0 background; id k = GT row k − 1).
        gt_names, gt_xyz: ground-truth classes and (n, 3) centres (x, y, z voxels).
        pred_names, pred_xyz: the picks (x, y, z voxels).
        mode: "native" (same frame) or "shrec2020" (mask padded with ``z_offset`` empty slices
            above and below; GT z + offset; if any rounded pick z is outside the padded slab,
            every pick z + offset).

    Returns:
        {"RR", "TP", "FP", "FN", "MH", "RO", "AD", "confusion": {"true->first hit label": n}}.
    """
    from scipy import ndimage

    occupancy = ndimage.grey_dilation(np.asarray(occupancy_mask),
                                      footprint=ndimage.generate_binary_structure(3, 1))
    depth = occupancy.shape[0]
    gt = [("0", 0.0, 0.0, 0.0)]
    dz = z_offset if mode == "shrec2020" else 0
    for name, (x, y, z) in zip(gt_names, gt_xyz, strict=True):
        gt.append((str(name), float(x), float(y), float(z) + dz))
    if mode == "shrec2020":
        occupancy = np.pad(occupancy, ((z_offset, z_offset), (0, 0), (0, 0)))
    preds = [(str(n), round(float(x)), round(float(y)), round(float(z)))
             for n, (x, y, z) in zip(pred_names, pred_xyz, strict=True)]
    if mode == "shrec2020" and preds:
        zs = [p[3] for p in preds]
        if min(zs) < z_offset or max(zs) > z_offset + depth:
            preds = [(p[0], p[1], p[2], p[3] + z_offset) for p in preds]
    upper = np.array(occupancy.shape[::-1]) - 1
    found: list[list[tuple[str, float]]] = [[] for _ in gt]
    clipped = 0
    for name, *coords in preds:
        x, y, z = np.clip(coords, (0, 0, 0), upper)
        if [x, y, z] != coords:
            clipped += 1
        pid = int(occupancy[z, y, x])
        _, gx, gy, gz = gt[pid]
        found[pid].append((name, math.dist((x, y, z), (gx, gy, gz))))
    hits = [len(f) for f in found[1:]]
    tp = sum(h >= 1 for h in hits)
    confusion: dict[str, int] = {}
    for (true, *_), f in zip(gt[1:], found[1:], strict=True):
        key = f"{true}->{f[0][0] if f else 'missed'}"
        confusion[key] = confusion.get(key, 0) + 1
    return {"RR": len(preds), "TP": tp, "FP": len(found[0]), "FN": sum(h == 0 for h in hits),
            "MH": sum(h > 1 for h in hits), "RO": clipped,
            "AD": sum(f[0][1] for f in found[1:] if f) / tp if tp else None,
            "confusion": confusion}


def core_score(occupancy_mask: np.ndarray, gt_names, gt_xyz, pred_names, pred_xyz,
               mode: str = "native") -> dict:
    """``core.score.score_submission`` on the same inputs, in :func:`reference_score`'s form."""
    from napari_shrec.core.particles import ParticleList
    from napari_shrec.core.score import ScoreParams, score_submission

    gt = ParticleList.from_arrays(list(gt_names), np.asarray(gt_xyz, dtype=np.float64))
    preds = ParticleList.from_arrays(list(pred_names), np.asarray(pred_xyz, dtype=np.float64))
    r = score_submission(gt, occupancy_mask, preds, ScoreParams(mode=mode))
    confusion: dict[str, int] = {}
    for true in r.confusion.index:
        for pred in r.confusion.columns:
            count = int(r.confusion.loc[true, pred])
            if count:
                confusion[f"{true}->{pred}"] = count
    return {"RR": r.RR, "TP": r.TP, "FP": r.FP, "FN": r.FN, "MH": r.MH, "RO": r.RO,
            "AD": None if math.isnan(r.AD) else float(r.AD), "confusion": confusion}


def same_result(a: dict, b: dict) -> bool:
    """Identical counts and confusion, AD equal to 1e-9 (relative)."""
    if any(a[k] != b[k] for k in (*COUNT_KEYS, "confusion")):
        return False
    if a["AD"] is None or b["AD"] is None:
        return a["AD"] is b["AD"]
    return math.isclose(a["AD"], b["AD"], rel_tol=1e-9)


def compare_scorers(shape_zyx: tuple[int, int, int] = (200, 512, 512),
                    n_particles: int = 2600, n_predictions: int = 2800, runs: int = 3,
                    seed: int = 0) -> dict:
    """Both scorers on one synthetic case (native mode, the mask memory-mapped from an MRC
    file as real use does): median times, speed ratio and the counts.

    Raises:
        AssertionError: the two scorers disagree.
    """
    from napari_shrec.io.mrc import read_mrc

    from .bench_score import build_data

    with tempfile.TemporaryDirectory(prefix="bench_score_ref_") as tmp:
        folder = Path(tmp)
        info = build_data(folder, n_particles, n_predictions, seed, shape_zyx=shape_zyx)
        data = np.load(folder / "data.npz")
        args = (data["gt_names"], data["gt_xyz"], data["pred_names"], data["pred_xyz"])
        mask = read_mrc(folder / "mask.mrc").data
        core_score(mask, *args)  # imports and first page faults outside the timing
        times: dict[str, list[float]] = {"core": [], "reference": []}
        results: dict[str, dict] = {}
        for _ in range(runs):
            for name, scorer in (("core", core_score), ("reference", reference_score)):
                start = time.perf_counter()
                results[name] = scorer(mask, *args)
                times[name].append(time.perf_counter() - start)
        del mask
    agree = same_result(results["core"], results["reference"])
    if not agree:
        raise AssertionError(f"core and reference scorers disagree: "
                             f"{ {k: results['core'][k] for k in COUNT_KEYS} } vs "
                             f"{ {k: results['reference'][k] for k in COUNT_KEYS} }")
    core_s = statistics.median(times["core"])
    reference_s = statistics.median(times["reference"])
    return {"mask_shape_zyx": list(shape_zyx), "n_particles": info["n_particles"],
            "n_predictions": info["n_predictions"], "runs": runs,
            "core_s": core_s, "reference_s": reference_s, "speedup": reference_s / core_s,
            "agree": agree, "counts": {k: results["core"][k] for k in COUNT_KEYS},
            "AD": results["core"]["AD"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512),
                        metavar=("Z", "Y", "X"))
    parser.add_argument("--particles", type=int, default=2600)
    parser.add_argument("--predictions", type=int, default=2800)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    record = compare_scorers(tuple(args.shape), args.particles, args.predictions, args.runs)
    print(f"{record['n_predictions']} picks, {record['n_particles']} particles, mask "
          f"{tuple(record['mask_shape_zyx'])}: core {record['core_s']:.3f} s, reference "
          f"{record['reference_s']:.3f} s ({record['speedup']:.1f}× faster); identical counts "
          f"{record['counts']}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if not __package__:  # run as a script: make "benchmarks" importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from benchmarks.bench_score_reference import main as _main

        sys.exit(_main())
    sys.exit(main())

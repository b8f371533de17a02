"""Benchmark the two peak-extraction methods of detection (``core/peaks.py``) at SHREC'20 size.

Builds a real grandmodel (512 × 512 × 200 voxels at 1 nm, 2400–2800 particles of the 12 SHREC'20
classes, touching allowed; maps from the structure library as in ``bench_grandmodel.py``) and turns
its class mask into the kind of probability maps a trained U-Net gives, as 13 channels
(background + 12 classes) stored like ``detect`` stores them (uint16 fixed point):

- logits: ``A`` × (Gaussian-blurred one-hot class indicator, σ = ``--blur``) per channel;
- class confusion: every particle also feeds a neighbouring class (next lighter or heavier, at
  random) with a per-particle weight u ~ U(0, u_max) of its logit, u_max = 1.2 / 0.9 / 0.6 for
  small / medium / large classes, so some particles (u > 1) are labelled wrongly;
- spatially correlated noise on every class channel (white noise blurred with σ = 2 voxels,
  scaled to std ``--noise``), so particle interiors have several local maxima and the background
  a few false blobs;
- softmax over the 13 channels.

Then times :func:`napari_shrec.core.detect.particles_from_maps` (peaks per class + cross-class
de-duplication, the part of ``detect`` after inference) with each method and a few settings, and
scores each result with the project's scorer (``native`` mode): localization F1 (recall,
precision, duplicates) and mean class F1.

``--window`` also times the sliding-window machinery of ``detect`` on the same volume with a
predictor that costs nothing (it returns a fixed random softmax patch): patch reads + blending
+ peaks, i.e. the overhead a real network's inference time adds to.

    python benchmarks/bench_peaks.py [--size full|small] [--seed N] [--threads N] [--window]
                                     [--json OUT]
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

import numpy as np

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"
SIZES = {"full": {"shape_zyx": (200, 512, 512), "n_particles": (2400, 2800)},
         "small": {"shape_zyx": (64, 128, 128), "n_particles": (40, 40)}}
CONFUSION_MAX = {"small": 1.2, "medium": 0.9, "large": 0.6}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_grandmodel(size: str, seed: int, threads: int, structures: list[Path] | None):
    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.core.grandmodel import GrandmodelParams
    from napari_shrec.core.grandmodel import build_grandmodel as build
    from napari_shrec.core.structures import (
        StructureFallbackWarning,
        StructureLibrary,
        StructureParams,
    )

    folders = structures or [DEFAULT_STRUCTURES / "pdb", DEFAULT_STRUCTURES / "polnet_maps_10A"]
    sources = [f for f in folders if f.exists()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFallbackWarning)
        library = StructureLibrary(sources, download=False, surrogates=True)
        maps = library.build(SHREC20_TABLE.names, StructureParams(voxel_size_nm=1.0), warn=False)
    params = GrandmodelParams(**SIZES[size], seed=seed, threads=threads,
                              structural_noise_v=0.0)
    return build(maps, params)


def synthetic_maps(gm, *, seed: int, amplitude: float, blur: float, noise: float
                   ) -> tuple[np.ndarray, list[str]]:
    """(13, Z, Y, X) uint16 fixed-point probability maps from a grandmodel (module docstring)."""
    from scipy import ndimage

    from napari_shrec.core.classes import SHREC20_TABLE, SHREC21_TABLE

    rng = np.random.default_rng(seed)
    names = list(SHREC20_TABLE.names)
    by_weight = [c.name for c in SHREC20_TABLE.by_weight()]
    channel = {name: k + 1 for k, name in enumerate(names)}
    n = len(gm.particles)
    gt_names = gm.particles.class_names
    # per particle: confusable class and weight (row id = occupancy value)
    alt = np.zeros(n + 1, dtype=np.uint8)
    weight = np.zeros(n + 1, dtype=np.float32)
    for i, name in enumerate(gt_names):
        pos = by_weight.index(name)
        options = [p for p in (pos - 1, pos + 1) if 0 <= p < len(by_weight)]
        alt[i + 1] = channel[by_weight[int(rng.choice(options))]]
        group = SHREC20_TABLE.by_name(name).size_group
        weight[i + 1] = rng.uniform(0.0, CONFUSION_MAX[group])
    occupancy = gm.occupancy_mask
    alt_map = alt[occupancy]
    alt_weight = weight[occupancy]
    # class mask holds SHREC21_TABLE ids; map them to channels
    lut = np.zeros(256, dtype=np.uint8)
    for name in names:
        lut[SHREC21_TABLE.id_of(name)] = channel[name]
    class_ch = lut[gm.class_mask]
    shape = occupancy.shape
    logits = np.empty((len(names) + 1, *shape), dtype=np.float32)
    for c in range(len(names) + 1):
        indicator = (class_ch == c).astype(np.float32)
        if c:
            indicator += alt_weight * (alt_map == c)
        ndimage.gaussian_filter(indicator, blur, output=logits[c], truncate=3.0)
        logits[c] *= amplitude
        if c and noise > 0:
            field = rng.standard_normal(shape, dtype=np.float32)
            ndimage.gaussian_filter(field, 2.0, output=field, truncate=3.0)
            field *= noise / max(float(field.std()), 1e-12)
            logits[c] += field
            del field
    out = np.empty(logits.shape, dtype=np.uint16)
    for z in range(0, shape[0], 16):
        block = logits[:, z:z + 16]
        block -= block.max(axis=0, keepdims=True)
        np.exp(block, out=block)
        block /= block.sum(axis=0, keepdims=True)
        out[:, z:z + 16] = np.rint(block * 65535.0).astype(np.uint16)
    return out, names


def tune(maps, names, gm, params, threads: int) -> dict[str, float]:
    """Per-class thresholds tuned on a (validation) grandmodel's maps."""
    from napari_shrec.core.detect import particles_from_maps, tune_class_thresholds

    candidates, _ = particles_from_maps(maps, names, params.replace(threads=threads))
    return tune_class_thresholds(candidates, gm.particles, gm.occupancy_mask, names,
                                 floor=params.min_score)


def run_case(maps, names, gm, label: str, params, threads: int) -> dict:
    from napari_shrec.core.detect import particles_from_maps
    from napari_shrec.core.score import ScoreParams, score_submission

    params = params.replace(threads=threads)
    particles_from_maps(maps[:, :48], names, params)  # compile kernels outside the timing
    t0 = time.perf_counter()
    particles, timings = particles_from_maps(maps, names, params, voxel_size_nm=1.0)
    elapsed = time.perf_counter() - t0
    res = score_submission(gm.particles, gm.occupancy_mask, particles,
                           ScoreParams(mode="native"), submission_name=label)
    return {"case": label, "method": params.peak_method, "time_s": elapsed,
            "peaks_s": timings["peaks"], "dedup_s": timings["deduplication"],
            "n_before_dedup": particles.metadata["n_before_deduplication"],
            "RR": res.RR, "TP": res.TP, "FP": res.FP, "duplicates": res.n_duplicates,
            "recall": res.recall, "precision": res.precision, "loc_F1": res.F1,
            "mean_class_F1": res.mean_class_F1, "params": params.to_dict()}


def window_overhead(shape, names, threads: int, overlap: float, patch: int) -> dict:
    from napari_shrec.core.detect import DetectParams, detect

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((len(names) + 1, patch, patch, patch)).astype(np.float32)
    logits[0] += 4.0
    probs = np.exp(logits)
    probs /= probs.sum(axis=0, keepdims=True)

    class Fixed:
        patch_size = (patch, patch, patch)
        output_stride = 1

        def __call__(self, x):
            return probs

    volume = np.zeros(shape, dtype=np.float32)
    params = DetectParams(overlap=overlap, threads=threads)
    detect(volume[:patch, :patch, :patch], Fixed(), params, class_names=names)  # compile
    t0 = time.perf_counter()
    res = detect(volume, Fixed(), params, class_names=names)
    return {"overlap": overlap, "patch": patch, "n_patches": res.n_patches,
            "total_s": time.perf_counter() - t0, "timings_s": res.timings_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--structures", type=Path, action="append", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--amplitude", type=float, default=6.0, help="logit of a sure voxel")
    parser.add_argument("--blur", type=float, default=1.5, help="σ of the class blur (voxels)")
    parser.add_argument("--noise", type=float, default=1.0, help="std of the logit noise")
    parser.add_argument("--no-tune", dest="tune", action="store_false",
                        help="skip per-class threshold tuning on a validation grandmodel")
    parser.add_argument("--window", action="store_true",
                        help="also time detect's sliding window with a free predictor")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from napari_shrec.core.detect import DetectParams

    base = DetectParams()
    mp = base.replace(peak_method="maxpool")
    cc = base.replace(peak_method="components")
    tuned: dict[str, dict[str, float]] = {}
    if args.tune:
        t0 = time.perf_counter()
        gm_val = build_grandmodel(args.size, args.seed + 1000, args.threads, args.structures)
        maps_val, names = synthetic_maps(gm_val, seed=args.seed + 1001,
                                         amplitude=args.amplitude, blur=args.blur,
                                         noise=args.noise)
        for method, params in (("maxpool", mp), ("components", cc)):
            tuned[method] = tune(maps_val, names, gm_val, params, args.threads)
        del maps_val, gm_val
        print(f"per-class thresholds tuned on a validation grandmodel (seed {args.seed + 1000})"
              f" in {time.perf_counter() - t0:.1f} s:")
        for method, thr in tuned.items():
            print(f"  {method}: " + ", ".join(f"{k} {v:.2f}" for k, v in thr.items()))

    t0 = time.perf_counter()
    gm = build_grandmodel(args.size, args.seed, args.threads, args.structures)
    gm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps, names = synthetic_maps(gm, seed=args.seed + 1, amplitude=args.amplitude,
                                 blur=args.blur, noise=args.noise)
    maps_s = time.perf_counter() - t0
    print(f"grandmodel {gm.shape_zyx} (z, y, x): {len(gm.particles)} particles, "
          f"{gm_s:.1f} s; probability maps {maps.shape} {maps.dtype} "
          f"({maps.nbytes / 2**30:.2f} GiB), {maps_s:.1f} s")

    cases = [
        ("maxpool plain (no smoothing)", mp.replace(smooth_fraction=0.0)),
        ("maxpool smooth=0.25", mp.replace(smooth_fraction=0.25)),
        ("maxpool smooth=0.5", mp.replace(smooth_fraction=0.5)),
        ("maxpool (default)", mp),
        ("maxpool smooth=1.0", mp.replace(smooth_fraction=1.0)),
        ("maxpool r=0.6", mp.replace(radius_fraction=0.6)),
        ("maxpool r=1.0", mp.replace(radius_fraction=1.0)),
        ("maxpool r=2.0", mp.replace(radius_fraction=2.0)),
        ("maxpool dedup=0", mp.replace(cross_class_distance_fraction=0.0)),
        ("maxpool dedup=1.0", mp.replace(cross_class_distance_fraction=1.0)),
        ("maxpool dedup=3.0", mp.replace(cross_class_distance_fraction=3.0)),
        ("maxpool min size=0", mp.replace(min_size_fraction=0.0)),
        ("maxpool min size=0.1", mp.replace(min_size_fraction=0.1)),
        ("components (default)", cc),
        ("components min size=0", cc.replace(min_size_fraction=0.0)),
        ("components min size=0.1", cc.replace(min_size_fraction=0.1)),
        ("components min size=0.25", cc.replace(min_size_fraction=0.25)),
        ("components dedup=1.0", cc.replace(cross_class_distance_fraction=1.0)),
        ("components dedup=3.0", cc.replace(cross_class_distance_fraction=3.0)),
    ]
    for method, params in (("maxpool", mp), ("components", cc)):
        if method in tuned:
            cases.append((f"{method} tuned thresholds", params.replace(
                class_thresholds=tuned[method])))
    rows = [run_case(maps, names, gm, label, params, args.threads) for label, params in cases]
    header = (f"{'case':<30} {'time s':>7} {'RR':>5} {'TP':>5} {'FP':>4} {'dup':>4} "
              f"{'recall':>6} {'prec':>6} {'loc F1':>6} {'cls F1':>6}")
    print(f"\npeaks + de-duplication on {maps.shape[1:]} maps, N_gt = {len(gm.particles)}, "
          f"threads {args.threads or os.cpu_count()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:<30} {r['time_s']:7.2f} {r['RR']:5d} {r['TP']:5d} {r['FP']:4d} "
              f"{r['duplicates']:4d} {r['recall']:6.3f} {r['precision']:6.3f} "
              f"{r['loc_F1']:6.3f} {r['mean_class_F1']:6.3f}")
    window = []
    if args.window:
        del maps
        for overlap in (0.25, 0.5):
            w = window_overhead(gm.shape_zyx, names, args.threads, overlap, 64)
            window.append(w)
            t = w["timings_s"]
            print(f"\nsliding window, 64³ patches, overlap {overlap}: {w['n_patches']} patches, "
                  f"total {w['total_s']:.1f} s (blending {t['blending']:.1f} s, peaks "
                  f"{t['peaks']:.1f} s, predictor {t['inference']:.1f} s)")
    peak = _peak_rss_mib()
    print(f"\npeak RSS {peak:.0f} MiB (grandmodel + maps + extraction)")
    if args.json:
        result = {"machine": {"python": platform.python_version(),
                              "processor": platform.processor() or platform.machine(),
                              "cpu_count": os.cpu_count()},
                  "size": args.size, "shape_zyx": list(gm.shape_zyx), "seed": args.seed,
                  "n_particles": len(gm.particles), "grandmodel_s": gm_s, "maps_s": maps_s,
                  "synthetic": {"amplitude": args.amplitude, "blur": args.blur,
                                "noise": args.noise, "confusion_max": CONFUSION_MAX},
                  "tuned_thresholds": tuned, "cases": rows, "window": window,
                  "peak_rss_mib": peak}
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

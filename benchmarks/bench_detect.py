"""Whole-tomogram detection with a trained model: time, peak memory and the score.

    python benchmarks/bench_detect.py DATASET [--model MODEL.pt] [--device auto]
        [--peak-method maxpool --peak-method components] [--json OUT]

DATASET is a dataset folder (its reconstruction.mrc over the sample slab, scored against its
ground truth in ``native`` mode); the default model is the one shipped with napari-shrec. Each
peak method runs in a fresh process, so the peak RSS is that detection's own (memory-mapped
tomogram, model, accumulated maps, peaks). Targets (issue 8): a 512 × 512 × 200 tomogram in
≤ 5 min on a 2-core CPU and ≤ 8 GB.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np


def detect_dataset(dataset: str | Path, *, model_path: str | None = None, device: str = "auto",
                   peak_method: str = "maxpool",
                   crop_zyx: tuple[int, int, int] | None = None,
                   origin_zyx: tuple[int, int, int] = (0, 0, 0)) -> dict:
    """Detect with a model over a dataset's sample slab (or a crop of it) and score the picks
    (native mode) against the ground truth (of the crop); times, patches, picks, F1s.

    Args:
        dataset: a dataset folder with reconstruction.mrc and the ground truth.
        model_path: a checkpoint (default: the shipped model).
        device: "auto", "cpu", "cuda".
        peak_method: "maxpool" or "components".
        crop_zyx, origin_zyx: a (z, y, x) crop of the sample slab (voxels; default all).
    """
    import torch

    from napari_shrec.core.pretrained import detect_with_model, load_model
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.core.volume import Volume
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth

    start = time.perf_counter()
    ds = load_dataset(dataset)
    model = load_model(model_path, device=device)
    recon = ds.read_volume("reconstruction")
    z0 = int(ds.grandmodel_z_offset)
    nz = ds.headers["class_mask"]["shape_zyx"][0]
    if crop_zyx is None:
        volume, slab = recon, (z0, z0 + nz)
    else:
        cz, cy, cx = origin_zyx
        dz, dy, dx = crop_zyx
        data = np.ascontiguousarray(recon.data[z0 + cz:z0 + cz + dz, cy:cy + dy, cx:cx + dx])
        volume, slab = Volume(data, voxel_size_nm=recon.voxel_size_nm), (0, dz)
    t0 = time.perf_counter()
    result = detect_with_model(volume, model, slab_z=slab, peak_method=peak_method)
    detect_s = time.perf_counter() - t0
    particles = result.particles.copy()
    if crop_zyx is None:
        particles.table["z"] = particles.table["z"] - z0
        gt = scoring_ground_truth(ds)
        gt_particles, gt_mask, table = gt.particles, gt.occupancy_mask, gt.class_table
    else:
        if __package__:
            from .bench_tm import crop_ground_truth
        else:
            from bench_tm import crop_ground_truth
        gt_particles, gt_mask = crop_ground_truth(ds, origin_zyx, crop_zyx)
        table = None
    score = score_submission(gt_particles, gt_mask, particles, ScoreParams(mode="native"),
                             class_table=table)
    return {
        "peak_method": peak_method, "device": model.device,
        "torch_threads": torch.get_num_threads(),
        "tomogram_zyx": list(volume.shape), "slab_z": [int(slab[0]), int(slab[1])],
        "crop_zyx": None if crop_zyx is None else list(crop_zyx),
        "n_patches": result.n_patches, "patch_size": list(model.patch_size),
        "detect_s": detect_s, "total_s": time.perf_counter() - start,
        "voxels_per_s": float(np.prod([slab[1] - slab[0], *volume.shape[1:]])) / detect_s,
        "timings_s": {k: round(v, 2) for k, v in result.timings_s.items()},
        "n_predicted": len(particles), "loc_F1": score.F1,
        "mean_class_F1": score.mean_class_F1,
        "per_class_F1": {k: round(float(v), 3) for k, v in score.per_class_F1.items()},
    }


def _one(dataset: str, model_path: str | None, device: str, peak_method: str, queue) -> None:
    row = detect_dataset(dataset, model_path=model_path, device=device, peak_method=peak_method)
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    queue.put(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-method", action="append", default=None,
                        choices=("maxpool", "components"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    methods = args.peak_method or ["maxpool"]
    ctx = mp.get_context("spawn")
    rows = []
    for method in methods:
        queue = ctx.Queue()
        proc = ctx.Process(target=_one, args=(str(args.dataset), args.model, args.device,
                                              method, queue))
        proc.start()
        row = queue.get()
        proc.join()
        rows.append(row)
        print(f"{method:10s} {row['detect_s']:7.1f} s detection ({row['n_patches']} patches "
              f"of {row['patch_size']}), peak RSS {row['peak_rss_gb']:.2f} GB, "
              f"loc F1 {row['loc_F1']:.3f}, mean class F1 {row['mean_class_F1']:.3f}, "
              f"{row['n_predicted']} picks on {row['device']}", flush=True)
    record = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": mp.cpu_count(), "python": sys.version.split()[0]},
              "dataset": str(args.dataset), "model": args.model or "shipped", "results": rows}
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

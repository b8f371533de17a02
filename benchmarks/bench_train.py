"""Benchmark U-Net training (``napari_shrec.core.train.train``) and inference speed.

For each configuration, trains on a synthetic tomogram (balls of 4 classes on noise, 96 × 192 ×
192 voxels) for two epochs of ``--steps`` steps and reports the second epoch's patches per second
(the first includes start-up), the time per step, the model's parameter count and, with
``UNetPredictor``, inference patches per second (batch 1 and 4, no gradient). Everything runs
through the real training loop (sampling, augmentation, loss, AdamW, schedule, checkpoint
writing at the epoch's end).

    python benchmarks/bench_train.py [--steps 10] [--device auto] [--threads 0] [--quick]
                                     [--json OUT]

``--quick`` runs only the default configuration (TrainParams defaults: 64³ patches, batch 2,
default UNet3DConfig).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = [
    # name, model kwargs, patch, batch
    ("default (w16 d3, 64³ × 2)", {}, 64, 2),
    ("default, 48³ × 2", {}, 48, 2),
    ("default, 32³ × 4", {}, 32, 4),
    ("stride 2, 64³ × 2", {"output_stride": 2}, 64, 2),
    ("denoise head, 64³ × 2", {"denoise_head": True}, 64, 2),
    ("w8 d3, 64³ × 2", {"width": 8}, 64, 2),
]


def synthetic_data(denoise: bool):
    from napari_shrec.core.particles import ParticleList
    from napari_shrec.core.targets import sphere_targets
    from napari_shrec.core.train import TrainingData, TrainingVolume

    rng = np.random.default_rng(0)
    shape = (96, 192, 192)
    names = ["1bxn", "3cf3", "1qvr", "4cr2"]
    labels_list = [names[i % 4] for i in range(200)]
    coords = rng.uniform((4, 4, 4), (shape[2] - 4, shape[1] - 4, shape[0] - 4), size=(200, 3))
    particles = ParticleList.from_arrays(labels_list, coords)
    labels = sphere_targets(shape, particles, None, names)
    image = rng.normal(0, 1, shape).astype(np.float32) + (labels > 0)
    volume = TrainingVolume.from_arrays(image, particles, names, labels=labels,
                                        denoise_target=(labels > 0).astype(np.float32)
                                        if denoise else None)
    return TrainingData([volume], names)


def run(name, model_kwargs, patch, batch, steps, device, threads, folder):
    import torch

    from napari_shrec.core.nets.checkpoint import load_checkpoint
    from napari_shrec.core.nets.unet import UNet3D, UNet3DConfig, count_parameters
    from napari_shrec.core.train import TrainParams, train

    data = synthetic_data(model_kwargs.get("denoise_head", False))
    config = UNet3DConfig(n_classes=5, **model_kwargs)
    params = TrainParams(patch_size=(patch,) * 3, batch_size=batch, epochs=2,
                         steps_per_epoch=steps, device=device, threads=threads, seed=0)
    out = Path(folder) / f"bench_{patch}_{batch}_{abs(hash(name))}.pt"
    result = train(data, params, model_config=config, out=out, overwrite=True)
    epoch2 = result.history[-1]
    loaded = load_checkpoint(out, device=device)
    predictor = loaded.predictor(patch_size=(patch,) * 3)
    predictor.prepare(data.volumes[0].image)
    x = data.volumes[0].image[:patch, :patch, :patch]
    infer = {}
    for n in (1, 4):
        batch_x = np.stack([x] * n)
        predictor.predict_batch(batch_x)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            predictor.predict_batch(batch_x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        infer[n] = n * reps / (time.perf_counter() - t0)
    n_params = count_parameters(UNet3D(UNet3DConfig(**model_kwargs)))
    return {"config": name, "patch": patch, "batch": batch,
            "parameters_13_classes": n_params, "size_mb_float32": n_params * 4 / 1e6,
            "train_patches_per_s": epoch2["patches_per_s"],
            "train_s_per_step": epoch2["time_s"] / steps,
            "infer_patches_per_s_batch1": infer[1], "infer_patches_per_s_batch4": infer[4]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from napari_shrec.core.devices import resolve_torch_device

    device = resolve_torch_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, kwargs, patch, batch in (CONFIGS[:1] if args.quick else CONFIGS):
            row = run(name, kwargs, patch, batch, args.steps, device, args.threads, folder)
            rows.append(row)
            print(f"{name:28s} params {row['parameters_13_classes'] / 1e6:5.2f} M  "
                  f"train {row['train_patches_per_s']:6.2f} patches/s "
                  f"({row['train_s_per_step']:5.2f} s/step)  infer "
                  f"{row['infer_patches_per_s_batch1']:6.2f} / "
                  f"{row['infer_patches_per_s_batch4']:6.2f} patches/s (batch 1 / 4)",
                  flush=True)
    record = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "steps": args.steps,
              "results": rows}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

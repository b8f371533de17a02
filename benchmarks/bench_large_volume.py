"""Detection of a tomogram larger than the memory it may use: a 512 × 1024 × 1024 (z, y, x)
float32 OME-Zarr (2 GiB) read lazily, detected block by block; wall time and peak RSS vs the
volume's size.

    python benchmarks/bench_large_volume.py [--workdir /tmp/bench_large_volume]
        [--shape 512 1024 1024] [--slab 232 280] [--overlap 0.0] [--max-memory MB]
        [--device cpu] [--skip-stub] [--keep] [--json OUT]

Three steps, each in a fresh process so that each peak RSS (``ru_maxrss``) is its own:

1. **write**: a random-ish volume (Gaussian noise, generated chunk by chunk by dask) is written as
   an OME-Zarr (64³ zstd chunks, 3-level pyramid) with :func:`napari_shrec.io.zarr.write_ome_zarr`.
2. **model**: the shipped model (``core.pretrained.load_model(None)``) detects on the OME-Zarr,
   opened lazily (:func:`~napari_shrec.io.zarr.open_ome_zarr`), with ``max_memory_mb`` =
   ``--max-memory`` (default: detection's own default, which for a lazily read volume of 1 GiB
   or more is a quarter of its size, 512 MiB here; the model and torch's buffers come on top).
   On a CPU the network is the slow part (a 48³ patch takes ~0.1–0.3 s on 2 cores, and the whole
   volume is 5000–12000 patches), so by default it searches the slab ``--slab`` (48 z slices ×
   1024 × 1024, itself larger than the budget, so it runs in blocks) with no patch overlap; on a
   GPU pass ``--slab 0 512 --overlap 0.25`` for the whole volume.
3. **stub** (unless ``--skip-stub``): the same detection over the *whole* volume, every block, with
   a numpy stand-in for the network (13 output channels, the model's 48³ patch): everything
   detection holds for the whole volume — reading the chunks, the block maps, peak finding,
   de-duplication — without the network's time. Its peak RSS is the whole-volume figure.

Target (issue 12): peak RSS below the volume's own size (2 GiB).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VOXEL_NM = 1.0


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30  # KiB on Linux


def write_volume(path: Path, shape: tuple[int, int, int], seed: int = 0) -> dict:
    import dask.array as da

    from napari_shrec.io.zarr import read_ome_zarr_info, write_ome_zarr

    start = time.perf_counter()
    rng = da.random.default_rng(seed)
    data = rng.standard_normal(shape, chunks=(64, 256, 256), dtype=np.float32)
    write_ome_zarr(path, data, VOXEL_NM, chunks=64, overwrite=True)
    info = read_ome_zarr_info(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"step": "write", "wall_s": time.perf_counter() - start, "peak_rss_gib": _peak_rss_gib(),
            "levels": info.levels, "disk_gib": size / 2 ** 30}


class StubNetwork:
    """A numpy stand-in for the shipped network: 13 channels over the model's 48³ patch; class 1
    follows the (noise) input above 2σ, the others are constant."""

    patch_size = (48, 48, 48)
    output_stride = 1

    def __init__(self, n_classes: int) -> None:
        self.n_channels = n_classes + 1

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        out = np.full((self.n_channels, *patch.shape), 0.02, dtype=np.float32)
        out[1] = np.clip((patch - 2.0) * 0.5, 0.0, 0.6)
        out[0] = 1.0 - out[1:].sum(axis=0)
        return out


def detect_volume(path: Path, *, stub: bool, slab: tuple[int, int] | None, overlap: float,
                  max_memory_mb: float, device: str) -> dict:
    from napari_shrec.core.detect import detect
    from napari_shrec.core.pretrained import detect_with_model, load_model
    from napari_shrec.io.zarr import open_ome_zarr

    start = time.perf_counter()
    volume = open_ome_zarr(path)
    model = load_model(None, device=device)
    budget = {} if max_memory_mb is None else {"max_memory_mb": max_memory_mb}
    if stub:
        params = model.detect_params(overlap=overlap, **budget)
        result = detect(volume, StubNetwork(len(model.class_names)), params,
                        class_names=model.class_names, voxel_size_nm=VOXEL_NM, slab_z=slab)
    else:
        result = detect_with_model(volume, model, slab_z=slab, overlap=overlap, **budget)
    wall = time.perf_counter() - start
    searched = (result.slab_z[1] - result.slab_z[0]) * volume.shape[1] * volume.shape[2]
    return {"step": "stub" if stub else "model", "wall_s": wall, "peak_rss_gib": _peak_rss_gib(),
            "volume_gib": volume.data.nbytes / 2 ** 30, "slab_z": list(result.slab_z),
            "searched_gib": searched * 4 / 2 ** 30,
            "patches_run": result.n_patches, **result.metadata,
            "particles": len(result.particles), "device": str(model.device),
            "timings_s": {k: round(v, 1) for k, v in result.timings_s.items()}}


def _child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"step {argv[1]} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_large_volume"))
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 1024, 1024),
                        metavar=("Z", "Y", "X"))
    parser.add_argument("--slab", type=int, nargs=2, default=(232, 280), metavar=("Z0", "Z1"),
                        help="z range the model searches (default 48 slices; the stub always "
                        "searches the whole volume)")
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--max-memory", type=float, default=None, metavar="MB",
                        help="max_memory_mb (default: detection's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-stub", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the OME-Zarr afterwards")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=("write", "model", "stub"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    path = args.workdir / "large.ome.zarr"

    if args.child == "write":
        print(json.dumps(write_volume(path, tuple(args.shape))))
        return 0
    if args.child in ("model", "stub"):
        slab = None if args.child == "stub" else tuple(args.slab)
        print(json.dumps(detect_volume(path, stub=args.child == "stub", slab=slab,
                                       overlap=args.overlap, max_memory_mb=args.max_memory,
                                       device=args.device)))
        return 0

    common = ["--workdir", str(args.workdir), "--shape", *map(str, args.shape),
              "--slab", *map(str, args.slab), "--overlap", str(args.overlap),
              "--device", args.device]
    if args.max_memory is not None:
        common += ["--max-memory", str(args.max_memory)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [_child(["--child", "write", *common])]
    rows.append(_child(["--child", "model", *common]))
    if not args.skip_stub:
        rows.append(_child(["--child", "stub", *common]))
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)

    volume_gib = rows[1]["volume_gib"]
    print(f"volume (z, y, x) {tuple(args.shape)} float32 = {volume_gib:.2f} GiB "
          f"(OME-Zarr on disk {rows[0]['disk_gib']:.2f} GiB, {rows[0]['levels']} levels); "
          f"max_memory_mb {rows[1].get('memory_budget_mb', args.max_memory)}; "
          f"{platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}")
    print(f"{'step':6s} {'slab z':>11s} {'wall s':>8s} {'peak RSS GiB':>13s} {'< volume':>9s} "
          f"{'blocks':>7s} {'patches run/unique':>19s} {'particles':>9s}")
    for row in rows:
        slab = row.get("slab_z")
        runs = (f"{row['patches_run']}/{row['unique_patches']}" if "patches_run" in row
                else "-")
        print(f"{row['step']:6s} {str(tuple(slab)) if slab else '-':>11s} {row['wall_s']:8.1f} "
              f"{row['peak_rss_gib']:13.2f} {str(row['peak_rss_gib'] < volume_gib):>9s} "
              f"{row.get('n_blocks', '-')!s:>7s} {runs:>19s} {row.get('particles', '-')!s:>9s}")
    for row in rows[1:]:
        print(f"  {row['step']}: timings {row['timings_s']}, block (z, y, x) {row['block_shape']} "
              f"+ halo {row['halo']}, peak threads {row['peak_threads']}, {row['device']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"shape_zyx": list(args.shape),
                                         "max_memory_mb": args.max_memory, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

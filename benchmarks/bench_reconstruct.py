"""Our weighted back-projection against ASTRA-toolbox's CPU FBP, side by side in one process.

Run:  python benchmarks/bench_reconstruct.py [--dataset DIR] [--json OUT]
      (needs ``pip install astra-toolbox``, a benchmark-only dependency: ``napari-shrec[bench]``)

Both reconstruct the same 41 × 512 × 512 tilt series (a simulated ``shrec2020`` dataset; one is
simulated into a temporary folder when --dataset is not given) to a 512³ volume with the tilt
axis at z = 256, i.e. SHREC'20's frame with the 200-slice sample at z 156…355. Both get the same
input: each projection turned into contrast −(I − Ī)/Ī. ASTRA runs its 2D CPU ``FBP`` (ram-lak
filter, ``linear`` projector) slice by slice along the tilt axis, with angles −θ (ASTRA's
rotation sense is opposite to ours; checked: with +θ its correlation with the truth is ~0).

Accuracy is the Pearson correlation, over the sample slab, between each reconstruction and the
noise-free grandmodel, both low-passed with a Gaussian of σ = 2 voxels (the noisy projections at
SNR 0.004 hold nothing finer); it is reported for the noisy and the noise-free projections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"
THICKNESS = 512


def _astra_fbp(contrast: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    import astra

    n_tilts, ny, nx = contrast.shape
    volume_geometry = astra.create_vol_geom(THICKNESS, nx)  # rows z, columns x
    projection_geometry = astra.create_proj_geom("parallel", 1.0, nx,
                                                 -np.deg2rad(angles_deg))
    projector = astra.create_projector("linear", projection_geometry, volume_geometry)
    out = np.empty((THICKNESS, ny, nx), dtype=np.float32)
    try:
        for y in range(ny):
            sinogram = astra.data2d.create("-sino", projection_geometry,
                                           np.ascontiguousarray(contrast[:, y, :]))
            result = astra.data2d.create("-vol", volume_geometry, 0)
            config = astra.astra_dict("FBP")
            config.update(ProjectorId=projector, ProjectionDataId=sinogram,
                          ReconstructionDataId=result, FilterType="ram-lak")
            algorithm = astra.algorithm.create(config)
            astra.algorithm.run(algorithm)
            out[:, y, :] = astra.data2d.get(result)
            astra.algorithm.delete(algorithm)
            astra.data2d.delete([sinogram, result])
    finally:
        astra.projector.delete(projector)
    return out


def _correlation(volume: np.ndarray, truth_lowpassed: np.ndarray, z0: int) -> float:
    from scipy import ndimage

    slab = volume[z0:z0 + truth_lowpassed.shape[0]]
    smoothed = ndimage.gaussian_filter(slab, 2.0)
    return float(np.corrcoef(smoothed.ravel(), truth_lowpassed.ravel())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None,
                        help="a simulated shrec2020 dataset folder (default: simulate one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from scipy import ndimage

    from napari_shrec.core.reconstruct import ReconstructionParams, reconstruct
    from napari_shrec.io.dataset import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dataset
        if folder is None:
            from napari_shrec.core.simulate import run_simulation, simulation_params

            sources = [p for p in (DEFAULT_STRUCTURES / "pdb",
                                   DEFAULT_STRUCTURES / "polnet_maps_10A") if p.is_dir()]
            folder = Path(tmp) / "sim"
            print("simulating a shrec2020 dataset…", flush=True)
            run_simulation(simulation_params("shrec2020", seed=0, structure_sources=sources,
                                             download_structures=False), folder)
        dataset = load_dataset(folder)
        angles = np.asarray(dataset.tilt_angles_deg, dtype=np.float64)
        truth = np.asarray(dataset.read_volume("grandmodel_noisefree").data, dtype=np.float32)
        truth_lp = ndimage.gaussian_filter(truth, 2.0)
        z0 = THICKNESS // 2 - truth.shape[0] // 2
        record: dict = {"dataset": str(folder), "tilts": len(angles),
                        "machine": {"cpus": os.cpu_count(),
                                    "processor": platform.processor() or platform.machine(),
                                    "python": platform.python_version()}}
        for name in ("projections", "projections_noisefree"):
            projections = np.asarray(dataset.read_volume(name).data, dtype=np.float32)
            contrast = np.stack([-(p - p.mean()) / p.mean() for p in projections])
            params = ReconstructionParams(thickness=THICKNESS, weighting="ramp", device="cpu")
            reconstruct(projections[:, :8], angles, params)  # compile the kernel outside timing
            start = time.perf_counter()
            ours, info = reconstruct(projections, angles, params)
            ours_s = time.perf_counter() - start
            ours_r = _correlation(ours, truth_lp, z0)
            del ours
            start = time.perf_counter()
            theirs = _astra_fbp(contrast.astype(np.float32), angles)
            astra_s = time.perf_counter() - start
            astra_r = _correlation(theirs, truth_lp, z0)
            del theirs
            record[name] = {"ours_s": ours_s, "astra_s": astra_s,
                            "speedup": astra_s / ours_s, "ours_correlation": ours_r,
                            "astra_correlation": astra_r, "ours_device": info["device"]}
            print(f"{name}: ours {ours_s:.1f} s (r = {ours_r:.3f}), ASTRA CPU FBP "
                  f"{astra_s:.1f} s (r = {astra_r:.3f}); ours is {astra_s / ours_s:.1f}× faster",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

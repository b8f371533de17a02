"""Our weighted back-projection against ASTRA-toolbox's CPU FBP and scikit-image's ``iradon``,
side by side in one process, on the same projections.

Run:  python benchmarks/bench_reconstruct.py [--dataset DIR] [--rows Y0 Y1] [--iradon-slices 8]
                                             [--json OUT]
      (ASTRA needs ``pip install astra-toolbox``, a benchmark-only dependency:
      ``napari-shrec[bench]``; it is skipped when absent)

All reconstruct the same tilt series (a simulated dataset; a ``shrec2020`` one is simulated into
a temporary folder when --dataset is not given; ``--rows`` keeps detector rows Y0…Y1, i.e. those
y slices, the tilt axis being y) to a volume of thickness = the detector width (512 for
SHREC'20: its frame, the 200-slice sample at z 156…355). All get the same input: each projection
turned into contrast −(I − Ī)/Ī. ASTRA runs its 2D CPU ``FBP`` (ram-lak filter, ``linear``
projector) slice by slice along the tilt axis, with angles −θ (ASTRA's rotation sense is
opposite to ours; checked: with +θ its correlation with the truth is ~0). scikit-image's
``iradon`` (ramp filter, linear interpolation, angles −θ, checked the same way) is slow, so it
runs on ``--iradon-slices`` evenly spaced y slices only, and is compared per slice.

Accuracy is the Pearson correlation, over the sample slab, between each reconstruction and the
noise-free grandmodel, both low-passed with a Gaussian of σ = 2 voxels (noisy projections hold
little finer); it is reported for the noisy and the noise-free projections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"


def astra_fbp(contrast: np.ndarray, angles_deg: np.ndarray, thickness: int) -> np.ndarray:
    """ASTRA's 2D CPU FBP (ram-lak) of each y row of a (tilt, y, x) contrast stack →
    (thickness, y, x) float32."""
    import astra

    _n_tilts, ny, nx = contrast.shape
    volume_geometry = astra.create_vol_geom(thickness, nx)  # rows z, columns x
    projection_geometry = astra.create_proj_geom("parallel", 1.0, nx,
                                                 -np.deg2rad(angles_deg))
    projector = astra.create_projector("linear", projection_geometry, volume_geometry)
    out = np.empty((thickness, ny, nx), dtype=np.float32)
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


def iradon_slices(contrast: np.ndarray, angles_deg: np.ndarray, rows: np.ndarray
                  ) -> np.ndarray:
    """scikit-image ``iradon`` (ramp) of the given y rows → (nx, len(rows), nx) float32
    (a square slice per row: thickness = detector width)."""
    from skimage.transform import iradon

    nx = contrast.shape[2]
    out = np.empty((nx, len(rows), nx), dtype=np.float32)
    for k, y in enumerate(rows):
        out[:, k, :] = iradon(contrast[:, y, :].T.astype(np.float64), theta=-angles_deg,
                              output_size=nx, filter_name="ramp", interpolation="linear",
                              circle=True)
    return out


def _correlation(volume: np.ndarray, truth_lowpassed: np.ndarray, z0: int) -> float:
    from scipy import ndimage

    slab = volume[z0:z0 + truth_lowpassed.shape[0]]
    smoothed = ndimage.gaussian_filter(slab, 2.0)
    return float(np.corrcoef(smoothed.ravel(), truth_lowpassed.ravel())[0, 1])


def compare_reconstruction(dataset_dir: Path, *, rows: tuple[int, int] | None = None,
                           n_iradon_slices: int = 8,
                           inputs: tuple[str, ...] = ("projections", "projections_noisefree"),
                           astra: bool = True) -> dict:
    """Ours vs ASTRA CPU FBP (all rows) vs scikit-image iradon (a few rows) on one dataset.

    Args:
        dataset_dir: a simulated dataset (projections, tilt angles, noise-free grandmodel).
        rows: (y0, y1) detector rows to reconstruct (default all).
        n_iradon_slices: y slices for iradon (0: skip it).
        inputs: which tilt series to reconstruct ("projections", "projections_noisefree").
        astra: run ASTRA (skipped with a note when astra-toolbox is not installed).

    Returns:
        {"tilts", "shape_zyx", "thickness", <input>: {ours_s, astra_s, speedup, correlations,
        iradon_s_per_slice, ours_s_per_slice, iradon_speedup, …}}.
    """
    from scipy import ndimage

    from napari_shrec.core.reconstruct import ReconstructionParams, reconstruct
    from napari_shrec.io.dataset import load_dataset

    dataset = load_dataset(dataset_dir)
    angles = np.asarray(dataset.tilt_angles_deg, dtype=np.float64)
    truth = np.asarray(dataset.read_volume("grandmodel_noisefree").data, dtype=np.float32)
    y0, y1 = rows if rows is not None else (0, truth.shape[1])
    truth = truth[:, y0:y1]
    truth_lp = ndimage.gaussian_filter(truth, 2.0)
    astra_note = None
    if astra:
        try:
            import astra as _astra  # noqa: F401
        except ImportError:
            astra, astra_note = False, "astra-toolbox not installed"
    record: dict = {"dataset": str(dataset_dir), "tilts": len(angles), "rows": [y0, y1]}
    for name in inputs:
        projections = np.asarray(dataset.read_volume(name).data[:, y0:y1], dtype=np.float32)
        thickness = projections.shape[2]
        z0 = thickness // 2 - truth.shape[0] // 2
        contrast = np.stack([-(p - p.mean()) / p.mean() for p in projections]).astype(np.float32)
        params = ReconstructionParams(thickness=thickness, weighting="ramp", device="cpu")
        reconstruct(projections[:, :8], angles, params)  # compile the kernel outside timing
        start = time.perf_counter()
        ours, info = reconstruct(projections, angles, params)
        ours_s = time.perf_counter() - start
        row: dict = {"shape_zyx": list(ours.shape), "ours_s": ours_s,
                     "ours_correlation": _correlation(ours, truth_lp, z0),
                     "ours_device": info["device"]}
        if astra:
            start = time.perf_counter()
            theirs = astra_fbp(contrast, angles, thickness)
            row["astra_s"] = time.perf_counter() - start
            row["astra_correlation"] = _correlation(theirs, truth_lp, z0)
            row["astra_speedup"] = row["astra_s"] / ours_s
            del theirs
        else:
            row["astra_note"] = astra_note
        if n_iradon_slices > 0:
            picked = np.unique(np.linspace(0, projections.shape[1] - 1,
                                           min(n_iradon_slices, projections.shape[1])
                                           ).round().astype(int))
            iradon_slices(contrast, angles, picked[:1])  # first-call costs outside timing
            start = time.perf_counter()
            sk = iradon_slices(contrast, angles, picked)
            iradon_s = time.perf_counter() - start
            ours_per_slice = ours_s / projections.shape[1]
            row.update(iradon_slices=len(picked), iradon_s_per_slice=iradon_s / len(picked),
                       ours_s_per_slice=ours_per_slice,
                       iradon_speedup=iradon_s / len(picked) / ours_per_slice,
                       iradon_correlation=_correlation(sk, truth_lp[:, picked], z0),
                       ours_correlation_iradon_slices=_correlation(
                           np.ascontiguousarray(ours[:, picked]), truth_lp[:, picked], z0))
        del ours
        record[name] = row
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None,
                        help="a simulated shrec2020 dataset folder (default: simulate one)")
    parser.add_argument("--rows", type=int, nargs=2, default=None, metavar=("Y0", "Y1"))
    parser.add_argument("--iradon-slices", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

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
        record = compare_reconstruction(folder, rows=tuple(args.rows) if args.rows else None,
                                        n_iradon_slices=args.iradon_slices)
    record["machine"] = {"cpus": os.cpu_count(),
                         "processor": platform.processor() or platform.machine(),
                         "python": platform.python_version()}
    for name in ("projections", "projections_noisefree"):
        row = record[name]
        line = f"{name}: ours {row['ours_s']:.1f} s (r = {row['ours_correlation']:.3f})"
        if "astra_s" in row:
            line += (f", ASTRA CPU FBP {row['astra_s']:.1f} s (r = {row['astra_correlation']:.3f}"
                     f"): ours {row['astra_speedup']:.1f}× faster")
        if "iradon_s_per_slice" in row:
            line += (f"; iradon {row['iradon_s_per_slice']:.2f} s/slice vs ours "
                     f"{row['ours_s_per_slice']:.3f} s/slice ({row['iradon_speedup']:.0f}×)")
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

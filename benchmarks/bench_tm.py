"""Our template matcher against pyTME, side by side in one process, on the same inputs.

Run:  python benchmarks/bench_tm.py [--dataset DIR] [--class 4d8q] [--crop 200 256 256]
                                    [--step 30] [--threads 2] [--json OUT]
      (needs ``pip install pytme``, a benchmark-only dependency: ``napari-shrec[bench]``)

Both sides get exactly the same data:

- the tomogram: a (z, y, x) crop of the dataset's reconstruction (default: the test tomogram
  ``model_5``, 200 × 256 × 256 voxels at the origin), float32;
- the template: our prepared template (:func:`napari_shrec.core.tm.prepare_template`: the
  class's structure from the dataset's own structure record, CTF-filtered, boxed) and its mask
  (the sphere with a Gaussian edge);
- the missing wedge: our binary wedge filter on the template box's ``rfftn`` grid, applied after
  each rotation (pyTME: ``MatchingData.template_filter`` as an array);
- the rotations: our uniform ZXZ set at ``--step`` degrees, turned into the matrices pyTME
  rotates with (:func:`pytme_rotation_matrices`; checked by planting a rotated template);
- cubic B-spline rotation on both sides; no wrap-around on either side (pyTME:
  ``pad_target_edges=True``; ours pads internally);
- 2 threads each: ours runs ``scipy.fft`` with 2 workers; pyTME runs its numpy/pyFFTW backend
  with ``job_schedule=(1, 2)`` (two worker processes, one FFT thread each, pyTME's own way of
  using cores).

The score maps then go through OUR candidate picking and selection (``core/tm_select``:
max-pool NMS with the class radius, top N = the true number of that class's particles in the
crop, "thresholded") and OUR scorer (``core/score``, native mode) against the crop's ground
truth, so a difference in F1 comes only from the score maps. Times are wall-clock of the whole
call (template rotation set up, target FFTs, all rotations, results back), after one warm-up
call of each on the same shapes (numba compilation, FFTW planning).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATASET = Path("/work/data/set_cal/snr0.004/model_5")


# --------------------------------------------------------------------------- conventions
def affine_matrices_zyx(angles_zxz_deg: np.ndarray) -> np.ndarray:
    """(n, 3, 3) matrices M in array (z, y, x) order such that the template rotated actively by
    the ZXZ angles is ``T_R(o) = T(c + M (o − c))`` (``scipy.ndimage.affine_transform``): M is
    R⁻¹ = Rᵀ with both axes reversed (x, y, z → z, y, x)."""
    from napari_shrec.core.rotations import zxz_to_matrix

    rot = zxz_to_matrix(np.asarray(angles_zxz_deg, dtype=np.float64).reshape(-1, 3))
    return np.ascontiguousarray(np.transpose(rot, (0, 2, 1))[:, ::-1, ::-1])


def pytme_rotation_matrices(angles_zxz_deg: np.ndarray) -> np.ndarray:
    """The rotation matrices to hand pyTME so it searches our ZXZ rotations.

    pyTME (numpy backend) rotates its template with ``affine_transform(T, M, offset)`` about the
    box centre, M = the given matrix in array axis order, so the output voxel o reads the input
    at ``c + M (o − c)`` — the same form as ours: the matrices are :func:`affine_matrices_zyx`.
    pyTME correlates with the point-reflected template; a point reflection about the centre
    commutes with a rotation about it, so no further change is needed
    (``tests/test_benchmarks_runner.py`` plants a rotated template and checks that pyTME finds it
    with the right rotation).
    """
    return affine_matrices_zyx(angles_zxz_deg).astype(np.float32)


# --------------------------------------------------------------------------- the two matchers
def run_ours(volume: np.ndarray, template: np.ndarray, params: Any, angles: np.ndarray,
             voxel_size_nm: float) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """(scores, angle index, seconds, timings) of ``core.tm.match_template``."""
    from napari_shrec.core.tm import match_template

    start = time.perf_counter()
    result = match_template(volume, template, params, angles_zxz_deg=angles,
                            voxel_size_nm=voxel_size_nm)
    seconds = time.perf_counter() - start
    return result.scores, result.angle_index, seconds, dict(result.timings_s)


def run_pytme(volume: np.ndarray, prepared: Any, wedge_rfft: np.ndarray | None,
              angles: np.ndarray, jobs: int, *, pad_edges: bool = True,
              interpolation_order: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """pyTME's FLCSphericalMask over the same rotations: (scores, angle index into ``angles``
    (−1 where none), seconds).

    Args:
        volume: (z, y, x) float32 tomogram.
        prepared: our :class:`~napari_shrec.core.tm.PreparedTemplate` (data and mask).
        wedge_rfft: our wedge filter on the template box's rfftn grid, or None.
        angles: (n, 3) ZXZ degrees.
        jobs: pyTME worker processes (``job_schedule=(1, jobs)``); pyFFTW runs one thread each.
        pad_edges: ``pad_target_edges`` (no wrap-around, as ours).
    """
    from tme.analyzer import MaxScoreOverRotations
    from tme.matching_data import MatchingData
    from tme.matching_exhaustive import match_exhaustive
    from tme.matching_scores import MATCHING_EXHAUSTIVE_REGISTER

    matrices = pytme_rotation_matrices(angles)
    start = time.perf_counter()
    data = MatchingData(target=np.array(volume, dtype=np.float32, copy=True),
                        template=np.array(prepared.data, dtype=np.float32, copy=True),
                        template_mask=np.array(prepared.mask, dtype=np.float32, copy=True),
                        rotations=matrices)
    if wedge_rfft is not None:
        import warnings

        with warnings.catch_warnings():  # "custom filters are not sanitized": it is ours
            warnings.simplefilter("ignore")
            data.template_filter = np.asarray(wedge_rfft, dtype=np.float32)
    setup, scoring = MATCHING_EXHAUSTIVE_REGISTER["FLCSphericalMask"]
    scores, _offset, rotation_map, mapping, *_ = match_exhaustive(
        matching_data=data, matching_setup=setup, matching_score=scoring,
        callback_class=MaxScoreOverRotations, job_schedule=(1, int(jobs)),
        pad_target_edges=pad_edges, interpolation_order=interpolation_order)
    seconds = time.perf_counter() - start
    # pyTME's rotation indices → rows of ``angles`` (by matrix)
    lookup = np.full(max(mapping.keys(), default=-1) + 2, -1, dtype=np.int64)
    flat = matrices.reshape(len(matrices), -1).astype(np.float64)
    for key, matrix in mapping.items():
        diff = np.abs(flat - np.asarray(matrix, dtype=np.float64).reshape(1, -1)).max(axis=1)
        lookup[int(key)] = int(np.argmin(diff))
    index = np.asarray(rotation_map, dtype=np.int64)
    angle_index = np.where(index >= 0, lookup[np.clip(index, 0, lookup.size - 1)], -1)
    return np.asarray(scores, dtype=np.float32), angle_index.astype(np.int32), seconds


# --------------------------------------------------------------------------- ground truth
def crop_ground_truth(dataset: Any, origin_zyx: tuple[int, int, int],
                      shape_zyx: tuple[int, int, int]) -> tuple[Any, np.ndarray]:
    """(particles, occupancy mask) of a crop of a dataset's grandmodel frame, renumbered: the
    particles whose id appears in the cropped mask, coordinates shifted to the crop."""
    from napari_shrec.core.particles import ParticleList
    from napari_shrec.io.dataset import scoring_ground_truth

    gt = scoring_ground_truth(dataset)
    z0, y0, x0 = origin_zyx
    nz, ny, nx = shape_zyx
    mask = np.asarray(gt.occupancy_mask[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx]).astype(np.int64)
    ids = np.unique(mask[mask > 0])
    relabel = np.zeros(int(mask.max()) + 1, dtype=np.int32)
    relabel[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    table = gt.particles.table.iloc[ids - 1]
    xyz = table[["x", "y", "z"]].to_numpy(dtype=np.float64) - np.array([x0, y0, z0])
    particles = ParticleList.from_arrays(list(table["class_name"]), xyz)
    return particles, relabel[mask]


def picks_and_score(scores: np.ndarray, angle_index: np.ndarray, angles: np.ndarray,
                    class_name: str, expected: int, gt_particles: Any, gt_mask: np.ndarray,
                    voxel_size_nm: float) -> dict:
    """Our candidate picking + "thresholded" selection of ``expected`` picks, scored with
    ``core.score`` (native mode) against the crop's ground truth."""
    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.core.detect import class_radius_nm
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.core.tm_select import SelectParams, find_candidates, select_particles

    select = SelectParams(strategy="thresholded", expected=int(expected))
    radius = class_radius_nm(class_name, SHREC20_TABLE) / voxel_size_nm
    candidates = find_candidates(scores, class_name, radius, angle_index=angle_index,
                                 angles_zxz_deg=angles, params=select,
                                 weight_kda=SHREC20_TABLE.by_name(class_name).weight_kda)
    picks = select_particles([candidates], select, voxel_size_nm=voxel_size_nm)
    result = score_submission(gt_particles, gt_mask, picks, ScoreParams(mode="native"))
    return {"picks": len(picks), "TP": result.TP, "FP": result.FP,
            "class_F1": float(result.per_class_F1.get(class_name, float("nan"))),
            "class_localization_F1": float(result.per_class_localization_F1.get(
                class_name, float("nan")))}


# --------------------------------------------------------------------------- the benchmark
def compare_with_pytme(dataset_dir: Path = DEFAULT_DATASET, class_name: str = "4d8q",
                       crop_zyx: tuple[int, int, int] = (200, 256, 256),
                       origin_zyx: tuple[int, int, int] = (0, 0, 0),
                       angular_step_deg: float = 30.0, threads: int = 2,
                       max_angles: int | None = None) -> dict:
    """Run both matchers on the same crop, template, mask, wedge and rotations; return times,
    their ratio, both F1s and how alike the two score maps are.

    Args:
        dataset_dir: a simulated dataset folder (reconstruction, occupancy mask, particles).
        class_name: the class to match.
        crop_zyx, origin_zyx: the crop of the reconstruction's sample slab (voxels, z y x).
        angular_step_deg: step of our uniform rotation set.
        threads: threads of each side.
        max_angles: keep only the first N rotations (quick runs).
    """
    from napari_shrec.core.tm import MatchParams, prepare_template
    from napari_shrec.core.tm_angles import uniform_angles
    from napari_shrec.core.tm_classes import dataset_templates
    from napari_shrec.core.tm_templates import wedge_filter_rfft
    from napari_shrec.io.dataset import load_dataset

    try:
        import tme  # noqa: F401
    except ImportError:
        raise ValueError("the pyTME comparison needs pyTME: pip install 'napari-shrec[bench]'") \
            from None
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: no such dataset folder")
    ds = load_dataset(dataset_dir)
    recon = ds.read_volume("reconstruction")
    voxel = float(recon.isotropic_voxel_size_nm)
    zoff = int(ds.grandmodel_z_offset)
    z0, y0, x0 = origin_zyx
    nz, ny, nx = crop_zyx
    volume = np.ascontiguousarray(recon.data[zoff + z0:zoff + z0 + nz, y0:y0 + ny,
                                             x0:x0 + nx], dtype=np.float32)
    if volume.shape != tuple(crop_zyx):
        raise ValueError(f"crop {crop_zyx} at {origin_zyx} does not fit the sample slab of "
                         f"{dataset_dir}")
    gt_particles, gt_mask = crop_ground_truth(ds, origin_zyx, crop_zyx)
    expected = int(np.count_nonzero(gt_particles.class_names == class_name))

    tilts = ds.tilt_angles_deg
    sim = (ds.simulation or {}).get("params", {}).get("tiltseries", {}) or {}
    params = MatchParams(device="cpu", threads=threads,
                         tilt_range_deg=(float(min(tilts)), float(max(tilts))),
                         defocus_um=float(sim.get("defocus_um", 3.0)),
                         voltage_kv=float(sim.get("voltage_kv", 300.0)),
                         cs_mm=float(sim.get("cs_mm", 2.7)),
                         amplitude_contrast=float(sim.get("amplitude_contrast", 0.08)))
    template = dataset_templates([class_name], ds.simulation, voxel, download=False)[class_name]
    prepared = prepare_template(template.potential, params, voxel_size_nm=voxel)
    wedge = wedge_filter_rfft((prepared.edge,) * 3, params.tilt_range_deg)
    angles = uniform_angles(angular_step_deg)
    if max_angles is not None:
        angles = angles[:max_angles]

    # warm-up on the same shapes: numba compilation (ours), FFTW planning (pyTME)
    run_ours(volume, template.potential, params, angles[:2], voxel)
    run_pytme(volume, prepared, wedge, angles[:2 * threads], threads)

    ours_scores, ours_index, ours_s, ours_timings = run_ours(volume, template.potential,
                                                             params, angles, voxel)
    tme_scores, tme_index, tme_s = run_pytme(volume, prepared, wedge, angles, threads)

    h = prepared.edge // 2
    inner = (slice(h, nz - h), slice(h, ny - h), slice(h, nx - h))
    a, b = ours_scores[inner].ravel(), tme_scores[inner].ravel()
    agreement = {
        "score_correlation_interior": float(np.corrcoef(a, b)[0, 1]),
        "max_abs_score_difference_interior": float(np.abs(a - b).max()),
    }
    # best rotations where ours has its top peaks (ties between symmetric rotations elsewhere)
    peaks = np.argsort(ours_scores[inner], axis=None)[::-1][:200]
    agreement["same_best_rotation_top200_voxels"] = float(np.mean(
        ours_index[inner].ravel()[peaks] == tme_index[inner].ravel()[peaks]))
    ours_eval = picks_and_score(ours_scores, ours_index, angles, class_name, expected,
                                gt_particles, gt_mask, voxel)
    tme_eval = picks_and_score(tme_scores, tme_index, angles, class_name, expected,
                               gt_particles, gt_mask, voxel)
    from importlib.metadata import version

    return {
        "dataset": str(dataset_dir), "class": class_name, "crop_zyx": list(crop_zyx),
        "origin_zyx": list(origin_zyx), "n_angles": int(len(angles)),
        "angular_step_deg": float(angular_step_deg), "threads": int(threads),
        "template_edge": int(prepared.edge), "mask_radius_vox": float(prepared.mask_radius_vox),
        "class_particles_in_crop": expected, "pytme_version": version("pytme"),
        "pytme_setup": f"FLCSphericalMask, MaxScoreOverRotations, numpyfftw backend, "
                       f"job_schedule=(1, {threads}), pad_target_edges=True",
        "ours_s": ours_s, "pytme_s": tme_s, "speedup": tme_s / ours_s,
        "ours_per_rotation_ms": 1e3 * ours_timings["per_angle"],
        "ours": ours_eval, "pytme": tme_eval, "agreement": agreement,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--class", dest="class_name", default="4d8q")
    parser.add_argument("--crop", type=int, nargs=3, default=(200, 256, 256),
                        metavar=("Z", "Y", "X"))
    parser.add_argument("--origin", type=int, nargs=3, default=(0, 0, 0),
                        metavar=("Z", "Y", "X"))
    parser.add_argument("--step", type=float, default=30.0, help="angular step (degrees)")
    parser.add_argument("--max-angles", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    record = compare_with_pytme(args.dataset, args.class_name, tuple(args.crop),
                                tuple(args.origin), args.step, args.threads, args.max_angles)
    print(f"{record['class']} on {tuple(record['crop_zyx'])}, {record['n_angles']} rotations, "
          f"{record['threads']} threads: ours {record['ours_s']:.1f} s, pyTME "
          f"{record['pytme_s']:.1f} s ({record['speedup']:.2f}× faster); class F1 ours "
          f"{record['ours']['class_F1']:.3f}, pyTME {record['pytme']['class_F1']:.3f}; "
          f"score maps r = {record['agreement']['score_correlation_interior']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

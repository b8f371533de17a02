"""Detection (core/detect.py, core/peaks.py): sliding-window blending, peaks, de-duplication,
stride-2 predictors, slab restriction, threshold tuning, progress and cancellation.

An "oracle" predictor looks its answer up in precomputed full-volume maps: the tomogram given to
``detect`` holds each voxel's flat index, so every patch (reflected borders included) knows where
it is.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_shrec.core.classes import SHREC20_TABLE
from napari_shrec.core.detect import (
    DetectionResult,
    DetectParams,
    Predictor,
    apply_class_thresholds,
    class_radius_nm,
    detect,
    particles_from_maps,
    patch_positions,
    tune_class_thresholds,
    window_1d,
)
from napari_shrec.core.peaks import (
    ball_offsets,
    class_label_map,
    component_peaks,
    deduplicate_across_classes,
    extract_peaks,
    maxpool_peaks,
)
from napari_shrec.core.phantom import sphere_phantom
from napari_shrec.core.progress import Cancelled, CancelToken
from napari_shrec.core.score import ScoreParams, score_submission

NAMES = list(SHREC20_TABLE.names)  # channel k = class id k
SHAPE = (40, 72, 72)


# --------------------------------------------------------------------------- helpers
class Oracle:
    """Returns the stored maps at the voxels whose flat indices the patch holds."""

    def __init__(self, maps_zyx: np.ndarray, patch=(32, 32, 32), stride: int = 1):
        self.maps = maps_zyx.reshape(maps_zyx.shape[0], -1).astype(np.float32)
        self.patch_size = tuple(patch)
        self.output_stride = stride
        self.calls = 0

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        self.calls += 1
        assert patch.shape == self.patch_size and patch.dtype == np.float32
        idx = np.rint(patch).astype(np.int64)
        out = self.maps[:, idx]  # (C, Z, Y, X)
        s = self.output_stride
        if s > 1:
            c, z, y, x = out.shape
            out = out.reshape(c, z // s, s, y // s, s, x // s, s).mean(axis=(2, 4, 6))
        return out


def index_volume(shape) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def oracle_maps(class_mask: np.ndarray, n_classes: int = len(NAMES), sigma: float = 1.0
                ) -> np.ndarray:
    """Smoothed one-hot maps (C, Z, Y, X): blurred class indicators (they sum to 1)."""
    maps = np.empty((n_classes + 1, *class_mask.shape), dtype=np.float32)
    for c in range(n_classes + 1):
        maps[c] = ndimage.gaussian_filter((class_mask == c).astype(np.float32), sigma)
    return maps / maps.sum(axis=0, keepdims=True)


@pytest.fixture(scope="module")
def phantom():
    ph = sphere_phantom(SHAPE, 14, seed=3)
    assert len(ph.particles) == 14
    return ph


def score(ph, particles):
    return score_submission(ph.particles, ph.occupancy_mask, particles,
                            ScoreParams(mode="native"))


# --------------------------------------------------------------------------- blending
@pytest.mark.parametrize("blend", ["gaussian", "cosine"])
@pytest.mark.parametrize("shape", [(23, 37, 41), (10, 37, 20)])
def test_constant_predictor_gives_constant_maps(blend, shape):
    values = np.array([0.5, 0.3, 0.2], dtype=np.float32)

    class Constant:
        patch_size = (16, 16, 16)
        output_stride = 1

        def __call__(self, patch):
            return np.broadcast_to(values[:, None, None, None], (3, 16, 16, 16)).copy()

    params = DetectParams(overlap=0.5, blend=blend, keep_probability_maps=True,
                          map_dtype="float32", min_score=0.9)
    res = detect(np.zeros(shape, np.float32), Constant(), params, class_names=NAMES[:2])
    maps = res.probability_maps
    assert maps.shape == (3, *shape) and maps.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(maps[c], values[c], rtol=0, atol=1e-6)
    assert len(res.particles) == 0
    # 16-bit fixed point accumulation: constant to its resolution (+ float16 rounding)
    res16 = detect(np.zeros(shape, np.float32), Constant(), params.replace(map_dtype="float16"),
                   class_names=NAMES[:2])
    assert res16.probability_maps.dtype == np.float16
    for c in range(3):
        np.testing.assert_allclose(res16.probability_maps[c].astype(np.float64), values[c],
                                   atol=3e-4)


def test_identity_predictor_reproduces_the_volume():
    # channel 1 = the input voxel itself: blending, padding and cropping must put every value
    # back where it came from (odd sizes, one axis shorter than the patch)
    rng = np.random.default_rng(0)
    volume = rng.random((21, 35, 12)).astype(np.float32)

    class Identity:
        patch_size = (16, 16, 16)
        output_stride = 1

        def __call__(self, patch):
            return np.stack([1 - patch, patch])

    res = detect(volume, Identity(), DetectParams(overlap=0.4, keep_probability_maps=True,
                                                  map_dtype="float32", min_score=1.0),
                 class_names=NAMES[:1])
    np.testing.assert_allclose(res.probability_maps[1], volume, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_test_time_flips_average_flipped_outputs_back_in_place(stride):
    """A flip-equivariant (voxel-wise) predictor gives the same maps with any number of flips;
    one that adds a fixed x ramp gives, with the identity and the 180° rotation about y (x and z
    flipped), the mean of the ramp and its mirror: flat along x."""
    rng = np.random.default_rng(1)
    volume = rng.random((20, 24, 28)).astype(np.float32)
    ramp = np.linspace(0.0, 0.2, 16 // stride, dtype=np.float32)

    class Voxelwise:
        patch_size = (16, 16, 16)
        output_stride = stride

        def __init__(self, with_ramp):
            self.with_ramp = with_ramp
            self.calls = 0

        def __call__(self, patch):
            self.calls += 1
            p = patch.reshape(16 // stride, stride, 16 // stride, stride, 16 // stride,
                              stride).mean(axis=(1, 3, 5)) * 0.5
            if self.with_ramp:
                p = p + ramp
            return np.stack([1 - p, p])

    params = DetectParams(keep_probability_maps=True, map_dtype="float32", min_score=1.0,
                          batch_size=1)
    plain = Voxelwise(False)
    base = detect(volume, plain, params, class_names=NAMES[:1]).probability_maps
    for flips in (2, 8):
        voxelwise = Voxelwise(False)
        res = detect(volume, voxelwise, params.replace(test_time_flips=flips),
                     class_names=NAMES[:1])
        np.testing.assert_allclose(res.probability_maps, base, atol=1e-6)
        assert voxelwise.calls == flips * plain.calls
        assert res.particles.metadata["test_time_flips"] == flips
    ramped = detect(np.zeros_like(volume), Voxelwise(True), params.replace(test_time_flips=2),
                    class_names=NAMES[:1]).probability_maps[1]
    inner = ramped[2:-2, 2:-2, 2:-2]
    np.testing.assert_allclose(inner, 0.1, atol=2e-3)  # the ramp's mean, everywhere
    single = detect(np.zeros_like(volume), Voxelwise(True), params,
                    class_names=NAMES[:1]).probability_maps[1]
    assert np.ptp(single[10, 12, 2:-2]) > 0.05  # without flips the ramp shows


def test_windows_and_positions():
    for blend in ("gaussian", "cosine"):
        w = window_1d(32, blend)
        assert w.max() == pytest.approx(1.0) and w.min() > 0
        np.testing.assert_allclose(w, w[::-1])
    for length, patch, overlap, stride in [(100, 32, 0.25, 1), (102, 32, 0.5, 2), (32, 32, 0, 1),
                                           (200, 64, 0.25, 2), (48, 16, 0.0, 2)]:
        pos = patch_positions(length, patch, overlap, stride)
        assert pos[0] == 0 and pos[-1] == length - patch
        assert all(p % stride == 0 for p in pos)
        assert all(b - a <= patch for a, b in zip(pos, pos[1:]))  # no gap


# --------------------------------------------------------------------------- oracle detection
@pytest.mark.parametrize("method", ["maxpool", "components"])
def test_oracle_predictor_finds_every_particle(phantom, method):
    maps = oracle_maps(phantom.class_mask)
    oracle = Oracle(maps)
    assert isinstance(oracle, Predictor)
    res = detect(index_volume(SHAPE), oracle, DetectParams(peak_method=method),
                 class_names=NAMES)
    assert isinstance(res, DetectionResult)
    assert res.n_patches == oracle.calls > 1
    result = score(phantom, res.particles)
    assert result.F1 == 1.0 and result.mean_class_F1 == 1.0, (result.RR, result.TP)
    assert result.AD < 1.0  # found at the centre
    scores = res.particles.scores()
    assert np.all(np.diff(scores) <= 0) and scores.min() >= 0.5 and scores.max() <= 1.0
    assert res.particles.voxel_size_nm == 1.0
    assert set(res.timings_s) >= {"inference", "blending", "peaks", "deduplication", "total"}


def test_stride_two_predictor_positions_and_upsampled_maps(phantom):
    maps = oracle_maps(phantom.class_mask)
    res = detect(index_volume(SHAPE), Oracle(maps, stride=2),
                 DetectParams(keep_probability_maps=True), class_names=NAMES)
    result = score(phantom, res.particles)
    assert result.F1 == 1.0 and result.mean_class_F1 == 1.0
    found = res.particles.coords_xyz()
    truth = phantom.particles.coords_xyz()[result.hit_particle - 1]
    assert np.linalg.norm(found - truth, axis=1).max() <= 1.0
    assert res.output_stride == 2
    assert res.probability_maps.shape == maps.shape
    # upsampling half-voxel alignment: the maps agree with the full-resolution ones
    diff = np.abs(res.probability_maps.astype(np.float32) - maps)
    assert diff.mean() < 0.02


def test_stride_two_upsampling_is_aligned():
    # a linear ramp survives block-averaging + linear upsampling exactly (inside the volume)
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in (20, 30, 26)), indexing="ij")
    ramp = ((0.5 * zz + 0.3 * yy + 0.2 * xx) / 30.0).astype(np.float32)

    class Half:
        patch_size = (16, 16, 16)
        output_stride = 2

        def __call__(self, patch):
            p = patch.reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5))
            return np.stack([1 - p, p])

    res = detect(ramp, Half(), DetectParams(keep_probability_maps=True, map_dtype="float32",
                                            min_score=1.0), class_names=NAMES[:1])
    got = res.probability_maps[1]
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(got[inner], ramp[inner], atol=1e-5)


def test_stride_two_positions_are_clipped_into_the_volume():
    maps = np.zeros((2, 5, 5, 5), np.float32)
    maps[1, 4, 4, 4] = 0.9  # last map voxel: covers tomogram voxels 8 and 9 (9 is outside)
    maps[0] = 1 - maps[1]
    params = DetectParams(min_size_fraction=0.0, smooth_fraction=0.0)
    got, _ = particles_from_maps(maps, ["1bxn"], params, stride=2, shape_zyx=(9, 9, 9))
    np.testing.assert_allclose(got.coords_xyz(), [[8, 8, 8]])
    got, _ = particles_from_maps(maps, ["1bxn"], params, stride=2, z_offset=3)
    np.testing.assert_allclose(got.coords_xyz(), [[8.5, 8.5, 11.5]])


def test_slab_restriction(phantom):
    maps = oracle_maps(phantom.class_mask)
    z0, z1 = 12, 30
    res = detect(index_volume(SHAPE), Oracle(maps), DetectParams(keep_probability_maps=True),
                 class_names=NAMES, slab_z=(z0, z1))
    z = res.particles.coords_xyz()[:, 2]
    assert len(z) and z.min() >= z0 and z.max() <= z1 - 1
    pm = res.probability_maps
    assert np.all(pm[0, :z0] == 1) and np.all(pm[0, z1:] == 1)
    assert np.all(pm[1:, :z0] == 0) and np.all(pm[1:, z1:] == 0)
    # every particle lying entirely inside the slab is found
    result = score(phantom, res.particles)
    gt = phantom.particles
    radius = np.array([class_radius_nm(n) for n in gt.class_names])
    inside = (gt.coords_xyz()[:, 2] - radius >= z0) & (gt.coords_xyz()[:, 2] + radius < z1)
    assert inside.sum() >= 2
    hit = set(result.hit_particle[result.hit_particle > 0].tolist())
    assert set((np.flatnonzero(inside) + 1).tolist()) <= hit
    assert res.slab_z == (z0, z1)


def test_empty_slab_gives_no_detections(phantom):
    maps = oracle_maps(phantom.class_mask)
    res = detect(index_volume(SHAPE), Oracle(maps), DetectParams(), class_names=NAMES,
                 slab_z=(50, 60))
    assert len(res.particles) == 0 and res.n_patches == 0


def test_predict_batch_is_used_and_bad_output_is_reported(phantom):
    maps = oracle_maps(phantom.class_mask)

    class Batched(Oracle):
        batches = 0

        def predict_batch(self, patches):
            self.batches += 1
            assert patches.ndim == 4
            return np.stack([self(p) for p in patches])

    oracle = Batched(maps)
    res = detect(index_volume(SHAPE), oracle, DetectParams(batch_size=4), class_names=NAMES)
    assert oracle.batches == int(np.ceil(res.n_patches / 4))
    assert score(phantom, res.particles).F1 == 1.0
    with pytest.raises(ValueError, match="predictor returned shape"):
        detect(index_volume(SHAPE), Oracle(maps), DetectParams(), class_names=NAMES[:5])


# --------------------------------------------------------------------------- peaks
def test_maxpool_equals_maximum_filter_with_a_ball():
    rng = np.random.default_rng(5)
    prob = ndimage.gaussian_filter(rng.random((20, 24, 28)), 1.2).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    radius, thr = 2.5, 0.4
    offsets = ball_offsets(radius)
    footprint = np.zeros((7, 7, 7), bool)
    footprint[tuple((offsets + 3).T)] = True
    footprint[3, 3, 3] = True
    want = (ndimage.maximum_filter(prob, footprint=footprint, mode="constant", cval=-1) == prob)
    want &= prob >= thr
    coords, scores = maxpool_peaks(prob, radius, thr)
    got = np.zeros(prob.shape, bool)
    got[tuple(np.rint(coords).astype(int).T)] = True
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, prob[tuple(np.rint(coords).astype(int).T)])
    # every encoding gives the same peaks
    for encoded in (prob.astype(np.float16), np.rint(prob * 65535).astype(np.uint16)):
        c2, _ = maxpool_peaks(encoded, radius, thr)
        assert abs(len(c2) - len(coords)) <= 1


def test_plateau_gives_one_peak_at_its_centre():
    prob = np.zeros((21, 21, 21), np.float32)
    zz, yy, xx = np.meshgrid(*(np.arange(21),) * 3, indexing="ij")
    prob[(zz - 10) ** 2 + (yy - 9) ** 2 + (xx - 11) ** 2 <= 16] = 1.0  # r 4 > NMS radius 2
    coords, scores = maxpool_peaks(prob, 2.0, 0.5)
    assert len(coords) == 1
    np.testing.assert_allclose(coords[0], [10, 9, 11])
    assert scores[0] == 1.0
    coords, _ = maxpool_peaks(prob, 2.0, 0.5, smooth_sigma=1.5)
    np.testing.assert_allclose(coords[0], [10, 9, 11])


def test_maxpool_minimum_support_drops_specks():
    prob = np.zeros((20, 20, 20), np.float32)
    zz, yy, xx = np.meshgrid(*(np.arange(20),) * 3, indexing="ij")
    prob[:] = 0.9 * np.exp(-((zz - 6) ** 2 + (yy - 6) ** 2 + (xx - 6) ** 2) / 8.0)
    prob[15, 15, 15] = 0.95  # a one-voxel speck
    coords, scores = maxpool_peaks(prob, 3.0, 0.5)
    assert len(coords) == 2
    coords, scores = maxpool_peaks(prob, 3.0, 0.5, min_support=5)
    np.testing.assert_allclose(coords, [[6, 6, 6]])
    assert scores[0] == pytest.approx(0.9)


def test_components_centroid_score_and_min_size():
    prob = np.zeros((12, 12, 30), np.float32)
    prob[2:6, 2:6, 2:6] = 0.8
    prob[3, 3, 3] = 0.95
    prob[8, 8, 20] = 0.7  # one-voxel speck
    region = prob >= 0.5
    coords, scores = component_peaks(prob, region, min_voxels=1)
    assert len(coords) == 2
    coords, scores = component_peaks(prob, region, min_voxels=2)
    assert len(coords) == 1 and scores[0] == pytest.approx(0.95)
    assert np.all(np.abs(coords[0] - 3.5) < 0.05)
    maps = np.stack([1 - prob, prob])
    labels = class_label_map(maps, [0.5])
    np.testing.assert_array_equal(labels == 1, region)


def test_cross_class_deduplication_keeps_the_higher_score():
    coords = np.array([[10, 10, 10], [10, 10, 11.5], [10, 10, 12], [30, 30, 30]], float)
    scores = np.array([0.6, 0.9, 0.7, 0.5])
    cls = np.array([0, 1, 0, 1])
    radii = np.array([4.0, 5.0])
    keep = deduplicate_across_classes(coords, scores, cls, radii, 1.0)
    # 1 (0.9) beats both class-0 neighbours; 0 and 2 (same class) never suppress each other
    np.testing.assert_array_equal(keep, [False, True, False, True])
    keep = deduplicate_across_classes(coords, scores, cls, radii, 0.0)
    assert keep.all()
    keep = deduplicate_across_classes(coords, scores, cls, radii, 0.3)  # 1.2 voxels
    np.testing.assert_array_equal(keep, [True, True, False, True])

    # through the maps: two classes share one blob; the stronger one is reported
    maps = np.zeros((3, 20, 20, 20), np.float32)
    zz, yy, xx = np.meshgrid(*(np.arange(20),) * 3, indexing="ij")
    blob = np.exp(-((zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2) / 8.0)
    maps[1] = 0.45 * blob
    maps[2] = 0.40 * np.roll(blob, 1, axis=2)
    maps[0] = 1 - maps[1] - maps[2]
    names = ["3cf3", "1bxn"]
    for method in ("maxpool", "components"):
        params = DetectParams(peak_method=method, min_score=0.3, min_size_fraction=0.0)
        both, _ = particles_from_maps(maps, names, params.replace(
            cross_class_distance_fraction=0.0))
        one, _ = particles_from_maps(maps, names, params)
        if method == "maxpool":
            assert sorted(both.class_names) == sorted(names)
        assert list(one.class_names) == ["3cf3"]
        assert one.scores()[0] == pytest.approx(0.45, abs=1e-3)


def test_extract_peaks_per_class_thresholds():
    maps = np.zeros((3, 16, 16, 16), np.float32)
    maps[1, 4, 4, 4] = 0.7
    maps[2, 10, 10, 10] = 0.6
    maps[0] = 1 - maps[1] - maps[2]
    peaks = extract_peaks(maps, thresholds=[0.5, 0.65], radii=2.0)
    assert peaks.class_index.tolist() == [1]
    peaks = extract_peaks(maps, method="components", thresholds=0.5)
    assert sorted(peaks.class_index.tolist()) == [1, 2]


# --------------------------------------------------------------------------- tuning
def noisy_case(seed: int):
    """A phantom whose 4cr2 channel also has false particle-sized blobs of probability 0.65 on
    background, while every true particle reaches ~0.9."""
    ph = sphere_phantom(SHAPE, 14, seed=seed)
    maps = oracle_maps(ph.class_mask)
    maps[1:] *= 0.9
    maps[0] = 1 - maps[1:].sum(axis=0)
    rng = np.random.default_rng(seed)
    free = ndimage.distance_transform_edt(ph.class_mask == 0)
    channel = NAMES.index("4cr2") + 1
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    placed = 0
    for _ in range(500):
        z, y, x = (int(rng.integers(6, n - 6)) for n in SHAPE)
        if free[z, y, x] < 8:
            continue
        d2 = (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2
        blob = 0.65 * np.exp(-np.maximum(d2 - 36.0, 0.0) / 4.0)  # flat core of radius 6
        maps[channel] = np.maximum(maps[channel], blob)
        free[max(0, z - 12):z + 12, max(0, y - 12):y + 12, max(0, x - 12):x + 12] = 0
        placed += 1
        if placed == 6:
            break
    maps[0] = np.clip(1 - maps[1:].sum(axis=0), 0, 1)
    return ph, maps


def test_threshold_tuning_raises_f1():
    val, val_maps = noisy_case(11)
    test, test_maps = noisy_case(12)
    params = DetectParams()
    candidates = detect(index_volume(SHAPE), Oracle(val_maps), params, class_names=NAMES)
    thresholds = tune_class_thresholds(candidates, val.particles, val.occupancy_mask, NAMES)
    assert set(thresholds) == set(NAMES)
    assert thresholds["4cr2"] > 0.65
    # the tuned optimum is what the scorer says about the filtered candidates
    filtered = apply_class_thresholds(candidates.particles, thresholds)
    res = score_submission(val.particles, val.occupancy_mask, filtered,
                           ScoreParams(mode="native"))
    assert res.per_class_localization_F1["4cr2"] == 1.0
    # and it generalises to another tomogram
    before = score(test, detect(index_volume(SHAPE), Oracle(test_maps), params,
                                class_names=NAMES).particles)
    after = score(test, detect(index_volume(SHAPE), Oracle(test_maps),
                               params.replace(class_thresholds=thresholds),
                               class_names=NAMES).particles)
    assert before.FP > 0 and after.FP == 0
    assert after.F1 > before.F1 and after.F1 == 1.0


def test_tuning_without_ground_truth_switches_a_class_off():
    from napari_shrec.core.particles import ParticleList

    gt = ParticleList.from_arrays(["1bxn"], [[5, 5, 5]])
    mask = np.zeros((10, 10, 10), np.int32)
    mask[4:7, 4:7, 4:7] = 1
    cands = ParticleList.from_arrays(["1bxn", "3cf3", "1bxn"], [[5, 5, 5], [2, 2, 2], [8, 8, 8]],
                                     scores=[0.9, 0.8, 0.4])
    thr = tune_class_thresholds(cands, gt, mask)
    assert thr["3cf3"] > 0.8 and 0.4 < thr["1bxn"] < 0.9


# --------------------------------------------------------------------------- progress, cancel
def test_progress_is_reported_and_cancel_raises(phantom):
    maps = oracle_maps(phantom.class_mask)
    seen: list[tuple[int, int]] = []
    detect(index_volume(SHAPE), Oracle(maps), DetectParams(), class_names=NAMES,
           progress=lambda done, total, msg: seen.append((done, total)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] and len(seen) > 5

    token = CancelToken()

    def cancel_after_two(done, total, msg):
        if done >= 2:
            token.cancel()

    oracle = Oracle(maps)
    with pytest.raises(Cancelled):
        detect(index_volume(SHAPE), oracle, DetectParams(), class_names=NAMES,
               progress=cancel_after_two, cancel=token)
    assert oracle.calls <= 3


def test_params_validation_and_hash():
    p = DetectParams(class_thresholds={"4CR2": 0.7})
    assert p.threshold_of("4cr2") == 0.7 and p.threshold_of("1bxn") == p.min_score
    assert hash(p) == hash(DetectParams(class_thresholds={"4cr2": 0.7}))
    assert p.replace(overlap=0.5).overlap == 0.5
    assert p.to_dict()["class_thresholds"] == {"4cr2": 0.7}
    for bad in ({"overlap": 0.95}, {"blend": "box"}, {"peak_method": "meanshift"},
                {"min_score": 1.5}, {"batch_size": 0}, {"map_dtype": "int8"},
                {"class_thresholds": {"1bxn": -1}}, {"radius_fraction": 0},
                {"test_time_flips": 0}, {"test_time_flips": 9}, {"test_time_flips": 1.5}):
        with pytest.raises(ValueError):
            DetectParams(**bad)
    assert class_radius_nm("4cr2") == pytest.approx(SHREC20_TABLE.by_name("4cr2")
                                                    .equivalent_radius_nm)
    assert class_radius_nm("not-a-class", fallback_nm=7.0) == 7.0

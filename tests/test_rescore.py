"""Candidate rescoring (core/rescore.py): neighbourhood features, the logistic rescorer, its
use inside detection and its round trip through a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from napari_shrec.core.classes import SHREC20_TABLE
from napari_shrec.core.detect import DetectParams, detect, particles_from_maps
from napari_shrec.core.nets.normalize import NormalizationStats, normalization_stats
from napari_shrec.core.phantom import sphere_phantom
from napari_shrec.core.peaks import ball_offsets
from napari_shrec.core.rescore import (
    BACKGROUND,
    DENSITY_NORMALIZATION,
    CandidateRescorer,
    candidate_labels,
    density_features,
    fit_rescorer,
    neighbourhood_features,
    tune_rescorer,
)

NAMES = list(SHREC20_TABLE.names)
SHAPE = (40, 72, 72)


def _oracle_maps(class_mask: np.ndarray, n_classes: int = len(NAMES)) -> np.ndarray:
    from scipy import ndimage

    maps = np.empty((n_classes + 1, *class_mask.shape), dtype=np.float32)
    for c in range(n_classes + 1):
        maps[c] = ndimage.gaussian_filter((class_mask == c).astype(np.float32), 1.0)
    return maps / maps.sum(axis=0, keepdims=True)


class _Oracle:
    """Looks the maps up at the flat voxel indices the patch holds (see test_detect.py)."""

    patch_size = (32, 32, 32)
    output_stride = 1

    def __init__(self, maps: np.ndarray) -> None:
        self.maps = maps.reshape(maps.shape[0], -1)

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        return self.maps[:, np.rint(patch).astype(np.int64)]


def _identity_rescorer(permutation=None, radii=(1.0,), weight: float = 20.0,
                       image_radii=()) -> CandidateRescorer:
    """A rescorer whose class k logit is ``weight`` × log mean of channel permutation[k]
    (image features, when asked for, get weight 0)."""
    rows = len(NAMES) + 1
    perm = np.arange(rows) if permutation is None else np.asarray(permutation)
    n_image = 2 * len(image_radii) - 1 if image_radii else 0
    coef = np.zeros((rows, rows * len(radii) + n_image))
    for k in range(rows):
        coef[k, perm[k]] = weight
    return CandidateRescorer(class_names=tuple(NAMES), radii_vox=tuple(radii), coef=coef,
                             intercept=np.zeros(rows), image_radii_vox=tuple(image_radii))


# --------------------------------------------------------------------------- features
def test_neighbourhood_features_are_log_ball_means():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.01, 1.0, size=(3, 12, 13, 14)).astype(np.float32)
    points = np.array([[6, 6, 7], [0, 0, 0], [11, 12, 13]], dtype=np.float64)
    feats = neighbourhood_features(maps, points + 0.2, [0.0, 2.0])  # rounded to the voxel
    assert feats.shape == (3, 6) and feats.dtype == np.float32
    # radius 0: the voxel itself
    for i, (z, y, x) in enumerate(points.astype(int)):
        np.testing.assert_allclose(feats[i, :3], np.log(maps[:, z, y, x]), rtol=1e-6)
    # radius 2, inside: the mean over the ball
    off = ball_offsets(2.0) + np.array([6, 6, 7])
    want = np.log(maps[:, off[:, 0], off[:, 1], off[:, 2]].mean(axis=1))
    np.testing.assert_allclose(feats[0, 3:], want, rtol=1e-5)
    # at a corner the ball is clamped onto the border
    off = np.clip(ball_offsets(2.0), 0, None)
    want = np.log(maps[:, off[:, 0], off[:, 1], off[:, 2]].mean(axis=1))
    np.testing.assert_allclose(feats[1, 3:], want, rtol=1e-5)
    # 16-bit fixed point maps give the same features; zeros are floored at log(1e-4)
    fixed = np.rint(maps * 65535).astype(np.uint16)
    np.testing.assert_allclose(neighbourhood_features(fixed, points, [0.0, 2.0]),
                               neighbourhood_features(maps, points, [0.0, 2.0]), atol=1e-3)
    zero = neighbourhood_features(np.zeros((2, 4, 4, 4), np.float32), [[1, 1, 1]], [1.0])
    np.testing.assert_allclose(zero, np.log(1e-4))
    with pytest.raises(ValueError, match=r"\(C, Z, Y, X\)"):
        neighbourhood_features(maps[0], points, [1.0])


def test_density_features_are_normalised_ball_means_and_their_differences():
    rng = np.random.default_rng(4)
    volume = rng.normal(3.0, 2.0, size=(12, 13, 14)).astype(np.float32)
    stats = NormalizationStats(centre=0.5, scale=2.0)
    points = np.array([[6, 6, 7], [0, 0, 0]], dtype=np.float64)
    feats = density_features(volume, points + 0.3, [0.0, 2.0, 3.0], stats)
    assert feats.shape == (2, 5) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[0, 0], (volume[6, 6, 7] - 0.5) / 2.0, rtol=1e-6)
    for j, radius in ((1, 2.0), (2, 3.0)):
        off = ball_offsets(radius) + np.array([6, 6, 7])
        want = (volume[off[:, 0], off[:, 1], off[:, 2]].mean() - 0.5) / 2.0
        np.testing.assert_allclose(feats[0, j], want, rtol=1e-5)
        # clamped onto the border at a corner
        off = np.clip(ball_offsets(radius), 0, None)
        want = (volume[off[:, 0], off[:, 1], off[:, 2]].mean() - 0.5) / 2.0
        np.testing.assert_allclose(feats[1, j], want, rtol=1e-5)
    # then the differences between consecutive radii
    np.testing.assert_allclose(feats[:, 3:], np.diff(feats[:, :3], axis=1), atol=1e-6)
    assert density_features(volume, np.zeros((0, 3)), [1.0, 2.0], stats).shape == (0, 3)
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        density_features(volume[0], points, [1.0], stats)


# --------------------------------------------------------------------------- the rescorer
def test_rescorer_validates_and_round_trips():
    r = _identity_rescorer(radii=(1.0, 3.0))
    assert r.n_features == 2 * (len(NAMES) + 1)
    back = CandidateRescorer.from_dict(r.to_dict())
    np.testing.assert_array_equal(back.coef, r.coef)
    assert back.class_names == r.class_names and back.radii_vox == (1.0, 3.0)
    with pytest.raises(ValueError, match=r"coef must be \(13, 26\)"):
        CandidateRescorer(class_names=tuple(NAMES), radii_vox=(1.0, 3.0), coef=np.zeros((13, 13)),
                          intercept=np.zeros(13))
    with pytest.raises(ValueError, match="finite"):
        CandidateRescorer(class_names=("a",), radii_vox=(1.0,),
                          coef=np.full((2, 2), np.nan), intercept=np.zeros(2))
    with pytest.raises(ValueError, match="missing coef"):
        CandidateRescorer.from_dict({"class_names": ["a"], "radii_vox": [1], "intercept": [0]})
    with pytest.raises(ValueError, match=r"expected \(n, 26\)"):
        r.probabilities(np.zeros((2, 5)))
    x = np.log(np.full((4, r.n_features), 0.05))
    x[np.arange(4), [0, 1, 5, 12]] = np.log(0.9)
    p = r.probabilities(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    labels, scores = r.rescore(x)
    # row 0 is background-like: still the best protein class is returned, with a low score
    assert labels.tolist()[1:] == [0, 4, 11]
    assert scores[0] < 1e-6 and np.all(scores[1:] > 0.999)


def test_fit_rescorer_learns_separable_classes_and_names_missing_ones():
    rng = np.random.default_rng(1)
    names = ["a", "b", "c"]
    rows = [BACKGROUND, *names]

    def sample(n):
        y = rng.integers(0, 4, n)
        x = rng.normal(0, 0.3, (n, 8))
        x[np.arange(n), y] += 2.0  # radius 1 block: the true channel stands out
        x[np.arange(n), 4 + y] += 1.0  # radius 2 block too
        return x, [rows[k] for k in y]

    x, y = sample(400)
    r = fit_rescorer(x, y, names, radii_vox=(1.0, 2.0), regularization=1.0,
                     fitted_on={"volumes": ["synthetic"]})
    assert r.fitted_on["n_candidates"] == 400 and r.fitted_on["volumes"] == ["synthetic"]
    assert sum(r.fitted_on["counts"].values()) == 400
    x2, y2 = sample(400)
    p = r.probabilities(x2)
    predicted = [rows[k] for k in np.argmax(p, axis=1)]
    assert np.mean(np.array(predicted) == np.array(y2)) > 0.97
    with pytest.raises(ValueError, match=r"too few validation candidates of c \(need 3 each; "
                                         r"got c 0\)"):
        keep = [i for i, v in enumerate(y) if v != "c"]
        fit_rescorer(x[keep], [y[i] for i in keep], names, radii_vox=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"labels \['d'\]"):
        fit_rescorer(x, ["d", *y[1:]], names, radii_vox=(1.0, 2.0))
    with pytest.raises(ValueError, match="8 features, expected"):
        fit_rescorer(x, y, names, radii_vox=(1.0,))


def test_rescorer_with_image_features_round_trips_and_old_dicts_still_load():
    r = _identity_rescorer(radii=(1.0,), image_radii=(1.0, 2.0, 4.0))
    assert r.uses_image and r.n_features == len(NAMES) + 1 + 5
    mean, scale = np.linspace(-1, 1, r.n_features), np.linspace(1, 3, r.n_features)
    r = CandidateRescorer(class_names=r.class_names, radii_vox=r.radii_vox, coef=r.coef,
                          intercept=r.intercept, image_radii_vox=r.image_radii_vox,
                          feature_mean=mean, feature_scale=scale)
    back = CandidateRescorer.from_dict(r.to_dict())
    assert back.image_radii_vox == (1.0, 2.0, 4.0)
    np.testing.assert_array_equal(back.feature_mean, mean)
    np.testing.assert_array_equal(back.feature_scale, scale)
    x = np.random.default_rng(0).normal(size=(5, r.n_features))
    np.testing.assert_allclose(back.probabilities(x), r.probabilities(x))
    # the standardisation applies before the weights
    plain = CandidateRescorer(class_names=r.class_names, radii_vox=r.radii_vox, coef=r.coef,
                              intercept=r.intercept, image_radii_vox=r.image_radii_vox)
    np.testing.assert_allclose(r.probabilities(x), plain.probabilities((x - mean) / scale))
    # a rescorer saved before image features and standardisation existed
    old = _identity_rescorer(radii=(1.0, 3.0)).to_dict()
    for key in ("image_radii_vox", "feature_mean", "feature_scale"):
        del old[key]
    loaded = CandidateRescorer.from_dict(old)
    assert not loaded.uses_image and loaded.image_radii_vox == ()
    np.testing.assert_array_equal(loaded.feature_mean, 0.0)
    np.testing.assert_array_equal(loaded.feature_scale, 1.0)
    with pytest.raises(ValueError, match="image radii must increase"):
        _identity_rescorer(image_radii=(2.0, 1.0))
    with pytest.raises(ValueError, match="the scales > 0"):
        CandidateRescorer(class_names=r.class_names, radii_vox=r.radii_vox, coef=r.coef,
                          intercept=r.intercept, image_radii_vox=r.image_radii_vox,
                          feature_scale=np.zeros(r.n_features))


def test_fit_rescorer_learns_from_image_features_whatever_their_units():
    rng = np.random.default_rng(3)
    names = ["a", "b"]
    rows = [BACKGROUND, *names]

    def sample(n):
        y = rng.integers(0, 3, n)
        maps = rng.normal(0, 1, (n, 3))  # the maps tell nothing apart
        image = rng.normal(0, 0.2, (n, 3))
        image[:, 0] += np.array([0.0, 1.0, -1.0])[y]  # the density does
        return np.hstack([maps, image]), [rows[k] for k in y]

    x, y = sample(600)
    r = fit_rescorer(x, y, names, radii_vox=(1.0,), image_radii_vox=(1.0, 2.0))
    assert r.uses_image
    np.testing.assert_allclose(r.feature_mean, x.mean(axis=0))
    x2, y2 = sample(600)
    predicted = np.array([rows[k] for k in np.argmax(r.probabilities(x2), axis=1)])
    assert np.mean(predicted == np.array(y2)) > 0.95
    # standardised: a feature in other units (× 1000) gives the same rescorer
    scaled = x.copy()
    scaled[:, 3] *= 1000.0
    other = fit_rescorer(scaled, y, names, radii_vox=(1.0,), image_radii_vox=(1.0, 2.0))
    x2_scaled = x2.copy()
    x2_scaled[:, 3] *= 1000.0
    np.testing.assert_allclose(other.probabilities(x2_scaled), r.probabilities(x2), atol=1e-4)
    with pytest.raises(ValueError, match="6 features, expected 8"):
        fit_rescorer(x, y, names, radii_vox=(1.0,), image_radii_vox=(1.0, 2.0, 3.0))


def test_candidate_labels_from_hits():
    labels = candidate_labels(np.array([0, 2, 1, 3]), ["1bxn", "4CR2", "vesicle"],
                              ["1bxn", "4cr2"])
    assert labels == [BACKGROUND, "4cr2", "1bxn", BACKGROUND]


# --------------------------------------------------------------------------- in detection
@pytest.fixture(scope="module")
def phantom_detection():
    ph = sphere_phantom(SHAPE, 14, seed=3)
    maps = _oracle_maps(ph.class_mask)
    volume = np.arange(int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    return ph, maps, volume


def test_detect_with_an_identity_rescorer_keeps_the_peaks_classes(phantom_detection):
    ph, maps, volume = phantom_detection
    params = DetectParams(min_score=0.3)
    plain = detect(volume, _Oracle(maps), params, class_names=NAMES,
                   feature_radii_vox=(1.0,))
    assert plain.features is not None and plain.features.shape == (len(plain.particles), 13)
    assert plain.particles.metadata["rescored"] is False
    # the features are those of the maps at the particles (stride 1: map voxel = voxel)
    zyx = plain.particles.table[["z", "y", "x"]].to_numpy()
    # (compared as probabilities: the maps are accumulated in 16-bit fixed point)
    np.testing.assert_allclose(np.exp(plain.features),
                               np.exp(neighbourhood_features(maps, zyx, [1.0])), atol=1e-4)
    res = detect(volume, _Oracle(maps), params, class_names=NAMES,
                 rescorer=_identity_rescorer())
    assert len(res.particles) == len(plain.particles) == len(ph.particles)
    a = plain.particles.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    b = res.particles.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    assert a["class_name"].tolist() == b["class_name"].tolist()
    np.testing.assert_allclose(b["peak_score"], a["score"])  # the peak value is kept
    assert np.all(b["score"] > 0.99)  # 1 - P(background) of a confident rescorer
    assert res.particles.metadata["rescored"] is True
    # the same from the maps alone
    again, _ = particles_from_maps(maps, NAMES, params, rescorer=_identity_rescorer())
    c = again.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    assert c["class_name"].tolist() == b["class_name"].tolist()
    np.testing.assert_allclose(c["score"], b["score"], atol=1e-3)


def test_detect_image_features_are_the_tomograms_density_around_the_particles(
        phantom_detection):
    ph, maps, volume = phantom_detection
    params = DetectParams(min_score=0.3)
    slab = (4, 36)
    res = detect(volume, _Oracle(maps), params, class_names=NAMES, slab_z=slab,
                 feature_radii_vox=(1.0,), image_radii_vox=(1.0, 3.0))
    n = len(res.particles)
    assert n > 5 and res.features.shape == (n, len(NAMES) + 1 + 3)
    zyx = res.particles.table[["z", "y", "x"]].to_numpy() - np.array([slab[0], 0, 0])
    stats = normalization_stats(volume, DENSITY_NORMALIZATION, slab_z=slab)
    want = density_features(volume[slab[0]:slab[1]], zyx, (1.0, 3.0), stats)
    np.testing.assert_allclose(res.features[:, len(NAMES) + 1:], want, rtol=1e-5)
    # a rescorer with image features runs inside detection (here they weigh nothing)
    rescorer = _identity_rescorer(image_radii=(1.0, 3.0))
    rescored = detect(volume, _Oracle(maps), params, class_names=NAMES, slab_z=slab,
                      rescorer=rescorer)
    a = res.particles.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    b = rescored.particles.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    assert a["class_name"].tolist() == b["class_name"].tolist()
    # the maps alone cannot give image features; radii must make sense
    with pytest.raises(ValueError, match="tomogram's density"):
        particles_from_maps(maps, NAMES, params, rescorer=rescorer)
    with pytest.raises(ValueError, match="image_radii_vox needs feature_radii_vox"):
        detect(volume, _Oracle(maps), params, class_names=NAMES, image_radii_vox=(1.0,))
    with pytest.raises(ValueError, match="increasing radii"):
        detect(volume, _Oracle(maps), params, class_names=NAMES, feature_radii_vox=(1.0,),
               image_radii_vox=(3.0, 1.0))
    with pytest.raises(ValueError, match="the rescorer's image radii"):
        detect(volume, _Oracle(maps), params, class_names=NAMES, rescorer=rescorer,
               image_radii_vox=(1.0,))


def test_rescorer_classes_and_thresholds_rule_the_output(phantom_detection):
    ph, maps, volume = phantom_detection
    # class k's logit reads channel k + 1 (cyclic): every particle moves to the previous class
    rows = len(NAMES) + 1
    perm = [0] + [1 + (k % len(NAMES)) for k in range(1, rows)]
    shifted = _identity_rescorer(permutation=perm)
    plain = detect(volume, _Oracle(maps), DetectParams(min_score=0.3), class_names=NAMES)
    res = detect(volume, _Oracle(maps), DetectParams(min_score=0.3), class_names=NAMES,
                 rescorer=shifted)
    a = plain.particles.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    b = res.particles.table.sort_values(["z", "y", "x"]).reset_index(drop=True)
    index = {n.lower(): i for i, n in enumerate(NAMES)}
    moved = [NAMES[(index[n.lower()] - 1) % len(NAMES)].lower() for n in a["class_name"]]
    assert [n.lower() for n in b["class_name"]] == moved
    # a class threshold applies to the rescored class and score: above 1 switches it off
    gone = b["class_name"].iloc[0]
    off = detect(volume, _Oracle(maps), DetectParams(min_score=0.3,
                                                     class_thresholds={gone: 1.5}),
                 class_names=NAMES, rescorer=shifted)
    assert gone not in off.particles.class_names.tolist()
    assert len(off.particles) == len(b) - int((b["class_name"] == gone).sum())
    with pytest.raises(ValueError, match="rescorer's classes"):
        detect(volume, _Oracle(maps[:3]), DetectParams(), class_names=NAMES[:2],
               rescorer=shifted)


def test_tune_rescorer_needs_examples_of_every_class(phantom_detection):
    ph, maps, volume = phantom_detection
    res = detect(volume, _Oracle(maps), DetectParams(min_score=0.3), class_names=NAMES,
                 feature_radii_vox=(1.0, 2.0, 3.0, 5.0))

    class GroundTruth:
        particles = ph.particles
        occupancy_mask = ph.occupancy_mask
        class_table = None

    # 14 particles over 12 classes: one or two each, fewer than the 3 a fit needs
    with pytest.raises(ValueError, match="too few validation candidates"):
        tune_rescorer([(res.particles, res.features, GroundTruth)], NAMES)
    with pytest.raises(ValueError, match="feature rows"):
        tune_rescorer([(res.particles, res.features[:3], GroundTruth)], NAMES)


def test_tune_rescorer_fits_and_tunes_on_a_crowded_phantom():
    from napari_shrec.core.particles import ParticleList
    from napari_shrec.core.score import score_submission

    ph = sphere_phantom((48, 112, 112), 84, seed=5, radius_scale=0.6)
    counts = {n: int((np.asarray(ph.particles.class_names) == n).sum()) for n in NAMES}
    assert min(counts.values()) >= 3, counts
    maps = _oracle_maps(ph.class_mask)
    rng = np.random.default_rng(2)
    noisy = maps * rng.uniform(0.6, 1.4, maps.shape).astype(np.float32)
    noisy /= noisy.sum(axis=0, keepdims=True)
    found, _ = particles_from_maps(noisy, NAMES, DetectParams(min_score=0.2))
    # false candidates on background voxels, with random classes and low peak scores
    empty = np.argwhere(ph.occupancy_mask == 0)
    far = empty[rng.choice(len(empty), 40, replace=False)]
    fake = ParticleList.from_arrays(rng.choice(NAMES, 40), far[:, ::-1].astype(float),
                                    scores=np.full(40, 0.25))
    candidates = ParticleList.from_arrays(
        [*found.class_names, *fake.class_names],
        np.concatenate([found.table[["x", "y", "z"]].to_numpy(),
                        fake.table[["x", "y", "z"]].to_numpy()]),
        scores=np.concatenate([found.scores(), fake.scores()]))
    features = neighbourhood_features(noisy, candidates.table[["z", "y", "x"]].to_numpy(),
                                      [1.0, 2.0, 3.0, 5.0])

    class GroundTruth:
        particles = ph.particles
        occupancy_mask = ph.occupancy_mask
        class_table = None

    tuning = tune_rescorer([(candidates, features, GroundTruth)], NAMES, regularization=1.0)
    assert tuning.rescorer.fitted_on["counts"][BACKGROUND] >= 30  # most fakes hit nothing
    assert len(tuning.per_volume) == 1 and set(tuning.thresholds) == set(tuning.per_volume[0])
    truth = np.array(candidate_labels(
        score_submission(ph.particles, ph.occupancy_mask, candidates).hit_particle,
        ph.particles.class_names, NAMES), dtype=object)
    labels, scores = tuning.rescorer.rescore(features)
    hits = truth != BACKGROUND
    named = np.array([NAMES[k] for k in labels], dtype=object)
    assert np.mean(named[hits] == truth[hits]) > 0.95
    # the tuned thresholds keep (nearly) every particle and drop the background candidates
    limit = np.array([tuning.thresholds.get(n, 0.0) for n in named])
    kept = scores >= limit
    assert kept[hits].mean() > 0.9 and kept[~hits].mean() < 0.1


# --------------------------------------------------------------------------- checkpoints
def test_rescorer_and_both_threshold_sets_round_trip_through_a_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from napari_shrec.core.nets.checkpoint import load_checkpoint, save_checkpoint
    from napari_shrec.core.nets.unet import UNet3D, UNet3DConfig
    from napari_shrec.core.train import store_detection_settings

    torch.manual_seed(0)
    config = UNet3DConfig(n_classes=len(NAMES) + 1, width=4, depth=2)
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, UNet3D(config), config, class_names=NAMES,
                    normalization={"method": "robust"})
    assert load_checkpoint(plain).rescorer is None
    rescorer = _identity_rescorer(radii=(1.0, 2.0))
    rescored = DetectParams(min_score=0.2, class_thresholds={"1bxn": 0.9})
    peaks = DetectParams(min_score=0.2, class_thresholds={"1bxn": 0.6})
    out = store_detection_settings(plain, rescored, rescorer=rescorer,
                                   params_without_rescorer=peaks, out=tmp_path / "tuned.pt")
    model = load_checkpoint(out)
    back = model.rescorer
    np.testing.assert_array_equal(back.coef, rescorer.coef)
    assert back.radii_vox == (1.0, 2.0) and back.class_names == tuple(NAMES)
    assert model.detect_params() == rescored
    assert model.detect_params(rescore=False) == peaks
    assert model.detect_params(rescore=False, min_score=0.4).min_score == 0.4
    # a damaged rescorer names the file
    model.detection["rescorer"]["coef"] = [[0.0]]
    with pytest.raises(ValueError, match="tuned.pt: rescorer: coef must be"):
        _ = model.rescorer

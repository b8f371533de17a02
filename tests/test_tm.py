"""Template matching: FLCF numbers, planted templates, backends, angle sets, CTF/wedge filters,
selection strategies, the multi-class driver and the ``match`` CLI on a small simulation."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_shrec.core.grandmodel import rotate_potential
from napari_shrec.core.progress import CancelToken, Cancelled
from napari_shrec.core.rotations import zxz_to_matrix
from napari_shrec.core.tm import MatchParams, _matrix_zyx, angles_for, match_template, \
    prepare_template
from napari_shrec.core.tm_angles import angle_count, crowther_step_deg, rotation_distance_deg, \
    uniform_angles
from napari_shrec.core.tm_select import Candidates, SelectParams, expected_per_class, \
    find_candidates, select_particles, statistical_threshold
from napari_shrec.core.tm_templates import ctf_filter_rfft, ctf_first_zero_nm_inv, \
    frequency_grid_rfft, wedge_filter_rfft

PLAIN = MatchParams(ctf=False, tilt_range_deg=None, mask_edge_sigma_nm=0.0, device="cpu")
#: rotations by multiples of 90° map the voxel grid onto itself (interpolation is exact)
GRID_ANGLES = np.array([[0, 0, 0], [90, 0, 0], [0, 90, 0], [90, 90, 90], [180, 90, 270],
                        [270, 180, 0]], dtype=np.float64)


def _blobs(edge: int = 15) -> np.ndarray:
    """An asymmetric template: three Gaussian blobs of different sizes and weights."""
    g = np.arange(edge) - edge // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    t = (np.exp(-((x - 2) ** 2 + y ** 2 + z ** 2) / 4.0)
         + 0.7 * np.exp(-(x ** 2 + (y - 3) ** 2 + (z + 1) ** 2) / 3.0)
         + 0.5 * np.exp(-((x + 2) ** 2 + (y + 1) ** 2 + (z - 3) ** 2) / 2.0))
    return t.astype(np.float32)


def _plant(shape: tuple[int, int, int], template: np.ndarray, centre_zyx: tuple[int, int, int],
           angles_zxz: np.ndarray) -> np.ndarray:
    """A volume with the template rotated (the grandmodel's rotation) at ``centre_zyx``."""
    vol = np.zeros(shape, dtype=np.float32)
    rotated = rotate_potential(template, zxz_to_matrix(angles_zxz))
    h = rotated.shape[0] // 2
    z, y, x = centre_zyx
    vol[z - h:z + h + 1, y - h:y + h + 1, x - h:x + h + 1] += rotated
    return vol


# --------------------------------------------------------------------------- FLCF numbers
@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_flcf_equals_brute_force_normalised_cross_correlation(sigma: float) -> None:
    from scipy import ndimage

    from napari_shrec.core.tm_backends import NumpyBackend

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(16, 20, 18)).astype(np.float32)
    template = rng.normal(size=(7, 7, 7)).astype(np.float32)
    params = PLAIN.replace(mask_radius_nm=3.0, mask_edge_sigma_nm=sigma)
    angles = np.array([[0.0, 0.0, 0.0], [30.0, 40.0, 50.0], [200.0, 100.0, 10.0]])
    result = match_template(vol, template, params, angles_zxz_deg=angles)
    prepared = prepare_template(template, params)
    coefficients = ndimage.spline_filter(prepared.data, order=3, output=np.float32)
    m = prepared.mask.astype(np.float64)
    p = m.sum()
    n, h = prepared.edge, prepared.edge // 2
    centred = np.pad(vol - vol.mean(), h)  # zeros outside, as the matcher's padding
    backend = NumpyBackend(1)
    rotated = []
    for matrix in _matrix_zyx(angles):
        t = backend.rotate(coefficients, matrix, 3).astype(np.float64)
        mu = (m * t).sum() / p
        sd = math.sqrt((m * (t - mu) ** 2).sum() / p)
        rotated.append(m * (t - mu) / sd)
    for z, y, x in [(8, 10, 9), (0, 0, 0), (15, 19, 17), (3, 17, 2)]:
        patch = centred[z:z + n, y:y + n, x:x + n].astype(np.float64)
        mean = (m * patch).sum() / p
        sd_v = math.sqrt((m * patch ** 2).sum() / p - mean ** 2)
        cc = [(t * patch).sum() / (p * sd_v) for t in rotated]
        assert result.scores[z, y, x] == pytest.approx(max(cc), abs=2e-5)
        assert result.angle_index[z, y, x] == int(np.argmax(cc))
    assert result.scores.dtype == np.float32 and result.angle_index.dtype == np.int32
    assert np.all(np.abs(result.scores) <= 1.0 + 1e-4)


def test_planted_template_is_found_with_score_one_without_noise() -> None:
    template = _blobs()
    angles = uniform_angles(45.0)
    true_index = 57
    vol = _plant((30, 36, 34), template, (14, 18, 16), angles[true_index])
    result = match_template(vol, template, PLAIN, angles_zxz_deg=angles)
    peak = np.unravel_index(int(np.argmax(result.scores)), result.scores.shape)
    assert peak == (14, 18, 16)
    assert result.scores[peak] > 0.999
    assert result.angle_index[peak] == true_index
    assert result.best_angles(np.array([peak]))[0] == pytest.approx(angles[true_index])


def test_planted_template_in_noise_found_within_one_angular_step() -> None:
    template = _blobs()
    rng = np.random.default_rng(5)
    true_angles = np.array([37.0, 71.0, 203.0])  # not on the grid
    vol = _plant((30, 34, 32), template, (15, 16, 17), true_angles)
    vol += rng.normal(scale=0.15, size=vol.shape).astype(np.float32)
    step = 30.0
    result = match_template(vol, template, PLAIN.replace(angular_step_deg=step))
    assert result.n_angles == angle_count(step) == 552
    peak = np.unravel_index(int(np.argmax(result.scores)), result.scores.shape)
    assert np.abs(np.subtract(peak, (15, 16, 17))).max() <= 1
    found = result.angles_zxz_deg[result.angle_index[peak]]
    assert rotation_distance_deg(found, true_angles)[0, 0] <= step
    background = np.delete(result.scores.ravel(), np.ravel_multi_index(peak, vol.shape))
    assert result.scores[peak] > 0.5 > np.quantile(background, 0.99)


def test_spherical_shortcut_equals_the_general_path() -> None:
    rng = np.random.default_rng(2)
    from napari_shrec.core.tm_templates import pad_or_crop_cube

    vol = _plant((24, 26, 28), _blobs(11), (12, 12, 14), GRID_ANGLES[3])
    vol += rng.normal(scale=0.2, size=vol.shape).astype(np.float32)
    params = PLAIN.replace(mask_radius_nm=4.0, mask_edge_sigma_nm=1.0)
    template = pad_or_crop_cube(_blobs(11), 19)  # the box the sphere needs: 2·⌈4 + 3 + 2⌉ + 1
    shortcut = match_template(vol, template, params, angles_zxz_deg=GRID_ANGLES)
    sphere = prepare_template(template, params).mask
    assert sphere.shape == template.shape
    general = match_template(vol, template, params, angles_zxz_deg=GRID_ANGLES, mask=sphere)
    assert general.metadata["rotate_mask"] and not shortcut.metadata["rotate_mask"]
    np.testing.assert_allclose(general.scores, shortcut.scores, atol=1e-4)
    assert np.mean(general.angle_index == shortcut.angle_index) > 0.999


def test_slab_is_searched_only_and_maps_are_full_size() -> None:
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(20, 16, 16)).astype(np.float32)
    template = _blobs(9)
    full = match_template(vol, template, PLAIN, angles_zxz_deg=GRID_ANGLES[:2])
    slab = match_template(vol, template, PLAIN, angles_zxz_deg=GRID_ANGLES[:2], slab_z=(5, 12))
    assert slab.scores.shape == vol.shape and slab.slab_z == (5, 12)
    assert np.all(slab.scores[:5] == 0) and np.all(slab.angle_index[12:] == -1)
    # with the slab's context read, the searched slices agree with a full search (the volume
    # mean differs, which the local normalisation removes up to the zero padding's border)
    np.testing.assert_allclose(slab.scores[8:10], full.scores[8:10], atol=1e-4)


def test_progress_and_cancel() -> None:
    vol = np.random.default_rng(0).normal(size=(12, 12, 12)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    match_template(vol, _blobs(7), PLAIN, angles_zxz_deg=GRID_ANGLES,
                   progress=lambda d, t, _m: calls.append((d, t)))
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        match_template(vol, _blobs(7), PLAIN, angles_zxz_deg=GRID_ANGLES, cancel=token)


def test_params_validation_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="angular_step_deg"):
        MatchParams(angular_step_deg=0)
    with pytest.raises(ValueError, match="tilt_range_deg"):
        MatchParams(tilt_range_deg=(60, -60))
    with pytest.raises(ValueError, match="device"):
        MatchParams(device="tpu")
    with pytest.raises(ValueError, match="interpolation_order"):
        MatchParams(interpolation_order=2)
    with pytest.raises(ValueError, match="odd edge"):
        match_template(np.zeros((8, 8, 8)), np.ones((4, 4, 4)), PLAIN)
    with pytest.raises(ValueError, match="strategy"):
        SelectParams(strategy="best")


# --------------------------------------------------------------------------- backends
def _noisy_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    template = _blobs(11)
    vol = _plant((20, 22, 24), template, (10, 11, 12), GRID_ANGLES[1])
    vol += rng.normal(scale=0.3, size=vol.shape).astype(np.float32)
    return vol, template


def test_torch_backend_agrees_with_numpy() -> None:
    torch = pytest.importorskip("torch")
    vol, template = _noisy_case()
    params = MatchParams(angular_step_deg=60.0, device="cpu")  # CTF and wedge on
    angles = uniform_angles(60.0)[:12]
    cpu = match_template(vol, template, params, angles_zxz_deg=angles)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # busy-waiting OpenMP threads crawl on a shared 2-core machine
    try:
        tor = match_template(vol, template, params.replace(device="torch-cpu"),
                             angles_zxz_deg=angles)
    finally:
        torch.set_num_threads(threads)
    assert tor.device == "torch-cpu"
    np.testing.assert_allclose(tor.scores, cpu.scores, atol=1e-4)
    assert np.mean(tor.angle_index == cpu.angle_index) > 0.99


@pytest.mark.gpu
def test_cuda_backend_agrees() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    vol, template = _noisy_case()
    params = MatchParams(angular_step_deg=60.0, device="cpu")
    angles = uniform_angles(60.0)[:12]
    cpu = match_template(vol, template, params, angles_zxz_deg=angles)
    gpu = match_template(vol, template, params.replace(device="cuda"), angles_zxz_deg=angles)
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.scores, cpu.scores, atol=1e-4)
    assert np.mean(gpu.angle_index == cpu.angle_index) > 0.99


# --------------------------------------------------------------------------- angles
@pytest.mark.parametrize("step", [45.0, 30.0])
def test_angle_set_count_and_uniform_coverage(step: float) -> None:
    from scipy.spatial.transform import Rotation

    angles = uniform_angles(step)
    s = math.radians(step)
    assert len(angles) == angle_count(step) == \
        math.ceil(4 * math.pi / s ** 2) * math.ceil(2 * math.pi / s)
    assert np.all(angles[0] == 0)
    probes = Rotation.random(1500, random_state=7).as_euler("ZXZ", degrees=True)
    covering = rotation_distance_deg(probes, angles).min(axis=1)
    assert covering.max() <= step  # measured ≈ 0.8 step
    assert 0.4 * step < np.median(covering) < 0.6 * step
    spacing = rotation_distance_deg(angles, angles)
    np.fill_diagonal(spacing, np.inf)
    assert spacing.min() > 0.5 * step  # no near-duplicates


def test_crowther_step_and_default_angles() -> None:
    assert crowther_step_deg(16.0, 2.46) == pytest.approx(math.degrees(2.46 / 16.0))
    assert ctf_first_zero_nm_inv(defocus_um=3.0, voltage_kv=300.0, cs_mm=2.7,
                                 amplitude_contrast=0.08) == pytest.approx(0.406, abs=0.002)
    params = MatchParams()
    assert params.crowther_resolution_nm(1.0) == pytest.approx(2.46, abs=0.02)
    assert params.replace(ctf=False).crowther_resolution_nm(1.0) == 2.0
    prepared = prepare_template(_blobs(15), params.replace(mask_radius_nm=6.0))
    angles, step = angles_for(prepared, params)
    assert step == pytest.approx(math.degrees(params.crowther_resolution_nm(1.0) / 12.0))
    assert len(angles) == angle_count(step)


# --------------------------------------------------------------------------- filters
def test_ctf_template_filter_is_zero_beyond_the_first_zero() -> None:
    shape = (32, 32, 32)
    filt = ctf_filter_rfft(shape, 1.0, defocus_um=3.0, voltage_kv=300.0, cs_mm=2.7,
                           amplitude_contrast=0.08)
    kz, ky, kx = frequency_grid_rfft(shape, 1.0)
    q = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2)
    q0 = ctf_first_zero_nm_inv(defocus_um=3.0, voltage_kv=300.0, cs_mm=2.7,
                               amplitude_contrast=0.08)
    assert np.all(filt[q >= q0] == 0)
    assert np.all(filt[(q > 0) & (q < q0)] > 0)  # underfocus: positive below the first zero
    assert filt[0, 0, 0] == pytest.approx(0.08, abs=1e-6)
    # the CTF-modulated template: its spectrum (before boxing) vanishes beyond the first zero
    from scipy import fft

    from napari_shrec.core.tm_templates import pad_or_crop_cube

    big = pad_or_crop_cube(_blobs(15), 31)
    modulated = fft.irfftn(fft.rfftn(big) * ctf_filter_rfft(big.shape, 1.0, defocus_um=3.0,
                                                            voltage_kv=300.0, cs_mm=2.7,
                                                            amplitude_contrast=0.08), s=big.shape)
    kz, ky, kx = frequency_grid_rfft(big.shape, 1.0)
    beyond = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2) >= q0
    assert np.abs(fft.rfftn(modulated)[beyond]).max() < 1e-6 * np.abs(fft.rfftn(big)).max()


def test_lowpass_filter_and_a_low_passed_match() -> None:
    from napari_shrec.core.tm_templates import lowpass_filter_rfft

    f = lowpass_filter_rfft((20, 20, 20), 1.0, 5.0)
    assert f[0, 0, 0] == 1 and f[4, 0, 0] == pytest.approx(math.exp(-1), rel=1e-6)  # q = 0.2
    with pytest.raises(ValueError, match="lowpass_nm"):
        MatchParams(lowpass_nm=-1)
    template = _blobs()
    vol = _plant((26, 28, 30), template, (13, 14, 15), GRID_ANGLES[2])
    vol += np.random.default_rng(9).normal(scale=0.3, size=vol.shape).astype(np.float32)
    result = match_template(vol, template, PLAIN.replace(lowpass_nm=3.0),
                            angles_zxz_deg=GRID_ANGLES)
    peak = np.unravel_index(int(np.argmax(result.scores)), result.scores.shape)
    assert peak == (13, 14, 15) and result.angle_index[peak] == 2


def test_wedge_filter_about_y() -> None:
    w = wedge_filter_rfft((16, 16, 16), (-60.0, 60.0))
    # indices (kz, ky, kx) on the rfft grid: kz = 1 ↔ index 1, kz = -1 ↔ index 15
    assert w[1, 0, 1] == 1 and w[15, 3, 1] == 1       # 45°: measured
    assert w[2, 0, 1] == 0 and w[14, 5, 1] == 0       # 63.4°: in the wedge
    assert w[0, 5, 0] == 1 and w[3, 0, 0] == 0        # the ky axis is measured, kz is not
    assert np.all(wedge_filter_rfft((8, 8, 8), (-90.0, 90.0)) == 1)


# --------------------------------------------------------------------------- selection
def _cands(name: str, coords: list[tuple[float, float, float]], scores: list[float],
           radius: float, weight: float) -> Candidates:
    n = len(scores)
    return Candidates(name, np.array(coords, dtype=float).reshape(n, 3), np.array(scores),
                      np.tile([10.0, 20.0, 30.0], (n, 1)), radius, 0.0, 0.1, 1000, weight)


def _hand_made() -> list[Candidates]:
    big = _cands("4d8q", [(10, 10, 10), (30, 10, 10), (50, 10, 10)], [0.9, 0.8, 0.3], 5, 1952)
    small = _cands("1s3x", [(12, 10, 10), (40, 40, 40), (41, 40, 40)], [0.95, 0.5, 0.4], 2, 43)
    return [small, big]


def test_thresholded_keeps_top_n_per_class_biggest_first() -> None:
    picks = select_particles(_hand_made(), SelectParams(strategy="thresholded", expected=2))
    assert list(picks.class_names) == ["4d8q", "4d8q", "1s3x", "1s3x"]
    assert picks.scores().tolist() == [0.9, 0.8, 0.95, 0.5]
    assert picks.table[["x", "y", "z"]].to_numpy()[2].tolist() == [10, 10, 12]  # x, y, z
    assert picks.table[["phi", "theta", "psi"]].to_numpy()[0].tolist() == [10, 20, 30]


def test_filtered_drops_overlaps_with_selected_particles() -> None:
    picks = select_particles(_hand_made(), SelectParams(strategy="filtered", expected=2))
    # (12, 10, 10) lies 2 voxels from the big particle (< 5 + 2); (41, 40, 40) 1 voxel from the
    # small one (< 2 + 2): both dropped; the big class is full after two
    assert list(picks.class_names) == ["4d8q", "4d8q", "1s3x"]
    assert picks.scores().tolist() == [0.9, 0.8, 0.5]
    by_score = select_particles(_hand_made(), SelectParams(strategy="filtered", expected=2,
                                                           class_order="score"))
    # by score the small one wins (0.95) and blocks the big one at (10, 10, 10); the big class
    # then takes its third candidate
    assert by_score.scores().tolist() == [0.95, 0.8, 0.5, 0.3]
    assert select_particles(_hand_made(), SelectParams(expected=3)).scores().tolist() == \
        [0.9, 0.8, 0.3, 0.5]


def test_statistical_cut_off() -> None:
    # median 0, σ 0.1, 1000 voxels, 1 false alarm: k = Φ⁻¹(1 − 1e-3) = 3.09 → t = 0.309
    assert statistical_threshold(0.0, 0.1, 1000, 1.0) == pytest.approx(0.309, abs=1e-3)
    picks = select_particles(_hand_made(), SelectParams(strategy="statistical"))
    assert picks.scores().tolist() == [0.9, 0.8, 0.5]  # 0.3 below t; overlaps filtered
    assert picks.metadata["thresholds"]["4d8q"] == pytest.approx(0.309, abs=1e-3)
    loose = select_particles(_hand_made(), SelectParams(strategy="statistical",
                                                        false_alarm_rate=100.0))
    assert 0.3 in loose.scores().tolist()  # k = Φ⁻¹(0.9) = 1.28 → t = 0.128


def test_expected_per_class_follows_the_shrec20_density() -> None:
    assert expected_per_class(512 * 512 * 200, 1.0) == 217
    assert expected_per_class(100, 1.0) == 1


def test_find_candidates_on_a_score_map() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    scores = rng.normal(scale=0.005, size=(30, 40, 40)).astype(np.float32)
    peaks = [(10, 10, 10), (20, 30, 12), (5, 25, 30)]
    for k, (z, y, x) in enumerate(peaks):
        scores[z, y, x] = 0.9 - 0.3 * k
    scores = ndimage.gaussian_filter(scores, 1.0) * 5
    index = np.zeros(scores.shape, dtype=np.int32)
    index[20, 30, 12] = 1
    angles = np.array([[0.0, 0.0, 0.0], [10.0, 20.0, 30.0]])
    c = find_candidates(scores, "4d8q", 4.0, angle_index=index, angles_zxz_deg=angles,
                        params=SelectParams(max_candidates=3))
    assert len(c) == 3
    assert c.coords_zyx.tolist() == [list(p) for p in peaks]
    assert c.angles_zxz_deg[1].tolist() == [10.0, 20.0, 30.0]
    assert np.all(np.diff(c.scores) < 0)
    sliced = find_candidates(scores, "4d8q", 4.0, slab_z=(15, 30))
    assert sliced.coords_zyx[0].tolist() == [20, 30, 12] and sliced.n_voxels == 15 * 40 * 40


# --------------------------------------------------------------------------- simulation + CLI
SIM_CLASSES = ("4d8q", "4cr2", "1bxn")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 × 96 × 96 voxels, 12–14 particles of three large classes, SNR 0.001 (image ratio
    0.075; surrogates)."""
    from napari_shrec.core.simulate import run_simulation, simulation_params

    folder = tmp_path_factory.mktemp("tm") / "sim"
    params = simulation_params("small", seed=3, structure_sources=[], download_structures=False,
                               snr=0.001, classes=SIM_CLASSES, shape_zyx=(48, 96, 96),
                               n_particles=(12, 14))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(params, folder)
    return folder


def test_match_classes_finds_most_large_particles(small_dataset: Path) -> None:
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.core.tm_classes import dataset_templates, match_classes
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth

    ds = load_dataset(small_dataset)
    counts = {k: int(v) for k, v in ds.particles.class_counts().items()}
    templates = dataset_templates(SIM_CLASSES, ds.simulation, 1.0, download=False)
    assert all(t.is_surrogate for t in templates.values())
    volume = ds.read_volume("reconstruction")
    result = match_classes(volume, SIM_CLASSES, MatchParams(angular_step_deg=45.0, device="cpu"),
                           SelectParams(strategy="filtered", expected=counts),
                           templates=templates, keep_maps=True)
    gt = scoring_ground_truth(ds)
    score = score_submission(gt.particles, gt.occupancy_mask, result.particles,
                             ScoreParams(mode="native"))
    assert score.recall >= 0.7  # measured 0.79 (11 of 14); TM-F's large classes in the paper
    assert score.precision >= 0.7
    # the sign is right: the true particles score clearly above the map
    r = result.results["4d8q"]
    rows = ds.particles.table[ds.particles.table.class_name == "4d8q"]
    at_truth = r.scores[rows.z.astype(int), rows.y.astype(int), rows.x.astype(int)]
    assert at_truth.min() > np.quantile(r.scores, 0.99)
    assert set(result.particles.class_names) <= set(SIM_CLASSES)
    assert result.particles.metadata["strategy"] == "filtered"


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``napari-shrec`` with ``match`` registered (when cli.py does not list it yet)."""
    from napari_shrec import _cli_match, cli

    original = cli._optional_actions
    if _cli_match.add_parser not in original():
        monkeypatch.setattr(cli, "_optional_actions",
                            lambda: original() + [_cli_match.add_parser])
    return cli.main(argv)


def test_cli_match_round_trip(small_dataset: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from napari_shrec.io.particles import read_particles

    out = tmp_path / "tm.txt"
    maps = tmp_path / "maps"
    argv = ["match", str(small_dataset), "--out", str(out), "--classes", "4d8q,4cr2",
            "--angular-step", "60", "--device", "cpu", "--no-download", "--score",
            "--score-map-dir", str(maps)]
    assert _main(argv, monkeypatch) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "Localization (paper Table 3" in text and "4d8q" in text
    picks = read_particles(out)
    assert len(picks) > 0 and set(picks.class_names) <= {"4d8q", "4cr2"}
    assert (maps / "scores_4d8q.mrc").is_file() and (maps / "angles_4cr2.txt").is_file()
    # refuses to overwrite, before any work, naming the file
    assert _main(argv, monkeypatch) == 2
    assert str(out) in capsys.readouterr().err
    bad = ["match", str(small_dataset), "--out", str(tmp_path / "b.txt"), "--expected", "x=y"]
    assert _main(bad, monkeypatch) == 2
    assert "--expected 'x=y'" in capsys.readouterr().err
    missing = ["match", str(tmp_path / "nope.mrc"), "--out", str(tmp_path / "c.txt")]
    assert _main(missing, monkeypatch) == 2
    assert "nope.mrc" in capsys.readouterr().err


def test_parse_expected() -> None:
    from napari_shrec._cli_match import parse_expected

    assert parse_expected([]) is None
    assert parse_expected(["217"]) == 217
    assert parse_expected(["4D8Q=30", "1s3x=10"]) == {"4d8q": 30, "1s3x": 10}
    assert parse_expected(["5", "4d8q=30"]) == {"4d8q": 30, "*": 5}
    with pytest.raises(ValueError, match="-3"):
        parse_expected(["-3"])

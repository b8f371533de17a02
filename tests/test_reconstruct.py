"""Weighted back-projection: alignment with the ground truth, missing wedge, backends, weightings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_shrec.cli import main
from napari_shrec.core.map_compare import best_translation_ncc
from napari_shrec.core.reconstruct import (
    ReconstructionParams,
    backproject,
    reconstruct,
    tilt_weights_rad,
    weighting_filter,
)
from napari_shrec.core.tiltseries import TiltSeriesParams, shrec_tilt_angles, simulate_tilt_series

ANGLES = np.asarray(shrec_tilt_angles())


def _blob_phantom(shape=(32, 40, 64), seed=4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, dtype=np.float32)
    z, y, x = np.indices(shape)
    for _ in range(10):
        c = rng.integers([6, 6, 6], [shape[0] - 6, shape[1] - 6, shape[2] - 6])
        r = rng.uniform(1.5, 3.5)
        volume += 2.0 * (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r * r)
    return volume


def _absorption_series(volume: np.ndarray) -> np.ndarray:
    """Noise-free projections whose contrast is linear in the projected potential."""
    params = TiltSeriesParams(tilt_angles_deg=tuple(ANGLES), noise="none", defocus_um=0.0,
                              cs_mm=0.0, amplitude_contrast=0.5, ice_potential_v=0.0,
                              ice_variation_v=0.0, structural_noise_v=0.0,
                              envelope_fraction_of_nyquist=None)
    return simulate_tilt_series(volume, 1.0, params).projections_noisefree


def _wedge_filtered(volume: np.ndarray, max_tilt_deg: float = 60.0) -> np.ndarray:
    """The part of a volume a ±max_tilt single-axis series can see: Fourier components within
    max_tilt of the x axis in the (q_z, q_x) plane, below 2/3 of Nyquist (the multislice's band)."""
    qz = np.fft.fftfreq(volume.shape[0])[:, None, None]
    qy = np.fft.fftfreq(volume.shape[1])[None, :, None]
    qx = np.fft.fftfreq(volume.shape[2])[None, None, :]
    seen = np.abs(qz) <= np.abs(qx) * math.tan(math.radians(max_tilt_deg)) + 1e-12
    band = (qz ** 2 + qy ** 2 + qx ** 2) <= (1 / 3) ** 2
    return np.fft.ifftn(np.fft.fftn(volume) * (seen & band)).real


def test_phantom_reconstruction_aligns_with_the_ground_truth_at_zero_shift() -> None:
    """The test that the tilt sign and the axes of simulator and reconstruction agree."""
    phantom = _blob_phantom()
    projections = _absorption_series(phantom)
    volume, info = reconstruct(projections, ANGLES,
                               ReconstructionParams(thickness=phantom.shape[0]))
    assert volume.shape == phantom.shape and info["axis_z"] == phantom.shape[0] // 2
    reference = _wedge_filtered(phantom)
    ncc, shift = best_translation_ncc(volume, reference)
    assert shift == (0, 0, 0)
    assert ncc > 0.8
    # The same data with the tilt sign inverted no longer fits.
    mirrored, _ = reconstruct(projections, ANGLES, ReconstructionParams(
        thickness=phantom.shape[0], invert_tilt_angles=True))
    assert np.corrcoef(mirrored.ravel(), reference.ravel())[0, 1] < 0.5 * ncc


def _point_series(x0: float, z0: float, nx: int = 96, ny: int = 8) -> np.ndarray:
    """Analytic projections of a small Gaussian at (x0, z0) relative to the centre, as
    intensities 1 − blob (dark, like protein)."""
    xs = np.arange(nx) - nx // 2
    stack = np.empty((len(ANGLES), ny, nx), dtype=np.float32)
    for t, angle in enumerate(np.deg2rad(ANGLES)):
        xp = x0 * math.cos(angle) + z0 * math.sin(angle)
        stack[t] = 1.0 - 0.1 * np.exp(-((xs - xp) ** 2) / (2 * 0.8 ** 2))[None, :]
    return stack


def test_a_point_reconstructs_where_it_is_with_the_missing_wedge_elongation() -> None:
    x0, z0, thickness = 7.0, -5.0, 64
    volume, _ = reconstruct(_point_series(x0, z0), ANGLES,
                            ReconstructionParams(thickness=thickness, weighting="none"))
    plane = volume[:, 4, :]
    iz, ix = np.unravel_index(np.argmax(plane), plane.shape)
    assert (iz - thickness // 2, ix - 48) == (z0, x0)
    ramp, _ = reconstruct(_point_series(x0, z0), ANGLES,
                          ReconstructionParams(thickness=thickness, weighting="ramp"))
    psf = np.clip(ramp[:, 4, :], 0, None)
    psf = psf[iz - 12:iz + 13, ix - 12:ix + 13]
    psf = np.where(psf > 0.2 * psf.max(), psf, 0)
    zz, xx = np.indices(psf.shape) - 12
    spread_z = math.sqrt((psf * zz ** 2).sum() / psf.sum())
    spread_x = math.sqrt((psf * xx ** 2).sum() / psf.sum())
    # Radermacher's elongation for ±60°: √((α + sin α cos α)/(α − sin α cos α)) = 1.55.
    alpha = math.radians(60)
    expected = math.sqrt((alpha + math.sin(alpha) * math.cos(alpha))
                         / (alpha - math.sin(alpha) * math.cos(alpha)))
    assert spread_z / spread_x == pytest.approx(expected, rel=0.25)
    assert spread_z > spread_x


@pytest.mark.parametrize("device", ["numpy", "torch-cpu"])
def test_backends_agree(device: str) -> None:
    if device == "torch-cpu":
        pytest.importorskip("torch")
    pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    filtered = rng.normal(size=(7, 5, 48)).astype(np.float32)
    angles = np.array([-60, -41, -20, 0, 15, 33, 60], dtype=float)
    reference, used = backproject(filtered, angles, thickness=20, axis_z=9.5, device="cpu")
    assert used == "cpu"
    other, used_other = backproject(filtered, angles, thickness=20, axis_z=9.5, device=device)
    assert used_other == device
    assert np.abs(other - reference).max() < 1e-5 * np.abs(reference).max()


@pytest.mark.gpu
def test_cuda_backend_agrees() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    rng = np.random.default_rng(2)
    filtered = rng.normal(size=(41, 32, 128)).astype(np.float32)
    reference, _ = backproject(filtered, ANGLES, thickness=64, axis_z=32, device="cpu")
    gpu, used = backproject(filtered, ANGLES, thickness=64, axis_z=32, device="cuda")
    assert used == "cuda"
    # Stated tolerance: 1e-5 of the volume's largest value.
    assert np.abs(gpu - reference).max() < 1e-5 * np.abs(reference).max()


def test_weighting_filters() -> None:
    n_padded, n_tilts = 256, 41
    q = np.fft.rfftfreq(n_padded)
    ramp = weighting_filter(n_padded, n_tilts, ReconstructionParams(), 200.0, 128)
    crowther = n_tilts / (math.pi * 200.0)
    np.testing.assert_allclose(ramp, np.minimum(q, crowther))
    imod = weighting_filter(n_padded, n_tilts, ReconstructionParams(weighting="imod"),
                            200.0, 128)
    below = q <= 0.35
    np.testing.assert_allclose(imod[below], q[below])
    at = int(np.argmin(np.abs(q - 0.45)))
    assert imod[at] == pytest.approx(q[at] * math.exp(-((q[at] - 0.35) ** 2) / (2 * 0.05 ** 2)))
    few = weighting_filter(n_padded, n_tilts, ReconstructionParams(weighting="sirt",
                                                                   sirt_iterations=2), 200, 128)
    many = weighting_filter(n_padded, n_tilts, ReconstructionParams(weighting="sirt",
                                                                    sirt_iterations=200), 200, 128)
    assert few[0] == 0 and np.all(few <= q + 1e-12) and np.all(many >= few - 1e-12)
    assert many[-1] == pytest.approx(q[-1], rel=0.05)  # many iterations → the full ramp
    assert few[-1] < 0.1 * q[-1]  # few iterations damp high frequencies
    assert np.all(weighting_filter(n_padded, n_tilts, ReconstructionParams(weighting="none"),
                                   200, 128) == 1)


def test_tilt_weights_integrate_the_angular_range() -> None:
    weights = tilt_weights_rad(ANGLES)
    assert weights[20] == pytest.approx(math.radians(3))
    assert weights.sum() == pytest.approx(math.radians(123))
    shuffled = np.array([30.0, -30.0, 0.0])
    np.testing.assert_allclose(tilt_weights_rad(shuffled), np.radians([30, 30, 30]))


def test_ctf_phase_flip_sharpens_an_underfocused_reconstruction() -> None:
    """At 15 µm the CTF changes sign twice below the band limit; flipping restores those bands."""
    phantom = _blob_phantom((24, 32, 64), seed=9)
    params = TiltSeriesParams(tilt_angles_deg=tuple(ANGLES), noise="none", ice_potential_v=0.0,
                              ice_variation_v=0.0, structural_noise_v=0.0, defocus_um=15.0)
    series = simulate_tilt_series(phantom, 1.0, params)
    reference = _wedge_filtered(phantom)
    plain, _ = reconstruct(series.projections_noisefree, ANGLES,
                           ReconstructionParams(thickness=24))
    flipped, _ = reconstruct(series.projections_noisefree, ANGLES,
                             ReconstructionParams(thickness=24, ctf_correction=True),
                             defocus_um=np.full(len(ANGLES), 15.0))
    r_plain = np.corrcoef(plain.ravel(), reference.ravel())[0, 1]
    r_flipped = np.corrcoef(flipped.ravel(), reference.ravel())[0, 1]
    assert r_flipped > r_plain + 0.03
    # Between the first and second CTF zeros (0.184 and 0.260 nm⁻¹) the plain reconstruction is
    # contrast-inverted; the flipped one is not.
    q = np.sqrt(np.fft.fftfreq(24)[:, None, None] ** 2 + np.fft.fftfreq(32)[None, :, None] ** 2
                + np.fft.fftfreq(64)[None, None, :] ** 2)
    band = (q > 0.19) & (q < 0.25)

    def in_band(volume: np.ndarray) -> np.ndarray:
        return np.fft.ifftn(np.fft.fftn(volume) * band).real.ravel()

    assert np.corrcoef(in_band(plain), in_band(reference))[0, 1] < -0.5
    assert np.corrcoef(in_band(flipped), in_band(reference))[0, 1] > 0.5
    with pytest.raises(ValueError, match="defocus"):
        reconstruct(series.projections_noisefree, ANGLES,
                    ReconstructionParams(ctf_correction=True))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="tilt angles"):
        reconstruct(np.ones((3, 4, 8)), [0.0, 1.0])
    with pytest.raises(ValueError, match="weighting"):
        ReconstructionParams(weighting="shepp")
    with pytest.raises(ValueError, match="between"):
        backproject(np.ones((1, 2, 4), np.float32), [90.0], thickness=2, axis_z=1)


def test_cli_reconstructs_a_dataset_and_a_stack(tmp_path: Path, capsys) -> None:
    from napari_shrec.core.simulate import run_simulation, simulation_params
    from napari_shrec.io.dataset import load_dataset
    from napari_shrec.io.mrc import read_mrc

    folder = tmp_path / "sim"
    run_simulation(simulation_params("small", seed=3, structure_sources=[],
                                     download_structures=False, n_particles=(8, 8),
                                     tilt_angles_deg=(-45.0, -15.0, 15.0, 45.0),
                                     shape_zyx=(32, 64, 64)), folder)
    dataset = load_dataset(folder)
    assert dataset.read_volume("reconstruction").data.shape == (32, 64, 64)  # simulate wrote it
    assert main(["reconstruct", str(folder)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["reconstruct", str(folder), "--frame", "shrec2020", "--weighting", "imod",
                 "--ctf-correct"]) == 0
    out = capsys.readouterr().out
    assert "reconstruction_shrec2020.mrc: 64×64×64" in out and "slab at z 16…47" in out
    stack = tmp_path / "stack.mrc"
    stack.write_bytes((folder / "projections.mrc").read_bytes())
    assert main(["reconstruct", str(stack)]) == 2
    assert "--tlt" in capsys.readouterr().err
    assert main(["reconstruct", str(stack), "--tlt", str(folder / "projections.tlt"),
                 "--thickness", "20"]) == 0
    rec = read_mrc(tmp_path / "stack_rec.mrc")
    assert rec.data.shape == (20, 64, 64) and rec.voxel_size_nm == pytest.approx((1, 1, 1))


def test_two_threads_can_reconstruct_at_once() -> None:
    """The compiled kernel is serialised: concurrent callers (two widgets) must not abort."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    filtered = rng.normal(size=(5, 4, 32)).astype(np.float32)
    angles = np.array([-40.0, -20.0, 0.0, 20.0, 40.0])
    expected, _ = backproject(filtered, angles, thickness=12, axis_z=6, device="cpu")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: backproject(filtered, angles, thickness=12, axis_z=6,
                                                       device="cpu")[0], range(8)))
    for result in results:
        np.testing.assert_array_equal(result, expected)

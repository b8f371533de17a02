"""Tilt-series physics: CTF zeros, SNR, weak-object limit, tilt geometry, ice without edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_shrec.core.em_physics import (
    ctf_zero_frequencies,
    electron_wavelength_nm,
    interaction_constant,
    linear_ctf,
    spatial_frequencies_sq,
)
from napari_shrec.core.tiltseries import (
    IMAGE_SNR_PER_SNR,
    TiltSeriesParams,
    image_snr,
    projected_potential_zero_tilt,
    shrec_tilt_angles,
    simulate_tilt_series,
)


def test_relativistic_constants_at_300_and_200_kv() -> None:
    assert electron_wavelength_nm(300) == pytest.approx(1.9687e-3, rel=1e-4)
    assert electron_wavelength_nm(200) == pytest.approx(2.5079e-3, rel=1e-4)
    # Kirkland (2010) Table: σ = 0.00065 rad/(V·Å) at 300 kV, 0.00073 at 200 kV.
    assert interaction_constant(300) == pytest.approx(6.526e-3, rel=1e-3)
    assert interaction_constant(200) == pytest.approx(7.288e-3, rel=1e-3)


def test_shrec_tilt_angles() -> None:
    angles = shrec_tilt_angles()
    assert len(angles) == 41 and angles[0] == -60.0 and angles[-1] == 60.0 and angles[20] == 0.0


def _thin_random_sample(shape=(10, 256, 256), amplitude_v=0.5, seed=0) -> np.ndarray:
    """White random potential, zero-mean and tapered to 0 at the lateral edges (a window), so
    the field-of-view edges add no spectrum of their own."""
    rng = np.random.default_rng(seed)
    window = np.outer(np.hanning(shape[1]), np.hanning(shape[2]))
    return (amplitude_v * (rng.random(shape) - 0.5) * window).astype(np.float32)


def _radial_profile(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spectrum = np.abs(np.fft.fft2(image - image.mean())) ** 2
    q = np.sqrt(spatial_frequencies_sq(image.shape, 1.0))
    bins = np.linspace(0, 0.5, 129)
    index = np.digitize(q.ravel(), bins)
    profile = np.array([spectrum.ravel()[index == i].mean() for i in range(1, len(bins))])
    centres = 0.5 * (bins[1:] + bins[:-1])
    return centres, profile


def test_power_spectrum_has_its_ctf_zeros_where_theory_puts_them() -> None:
    defocus_um = 20.0  # four zeros below the multislice band limit (2/3 of Nyquist)
    params = TiltSeriesParams(tilt_angles_deg=(0.0,), defocus_um=defocus_um,
                              envelope_fraction_of_nyquist=None, noise="none",
                              ice_potential_v=0.0, ice_variation_v=0.0, structural_noise_v=0.0)
    series = simulate_tilt_series(_thin_random_sample(), 1.0, params)
    q, profile = _radial_profile(series.projections_noisefree[0])
    zeros = ctf_zero_frequencies(0.32, wavelength_nm=electron_wavelength_nm(300),
                                 defocus_nm=defocus_um * 1e3, cs_nm=2.7e6,
                                 amplitude_contrast=0.08)
    assert len(zeros) >= 4
    for zero in zeros:  # a local minimum of the radial power within one bin of each zero
        window = (q > zero - 0.02) & (q < zero + 0.02)
        q_min = q[window][np.argmin(profile[window])]
        assert abs(q_min - zero) <= 0.0045, (zero, q_min)


def test_noise_free_image_matches_the_weak_object_ctf_model() -> None:
    """First order: I ≈ 1 + 2σ F⁻¹[P̂ · CTF] — sign included (proteins dark in underfocus)."""
    volume = np.zeros((10, 128, 128), dtype=np.float32)
    z, y, x = np.indices(volume.shape)
    volume[((y - 64) ** 2 + (x - 64) ** 2 <= 64) & (abs(z - 5) <= 3)] = 0.2
    params = TiltSeriesParams(tilt_angles_deg=(0.0,), noise="none", ice_potential_v=0.0,
                              ice_variation_v=0.0, structural_noise_v=0.0,
                              envelope_fraction_of_nyquist=None, slice_thickness_nm=1.0)
    image = simulate_tilt_series(volume, 1.0, params).projections_noisefree[0]
    projected = projected_potential_zero_tilt(volume, 1.0)
    q_sq = spatial_frequencies_sq(projected.shape, 1.0)
    ctf = linear_ctf(q_sq, wavelength_nm=electron_wavelength_nm(300), defocus_nm=3000.0,
                     cs_nm=2.7e6, amplitude_contrast=0.08)
    band = q_sq <= (2 / 3 * 0.5) ** 2  # the multislice band limit
    predicted = 1 + 2 * interaction_constant(300) * np.fft.ifft2(np.fft.fft2(projected)
                                                                  * ctf * band).real
    contrast, model = image - image.mean(), predicted - predicted.mean()
    assert np.corrcoef(contrast.ravel(), model.ravel())[0, 1] > 0.98
    assert float((contrast * model).sum() / (model * model).sum()) == pytest.approx(1.0, abs=0.1)
    assert image[64, 64] < image.mean()  # dark particle


def test_zero_defocus_amplitude_image_is_the_projected_potential() -> None:
    """With no aberrations the image is the absorption image exp(−2σaP): the z-integral of V."""
    rng = np.random.default_rng(3)
    volume = np.zeros((20, 64, 64), dtype=np.float32)
    for _ in range(6):
        cz, cy, cx = rng.integers(5, 15), rng.integers(10, 54), rng.integers(10, 54)
        z, y, x = np.indices(volume.shape)
        volume += 3.0 * (((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) <= 16)
    params = TiltSeriesParams(tilt_angles_deg=(0.0,), noise="none", defocus_um=0.0, cs_mm=0.0,
                              amplitude_contrast=0.5, ice_potential_v=0.0, ice_variation_v=0.0,
                              structural_noise_v=0.0, envelope_fraction_of_nyquist=None)
    image = simulate_tilt_series(volume, 1.0, params).projections_noisefree[0]
    a = 0.5 / math.sqrt(1 - 0.25)
    recovered = -np.log(image) / (2 * interaction_constant(300) * a)
    projected = projected_potential_zero_tilt(volume, 1.0)
    assert np.corrcoef(recovered.ravel(), projected.ravel())[0, 1] > 0.99
    assert recovered.sum() / projected.sum() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("angle", [-45.0, 0.0, 30.0, 60.0])
def test_a_particle_projects_where_the_tilt_geometry_says(angle: float) -> None:
    """x' = dx cos θ + dz sin θ about the volume centre (n // 2), tilt axis y."""
    volume = np.zeros((40, 48, 96), dtype=np.float32)
    dz, dx, dy = 12, -15, 5
    z, y, x = np.indices(volume.shape)
    volume[((z - 20 - dz) ** 2 + (y - 24 - dy) ** 2 + (x - 48 - dx) ** 2) <= 4] = 10.0
    params = TiltSeriesParams(tilt_angles_deg=(angle,), noise="none", defocus_um=0.0, cs_mm=0.0,
                              amplitude_contrast=0.5, ice_potential_v=0.0, ice_variation_v=0.0,
                              structural_noise_v=0.0, envelope_fraction_of_nyquist=None)
    image = simulate_tilt_series(volume, 1.0, params).projections_noisefree[0]
    darkness = 1.0 - image
    iy, ix = np.unravel_index(np.argmax(darkness), darkness.shape)
    theta = math.radians(angle)
    assert iy == 24 + dy
    assert ix - 48 == pytest.approx(dx * math.cos(theta) + dz * math.sin(theta), abs=1.0)


def test_ice_slab_has_no_edges_at_high_tilt_and_thickens_with_tilt() -> None:
    empty = np.zeros((50, 32, 128), dtype=np.float32)
    params = TiltSeriesParams(tilt_angles_deg=(0.0, 60.0), noise="none", ice_variation_v=0.0,
                              structural_noise_v=0.0)
    series = simulate_tilt_series(empty, 1.0, params)
    for image in series.projections_noisefree:
        # Uniform up to the multislice's stair-stepped slab surfaces (0.13 % at 60°): the slab
        # is infinite in x and y, so no edges appear.
        assert image.std() < 2e-3 * image.mean()
    # Absorption through twice the path (1 / cos 60°) darkens: mean(60°) ≈ mean(0°)².
    flat, tilted = (float(image.mean()) for image in series.projections_noisefree)
    assert tilted == pytest.approx(flat ** 2, rel=0.01)


def test_detector_snr_and_dose_mode() -> None:
    volume = _thin_random_sample((20, 96, 96), amplitude_v=2.0)
    series = simulate_tilt_series(volume, 1.0, TiltSeriesParams(
        tilt_angles_deg=(-30.0, 0.0, 30.0), snr=0.004, seed=5))
    # snr is on the paper's scale: the image ratio is IMAGE_SNR_PER_SNR (75) times it
    assert IMAGE_SNR_PER_SNR == 75.0 and image_snr(0.004) == pytest.approx(0.3)
    for noisy, clean in zip(series.projections, series.projections_noisefree):
        measured = clean.var() / (noisy - clean).var()
        assert measured == pytest.approx(0.3, rel=0.10)
    assert series.measured_snr == pytest.approx((0.004,) * 3, rel=0.10)
    dose = simulate_tilt_series(volume, 1.0, TiltSeriesParams(
        tilt_angles_deg=(0.0,), noise="dose", dose_per_tilt_e_per_nm2=100.0))
    noise = dose.projections[0] - dose.projections_noisefree[0]
    # Poisson: variance of counts/expected = intensity / expected.
    assert noise.var() == pytest.approx(dose.projections_noisefree[0].mean() / 100.0, rel=0.1)
    assert np.allclose(dose.projections[0] * 100.0, np.round(dose.projections[0] * 100.0),
                       atol=1e-3)


def test_same_seed_same_series_and_jitter_is_recorded() -> None:
    volume = _thin_random_sample((20, 48, 48))
    params = TiltSeriesParams(tilt_angles_deg=(-3.0, 0.0, 3.0), seed=11, defocus_jitter_um=0.2)
    first = simulate_tilt_series(volume, 1.0, params)
    again = simulate_tilt_series(volume, 1.0, params)
    np.testing.assert_array_equal(first.projections, again.projections)
    assert first.defocus_um == again.defocus_um and len(set(first.defocus_um)) == 3
    other = simulate_tilt_series(volume, 1.0, TiltSeriesParams(
        tilt_angles_deg=(-3.0, 0.0, 3.0), seed=12))
    assert not np.array_equal(first.projections, other.projections)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="snr"):
        TiltSeriesParams(snr=0)
    with pytest.raises(ValueError, match="amplitude_contrast"):
        TiltSeriesParams(amplitude_contrast=1.0)
    with pytest.raises(ValueError, match="tilt_angles_deg"):
        TiltSeriesParams(tilt_angles_deg=(90.0,))
    with pytest.raises(ValueError, match="slice_thickness_nm"):
        simulate_tilt_series(np.zeros((4, 8, 8), np.float32), 2.0,
                             TiltSeriesParams(slice_thickness_nm=5.0))


def _backend_sample() -> np.ndarray:
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 48, 96), dtype=np.float32)
    z, y, x = np.indices(volume.shape)
    for _ in range(8):
        c = rng.integers(5, [35, 43, 91])
        volume += 6.0 * (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= 9)
    volume[:, :, :3] = 4.0  # a particle cut by the volume's edge
    return volume


def _compare_backends(device: str) -> None:
    kwargs = dict(tilt_angles_deg=(-60.0, -20.0, 0.0, 45.0), noise="none",
                  structural_noise_v=0.0, ice_variation_v=0.0)
    volume = _backend_sample()
    reference = simulate_tilt_series(volume, 1.0, TiltSeriesParams(device="cpu", **kwargs))
    other = simulate_tilt_series(volume, 1.0, TiltSeriesParams(device=device, **kwargs))
    assert other.device == device and reference.device == "cpu"
    for ours, theirs in zip(reference.projections_noisefree, other.projections_noisefree):
        # Stated tolerance: 1 % of the image contrast's standard deviation (torch-cpu: 0.1 %).
        assert np.abs(ours - theirs).max() < 0.01 * ours.std()


def test_torch_backend_agrees_with_numpy_on_the_cpu() -> None:
    pytest.importorskip("torch")
    _compare_backends("torch-cpu")


@pytest.mark.gpu
def test_cuda_backend_agrees_with_numpy() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _compare_backends("cuda")
    from napari_shrec.core.tiltseries import resolve_device

    assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("angle", [-60.0, -7.0, 0.0, 33.0, 60.0])
def test_rotation_kernel_equals_scipys_spline_interpolation(angle: float) -> None:
    # the numpy backend's numba kernel against scipy.ndimage.affine_transform (order 3,
    # mode "constant", no prefilter), borders and points outside the plane included
    from scipy import ndimage

    from napari_shrec.core.tiltseries import (
        _rotate_rows,
        _rotation_taps,
        _spline_coefficients,
        _tilt_geometry,
    )

    rng = np.random.default_rng(7)
    volume = rng.normal(size=(20, 6, 30)).astype(np.float32)
    volume[:, :, :2] = 5.0  # values at the plane's edge
    coefficients = _spline_coefficients(volume)  # (z + pad, y, x + pad)
    geometry = _tilt_geometry(angle, volume.shape, 2, 24.0)
    rows = (geometry.box_stop - geometry.box_start) * geometry.slice_vox
    taps = _rotation_taps(geometry, rows, volume.shape[2], coefficients.shape[0],
                          coefficients.shape[2])
    ours = np.empty((4, rows, volume.shape[2]), dtype=np.float32)
    _rotate_rows(np.ascontiguousarray(coefficients.transpose(0, 2, 1)), 1, taps, ours)
    for j in range(4):
        want = ndimage.affine_transform(coefficients[:, 1 + j, :], geometry.matrix,
                                        offset=geometry.offset,
                                        output_shape=(rows, volume.shape[2]), order=3,
                                        mode="constant", cval=0.0, prefilter=False)
        assert np.count_nonzero(want) > want.size // 3
        # (at the plane's very border, where the padding's coefficient tails are ~1e-4 of the
        # data, scipy's rule for "outside" differs by a fraction of a voxel)
        np.testing.assert_allclose(ours[j], want, atol=1e-4 * np.abs(want).max())
        inner = np.abs(want) > 1e-3 * np.abs(want).max()
        np.testing.assert_allclose(ours[j][inner], want[inner], rtol=1e-4,
                                   atol=1e-6 * np.abs(want).max())

"""Potentials from atoms and maps, shape metrics and surrogates: numbers, not just runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_shrec.core.atomic_model import AtomicModel, AtomicModelError, read_atomic_model
from napari_shrec.core.classes import SHREC20_TABLE
from napari_shrec.core.map_compare import best_translation_ncc, lowpass_to_resolution
from napari_shrec.core.potential import (
    POTENTIAL_CONSTANT_V_A2,
    PROTEIN_POTENTIAL_PER_KDA_V_NM3,
    potential_from_atoms,
    potential_from_map,
    resolution_to_b_factor,
)
from napari_shrec.core.shape_metrics import shape_metrics
from napari_shrec.core.surrogates import (
    SPHERICITY_TOLERANCE,
    VOLUME_TOLERANCE,
    SurrogateError,
    surrogate_potential,
)

SHARED_IDS = ("1s3x", "3qm1", "3gl1", "3h84", "2cg9", "3d2f", "1u6g", "3cf3", "1bxn", "1qvr")


def _model(elements: list[str], positions_xyz_a: np.ndarray) -> AtomicModel:
    import gemmi

    a = np.array([gemmi.Element(e).c4322.a for e in elements], dtype=np.float64)
    b = np.array([gemmi.Element(e).c4322.b for e in elements], dtype=np.float64)
    n = len(elements)
    masses = np.array([gemmi.Element(e).weight for e in elements])
    return AtomicModel(positions_xyz_a=np.asarray(positions_xyz_a, dtype=np.float64),
                       scattering_a=a, scattering_b=b, hydrogens=np.zeros(n),
                       occupancy=np.ones(n), b_factors_a2=np.full(n, 30.0), masses_da=masses,
                       source_path=Path("synthetic"), assembly="deposited")


def _point_sampled_voxel_means(model: AtomicModel, n: int, voxel_a: float, centre_a: np.ndarray,
                               sub: int = 16, extra_b: float = 0.0) -> np.ndarray:
    """Midpoint-rule voxel averages of the Peng potential, independent of the erf code."""
    offsets = ((np.arange(n * sub) + 0.5) / sub - n / 2.0) * voxel_a  # Å, centred grid
    z, y, x = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    values = np.zeros_like(z)
    for pos, a_row, b_row in zip(model.positions_xyz_a - centre_a, model.scattering_a,
                                 model.scattering_b):
        r2 = (x - pos[0]) ** 2 + (y - pos[1]) ** 2 + (z - pos[2]) ** 2
        for a_i, b_i in zip(a_row, b_row + extra_b):
            values += POTENTIAL_CONSTANT_V_A2 * a_i * (4 * math.pi / b_i) ** 1.5 \
                * np.exp(-4 * math.pi ** 2 * r2 / b_i)
    return values.reshape(n, sub, n, sub, n, sub).mean(axis=(1, 3, 5))


def test_integrated_potential_is_k_times_scattering_amplitude_at_zero() -> None:
    model = _model(["C", "N", "O", "S"], np.array([[0, 0, 0], [3.1, 0.4, -2], [7, 5, 1],
                                                    [-4, 2.2, 6]]))
    potential, info = potential_from_atoms(model, voxel_size_nm=0.5)
    expected_v_nm3 = POTENTIAL_CONSTANT_V_A2 * model.scattering_a.sum() / 1000.0
    assert info.integrated_v_nm3 == pytest.approx(expected_v_nm3, rel=1e-6)
    # A B-factor spreads the potential but keeps its integral.
    _, blurred = potential_from_atoms(model, voxel_size_nm=0.5, b_factor_a2=80.0)
    assert blurred.integrated_v_nm3 == pytest.approx(expected_v_nm3, rel=1e-6)
    assert potential.dtype == np.float32 and potential.shape[0] % 2 == 1
    assert len(set(potential.shape)) == 1
    # No margin and atoms half a voxel off the grid: the box still holds every Gaussian tail.
    edge_case = _model(["C", "C"], np.array([[0.0, 0.0, 0.0], [23.0, -23.0, 23.0]]))
    tight, tight_info = potential_from_atoms(edge_case, voxel_size_nm=1.0, margin_nm=0.0)
    assert tight_info.integrated_v_nm3 == pytest.approx(
        POTENTIAL_CONSTANT_V_A2 * edge_case.scattering_a.sum() / 1000.0, rel=1e-6)
    assert tight.sum() > 0 and tight.shape[0] % 2 == 1


def test_voxel_averages_match_point_sampling_and_beat_aliasing() -> None:
    """erf integration equals a fine midpoint rule; centre sampling would be far off."""
    model = _model(["C", "O"], np.array([[0.0, 0.0, 0.0], [3.7, -2.1, 1.3]]))
    # B = 20 Å² makes every Gaussian wide enough (σ ≥ 0.5 Å) for a 0.19 Å midpoint rule.
    potential, info = potential_from_atoms(model, voxel_size_nm=0.3, margin_nm=0.3,
                                           b_factor_a2=20.0)
    n = potential.shape[0]
    centre = model.centre_of_mass_xyz_a()
    reference = _point_sampled_voxel_means(model, n, 3.0, centre, extra_b=20.0)
    coarse = _point_sampled_voxel_means(model, n, 3.0, centre, sub=8, extra_b=20.0)
    error_16 = np.abs(potential - reference).max() / reference.max()
    error_8 = np.abs(potential - coarse).max() / reference.max()
    # The midpoint rule converges quadratically onto the erf result (0.3 %, then 1.2 %).
    assert error_16 < 5e-3
    assert error_8 / error_16 > 3.5
    centre_only = _point_sampled_voxel_means(model, n, 3.0, centre, sub=1, extra_b=20.0)
    assert np.abs(centre_only - reference).max() > 0.2 * reference.max()


def test_resolution_blur_matches_equivalent_b_factor() -> None:
    model = _model(["C", "N"], np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]))
    blur_b = resolution_to_b_factor(1.0)
    assert blur_b == pytest.approx(8 * math.pi ** 2 * (10.0 / (math.pi * math.sqrt(2))) ** 2)
    by_resolution, _ = potential_from_atoms(model, voxel_size_nm=0.5, resolution_nm=1.0)
    by_b, _ = potential_from_atoms(model, voxel_size_nm=0.5, b_factor_a2=blur_b)
    np.testing.assert_allclose(by_resolution, by_b, rtol=1e-6, atol=1e-7)
    sharp, _ = potential_from_atoms(model, voxel_size_nm=0.5)
    assert by_resolution.max() < 0.6 * sharp.max()


def test_atom_b_factors_option_uses_the_file_values() -> None:
    model = _model(["C"], np.zeros((1, 3)))
    own, _ = potential_from_atoms(model, voxel_size_nm=0.2, use_atom_b_factors=True)
    global_b, _ = potential_from_atoms(model, voxel_size_nm=0.2, b_factor_a2=30.0)
    np.testing.assert_allclose(own, global_b, rtol=1e-6, atol=1e-7)


def test_bad_potential_parameters_are_named() -> None:
    model = _model(["C"], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="voxel_size_nm"):
        potential_from_atoms(model, voxel_size_nm=0)
    with pytest.raises(ValueError, match="b_factor_a2"):
        potential_from_atoms(model, voxel_size_nm=1, b_factor_a2=-1)


def test_unreadable_atomic_model_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pdb"
    bad.write_text("this is not a structure\n")
    with pytest.raises(AtomicModelError, match="broken.pdb"):
        read_atomic_model(bad)


def test_assembly_choice_and_hydrogens(structures_dir: Path) -> None:
    pdb = structures_dir / "pdb"
    # 3gl1 and 3d2f: Table 1 weights are those of the deposited models (two copies each).
    for pdb_id, expected in (("3gl1", "deposited"), ("3d2f", "deposited"), ("1bxn", "1"),
                             ("3qm1", "1")):
        weight = SHREC20_TABLE.by_name(pdb_id).weight_kda
        model = read_atomic_model(pdb / f"{pdb_id}.pdb", expected_mass_kda=weight)
        assert model.assembly == expected, pdb_id
        assert model.mass_kda == pytest.approx(weight, rel=0.15), pdb_id
    plain = read_atomic_model(pdb / "1s3x.pdb", implicit_hydrogens=False)
    with_h = read_atomic_model(pdb / "1s3x.pdb")
    assert with_h.n_atoms == plain.n_atoms  # hydrogens ride on their heavy atoms
    assert 1.06 < with_h.mass_kda / plain.mass_kda < 1.09  # H ≈ 7-8 % of a protein's mass
    assert read_atomic_model(pdb / "1bxn.pdb", assembly="deposited").n_atoms * 2 == \
        read_atomic_model(pdb / "1bxn.pdb", assembly="1").n_atoms
    with pytest.raises(AtomicModelError, match="no assembly '7'"):
        read_atomic_model(pdb / "1bxn.pdb", assembly="7")
    # Waters and ions are gone: 3qm1 carries dozens of Na+ in its file.
    assert "Na" not in read_atomic_model(pdb / "3qm1.pdb").elements


@pytest.fixture(scope="module")
def shared_maps() -> dict[str, tuple[np.ndarray, AtomicModel]]:
    from conftest import STRUCTURES

    if not STRUCTURES.is_dir():
        pytest.skip("test structures not found (../shared/structures)")
    maps = {}
    for pdb_id in SHARED_IDS:
        weight = SHREC20_TABLE.by_name(pdb_id).weight_kda
        model = read_atomic_model(STRUCTURES / "pdb" / f"{pdb_id}.pdb", expected_mass_kda=weight)
        maps[pdb_id] = potential_from_atoms(model, voxel_size_nm=1.0)[0], model
    return maps


def test_integrated_potential_is_proportional_to_table1_weight(shared_maps) -> None:
    per_kda = {pdb_id: potential.sum(dtype=np.float64) / SHREC20_TABLE.by_name(pdb_id).weight_kda
               for pdb_id, (potential, _) in shared_maps.items()}
    common = float(np.median(list(per_kda.values())))
    for pdb_id, value in per_kda.items():
        assert abs(value / common - 1.0) < 0.10, (pdb_id, value, common)
    # Against each model's own mass the constant is tight, and it is the library's constant.
    own = [potential.sum(dtype=np.float64) / model.mass_kda
           for potential, model in shared_maps.values()]
    assert np.ptp(own) / np.mean(own) < 0.02
    assert np.mean(own) == pytest.approx(PROTEIN_POTENTIAL_PER_KDA_V_NM3, rel=0.01)


def test_shape_volumes_are_close_to_table1(shared_maps) -> None:
    for pdb_id, (potential, _) in shared_maps.items():
        cls = SHREC20_TABLE.by_name(pdb_id)
        metrics = shape_metrics(potential, 1.0)
        assert abs(metrics.volume_nm3 / cls.volume_nm3 - 1.0) < 0.10, (pdb_id, metrics)
        assert abs(metrics.sphericity - cls.sphericity) < 0.10, (pdb_id, metrics)
        assert metrics.effective_radius_nm == pytest.approx(3 * metrics.volume_nm3
                                                            / metrics.area_nm2)
        assert metrics.bounding_radius_nm < potential.shape[0] / 2


def test_shapes_correlate_with_independent_polnet_maps(shared_maps, structures_dir) -> None:
    """PolNet's maps (EMAN2, 30 Å) are of the deposited models, so compare those."""
    from napari_shrec.io.mrc import read_mrc

    for pdb_id in SHARED_IDS:
        model = read_atomic_model(structures_dir / "pdb" / f"{pdb_id}.pdb", assembly="deposited")
        ours, _ = potential_from_atoms(model, voxel_size_nm=1.0)
        reference = read_mrc(structures_dir / "polnet_maps_10A" / f"{pdb_id}.mrc", mmap=False)
        assert reference.voxel_size_nm == pytest.approx((1.0, 1.0, 1.0))
        ncc, _ = best_translation_ncc(lowpass_to_resolution(ours, 3.0, 1.0),
                                      lowpass_to_resolution(np.asarray(reference.data), 3.0, 1.0))
        assert ncc >= 0.8, (pdb_id, ncc)


def test_best_translation_ncc_finds_the_shift() -> None:
    rng = np.random.default_rng(0)
    a = np.zeros((24, 24, 24))
    a[6:18, 6:18, 6:18] = lowpass_to_resolution(rng.normal(size=(12, 12, 12)), 1.0, 0.5)
    b = np.roll(a, (2, -3, 1), axis=(0, 1, 2))  # the content stays clear of the edges
    ncc, shift = best_translation_ncc(a, b)
    assert shift == (-2, 3, -1)
    assert ncc == pytest.approx(1.0, abs=1e-3)
    assert best_translation_ncc(a, -a)[0] < 0.3


def test_map_resampling_centres_and_keeps_mass() -> None:
    """An off-centre blob at 0.4 nm ends up centred at 1 nm with the requested integral."""
    n = 60
    z, y, x = np.indices((n, n, n)) * 0.4
    blob = np.exp(-((x - 9.0) ** 2 + (y - 14.0) ** 2 + (z - 11.0) ** 2) / (2 * 1.5 ** 2))
    potential, info = potential_from_map(blob + 0.3, 0.4, target_voxel_size_nm=1.0,
                                         mass_kda=100.0)
    c = potential.shape[0] // 2
    assert np.unravel_index(np.argmax(potential), potential.shape) == (c, c, c)
    assert info.integrated_v_nm3 == pytest.approx(PROTEIN_POTENTIAL_PER_KDA_V_NM3 * 100, rel=1e-5)
    assert info.centre_xyz_nm == pytest.approx((9.0, 14.0, 11.0), abs=0.05)
    unscaled, unscaled_info = potential_from_map(blob, 0.4, target_voxel_size_nm=1.0)
    # Without rescaling the units stay: the integral is the blob's (2π σ²)^{3/2}.
    assert unscaled_info.integrated_v_nm3 == pytest.approx((2 * math.pi * 1.5 ** 2) ** 1.5,
                                                           rel=0.02)
    with pytest.raises(ValueError, match="no density"):
        potential_from_map(np.zeros((8, 8, 8)), 1.0, target_voxel_size_nm=1.0)


def test_shape_metrics_of_a_ball() -> None:
    n, voxel, radius = 81, 0.25, 7.0
    offsets = (np.arange(n) - n // 2) * voxel
    z, y, x = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    ball = (x ** 2 + y ** 2 + z ** 2 <= radius ** 2).astype(np.float32) * 5.0
    metrics = shape_metrics(ball, voxel)
    assert metrics.volume_nm3 == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.01)
    # Marching cubes on a binary mask cuts the voxel staircase's corners but not all of it: the
    # area of a finely sampled ball comes out 8.5 % high, its sphericity 0.92 (documented).
    assert metrics.area_nm2 == pytest.approx(1.085 * 4 * math.pi * radius ** 2, rel=0.01)
    assert 0.9 < metrics.sphericity < 0.95
    assert metrics.bounding_radius_nm == pytest.approx(radius, abs=2 * voxel)
    assert metrics.equivalent_radius_nm == pytest.approx(radius, rel=0.01)
    with pytest.raises(ValueError, match="threshold"):
        shape_metrics(ball * 0.01, voxel)


@pytest.mark.parametrize("cls", list(SHREC20_TABLE), ids=lambda c: c.name)
def test_surrogates_match_table1_volume_and_sphericity(cls) -> None:
    potential, metrics, shape = surrogate_potential(
        volume_nm3=cls.volume_nm3, sphericity=cls.sphericity, mass_kda=cls.weight_kda,
        voxel_size_nm=1.0, name=cls.name)
    assert abs(metrics.volume_nm3 / cls.volume_nm3 - 1.0) <= VOLUME_TOLERANCE
    assert abs(metrics.sphericity - cls.sphericity) <= SPHERICITY_TOLERANCE
    assert metrics.integrated_potential_v_nm3 == pytest.approx(
        PROTEIN_POTENTIAL_PER_KDA_V_NM3 * cls.weight_kda, rel=1e-4)
    c = potential.shape[0] // 2
    assert potential[c].sum() > 0 and potential.shape[0] % 2 == 1


def test_surrogates_are_deterministic_and_voxel_size_independent_bodies() -> None:
    cls = SHREC20_TABLE.by_name("4d8q")
    kwargs = dict(volume_nm3=cls.volume_nm3, sphericity=cls.sphericity, mass_kda=cls.weight_kda)
    first, _, shape_1 = surrogate_potential(voxel_size_nm=1.0, **kwargs)
    again, _, _ = surrogate_potential(voxel_size_nm=1.0, **kwargs)
    np.testing.assert_array_equal(first, again)
    fine, fine_metrics, shape_half = surrogate_potential(voxel_size_nm=0.5, **kwargs)
    assert shape_half == shape_1  # fitted at Table 1's 1 nm, rendered at 0.5 nm
    assert fine_metrics.integrated_potential_v_nm3 == pytest.approx(
        PROTEIN_POTENTIAL_PER_KDA_V_NM3 * cls.weight_kda, rel=1e-4)
    with pytest.raises(SurrogateError, match="sphericity"):
        surrogate_potential(volume_nm3=100.0, sphericity=None, mass_kda=10.0,
                            voxel_size_nm=1.0)

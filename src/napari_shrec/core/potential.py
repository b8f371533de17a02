"""Electrostatic potential maps, in volts, from atomic models or from density maps.

Physics (Peng 1999; Kirkland, *Advanced Computing in Electron Microscopy*). An atom's electron
scattering amplitude is fitted by five Gaussians, f(s) = Σ aᵢ exp(−bᵢ s²) with s = sin θ / λ in
Å⁻¹, aᵢ in Å and bᵢ in Å² (Peng et al. 1996; gemmi's ``Element.c4322`` tables). Its Fourier
transform is the atom's potential

    V(r) = K · Σ aᵢ (4π / bᵢ)^{3/2} exp(−4π² r² / bᵢ),   K = h² / (2π m₀ e) = 47.878 V·Å²,

so each term is a 3D Gaussian with σᵢ² = bᵢ / (8π²), and the potential integrated over space is
K · f(0) V·Å³. An isotropic B-factor adds to every bᵢ.

Voxel integration. The map holds, per voxel, the potential *averaged over the voxel* (in V), not
sampled at its centre: at 1 nm voxels an atom's Gaussians are ~1 Å wide, and point sampling
would alias them into noise. Averaging a Gaussian over a box is a product of three error-function
differences, which :func:`potential_from_atoms` evaluates exactly per atom over a small window.
Consequently the map's sum times the voxel volume equals K · Σ f(0) to rounding error.

Resolution. ``resolution_nm`` blurs with a Gaussian of σ = 0.225 · resolution (UCSF Chimera's
``molmap`` convention, σ = d / (π √2)), applied as an extra B = 8π²σ².

Box. Maps are cubic with an odd edge; the assembly's centre of mass sits at the centre voxel
(index n // 2 along each axis, array order z, y, x). The box holds every atom's voxel, its window of
four σ of the widest Gaussian and ``margin_nm``, so any rotation about the centre stays inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .atomic_model import AtomicModel
from .progress import CancelToken, ProgressCallback, ProgressReporter

__all__ = [
    "POTENTIAL_CONSTANT_V_A2",
    "MOLMAP_SIGMA_PER_RESOLUTION",
    "PROTEIN_POTENTIAL_PER_KDA_V_NM3",
    "PotentialInfo",
    "potential_from_atoms",
    "potential_from_map",
    "resolution_to_b_factor",
]

POTENTIAL_CONSTANT_V_A2 = 47.878  # h² / (2π m₀ e) in V·Å² (non-relativistic; Kirkland 2010)
MOLMAP_SIGMA_PER_RESOLUTION = 1.0 / (math.pi * math.sqrt(2.0))  # ≈ 0.225, Chimera molmap
PROTEIN_POTENTIAL_PER_KDA_V_NM3 = 9.76
"""Integrated potential per kDa of protein (V·nm³/kDa), hydrogens included: the mean of the ten
SHREC'20 atomic models in the shared test set, computed by :func:`potential_from_atoms` with
implicit hydrogens and divided by each model's own mass (all within ±0.5 % of it). Used to put maps
of arbitrary units and surrogate shapes on the same scale."""

_ATOM_CHUNK_ELEMENTS = 8_000_000  # bound on the per-chunk work array (atoms × terms × window³)


@dataclass(frozen=True)
class PotentialInfo:
    """How a potential map was made.

    Attributes:
        voxel_size_nm: isotropic voxel size.
        shape: (n, n, n).
        centre_xyz_nm: where the centre voxel sits in the source's frame (x, y, z) in nm.
        integrated_v_nm3: sum of the map times the voxel volume (V·nm³).
        extra_b_a2: the B-factor (Å²) added to every atom (global + resolution blur).
    """

    voxel_size_nm: float
    shape: tuple[int, int, int]
    centre_xyz_nm: tuple[float, float, float]
    integrated_v_nm3: float
    extra_b_a2: float


def resolution_to_b_factor(resolution_nm: float | None) -> float:
    """B-factor (Å²) of the Gaussian blur for a resolution in nm (molmap's σ = 0.225·d)."""
    if resolution_nm is None or resolution_nm <= 0:
        return 0.0
    sigma_a = MOLMAP_SIGMA_PER_RESOLUTION * resolution_nm * 10.0
    return 8.0 * math.pi ** 2 * sigma_a ** 2


def _scatterers(model: AtomicModel, b_extra_a2: float, use_atom_b_factors: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions (m, 3) Å, amplitudes (m, 5) Å, widths b (m, 5) Å²) of atoms and implicit H."""
    b_add = np.full(model.n_atoms, b_extra_a2, dtype=np.float64)
    if use_atom_b_factors:
        b_add = b_add + np.clip(model.b_factors_a2, 0.0, None)
    positions = model.positions_xyz_a
    amplitudes = model.scattering_a * model.occupancy[:, None]
    widths = model.scattering_b + b_add[:, None]
    has_h = model.hydrogens > 0
    if has_h.any():
        h_a, h_b = model.hydrogen_scattering_ab
        weight = (model.hydrogens * model.occupancy)[has_h]
        positions = np.concatenate([positions, positions[has_h]])
        amplitudes = np.concatenate([amplitudes, weight[:, None] * h_a[None, :]])
        widths = np.concatenate([widths, h_b[None, :] + b_add[has_h][:, None]])
    return positions, amplitudes, widths


def _box_edge(radius_a: float, voxel_a: float) -> int:
    return 2 * int(math.ceil(radius_a / voxel_a)) + 1


def potential_from_atoms(
    model: AtomicModel,
    *,
    voxel_size_nm: float,
    b_factor_a2: float = 0.0,
    use_atom_b_factors: bool = False,
    resolution_nm: float | None = None,
    margin_nm: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, PotentialInfo]:
    """Voxel-averaged electrostatic potential (V) of an atomic model, centred on its centre of mass.

    Args:
        model: atoms from :func:`~napari_shrec.core.atomic_model.read_atomic_model`.
        voxel_size_nm: edge of the cubic voxels in nm (> 0).
        b_factor_a2: isotropic B-factor (Å²) added to every atom (≥ 0).
        use_atom_b_factors: also add each atom's B-factor from the file.
        resolution_nm: optional Gaussian blur (molmap convention), see the module docstring.
        margin_nm: empty space around the atoms (beyond the Gaussian tails), ≥ 0.
        progress, cancel: see :mod:`napari_shrec.core.progress`.

    Returns:
        ``(potential, info)``: float32 array (z, y, x) of shape (n, n, n), n odd, and its
        :class:`PotentialInfo`.
    """
    from scipy.special import erf

    if not voxel_size_nm > 0:
        raise ValueError(f"voxel_size_nm must be > 0, got {voxel_size_nm}")
    if b_factor_a2 < 0 or margin_nm < 0:
        raise ValueError("b_factor_a2 and margin_nm must be ≥ 0")
    voxel_a = voxel_size_nm * 10.0
    extra_b = b_factor_a2 + resolution_to_b_factor(resolution_nm)
    positions, amplitudes, widths = _scatterers(model, extra_b, use_atom_b_factors)
    sigmas = np.sqrt(widths / (8.0 * math.pi ** 2))  # Å, (m, 5)
    sigma_max = float(sigmas.max())

    centre = model.centre_of_mass_xyz_a()
    relative = positions - centre  # Å, (m, 3) x, y, z
    radius = float(np.sqrt((relative ** 2).sum(axis=1)).max())
    half_window = max(1, int(math.ceil(4.0 * sigma_max / voxel_a)))
    window = 2 * half_window + 1
    # Half the box edge, in voxels: the farthest atom's voxel, its Gaussian window, the margin.
    c = (int(math.ceil(radius / voxel_a + 0.5)) + half_window
         + int(math.ceil(margin_nm * 10.0 / voxel_a)))
    n = 2 * c + 1
    offsets = np.arange(-half_window, half_window + 1)
    edge_offsets = np.arange(-half_window, half_window + 2) - 0.5  # voxel edges, in voxels

    # Position in voxel units from the centre voxel, and the nearest voxel index per axis.
    position_vox = relative / voxel_a + c  # (m, 3), x, y, z
    nearest = np.rint(position_vox).astype(np.int64)
    scale = POTENTIAL_CONSTANT_V_A2 / voxel_a ** 3  # V per (Å of amplitude) per unit overlap
    inv_root2_sigma = 1.0 / (math.sqrt(2.0) * sigmas / voxel_a)  # in voxel units, (m, 5)

    total = n ** 3
    potential = np.zeros(total, dtype=np.float64)
    n_terms = amplitudes.shape[1]
    chunk = max(1, _ATOM_CHUNK_ELEMENTS // (n_terms * window ** 3))
    n_chunks = int(math.ceil(len(positions) / chunk))
    reporter = ProgressReporter(n_chunks, progress, cancel)
    for start in range(0, len(positions), chunk):
        stop = min(start + chunk, len(positions))
        sl = slice(start, stop)
        factors = []
        for axis in range(3):  # x, y, z
            edges = nearest[sl, axis, None] + edge_offsets[None, :] - position_vox[sl, axis, None]
            cdf = erf(edges[:, None, :] * inv_root2_sigma[sl, :, None])  # (m, 5, window + 1)
            factors.append(0.5 * np.diff(cdf, axis=2))  # (m, 5, window)
        fx, fy, fz = factors
        weights = np.einsum("mg,mga,mgb,mgc->mabc", amplitudes[sl] * scale, fz, fy, fx,
                            optimize=True)
        iz = nearest[sl, 2, None] + offsets[None, :]
        iy = nearest[sl, 1, None] + offsets[None, :]
        ix = nearest[sl, 0, None] + offsets[None, :]
        flat = (iz[:, :, None, None] * n + iy[:, None, :, None]) * n + ix[:, None, None, :]
        potential += np.bincount(flat.ravel(), weights=weights.ravel(), minlength=total)
        reporter.advance(f"atoms {stop}/{len(positions)}")
    potential = potential.reshape(n, n, n).astype(np.float32)
    info = PotentialInfo(
        voxel_size_nm=float(voxel_size_nm),
        shape=(n, n, n),
        centre_xyz_nm=tuple(float(v) / 10.0 for v in centre),
        integrated_v_nm3=float(potential.sum(dtype=np.float64)) * voxel_size_nm ** 3,
        extra_b_a2=float(extra_b),
    )
    return potential, info


def _background_level(data: np.ndarray) -> float:
    """Median of the outermost two-voxel shell: the map's solvent level."""
    shell = np.ones(data.shape, dtype=bool)
    if min(data.shape) > 4:
        shell[2:-2, 2:-2, 2:-2] = False
    return float(np.median(data[shell]))


def potential_from_map(
    data: np.ndarray,
    voxel_size_nm: tuple[float, float, float] | float,
    *,
    target_voxel_size_nm: float,
    mass_kda: float | None = None,
    margin_nm: float = 1.0,
    support_fraction: float = 0.02,
    centre: str = "mass",
) -> tuple[np.ndarray, PotentialInfo]:
    """Resample a density map to cubic voxels of ``target_voxel_size_nm``, centred and cropped.

    Steps: subtract the solvent level (median of the outer shell) and clip negative values to 0;
    when downsampling, low-pass the map to the new Nyquist frequency (Gaussian, so no ringing);
    take the centre of mass of the positive density; sample a cubic grid around it with a
    pre-filtered cubic B-spline; the box holds every voxel above ``support_fraction`` of the
    maximum plus ``margin_nm``.

    Args:
        data: map (z, y, x), any units.
        voxel_size_nm: its voxel size, per axis (z, y, x) or one number.
        target_voxel_size_nm: output voxel edge (nm).
        mass_kda: when given, rescale to volts: the integrated map becomes
            :data:`PROTEIN_POTENTIAL_PER_KDA_V_NM3` × mass; when None the units are the input's.
        margin_nm: empty space around the support.
        support_fraction: fraction of the maximum that defines the support (for box size only).
        centre: ``"mass"`` (centre of mass of the density) or ``"box"`` (keep the input's centre
            voxel, index n // 2 per axis: for maps that are centred already).

    Returns:
        ``(potential, info)`` as for :func:`potential_from_atoms` (float32, (n, n, n), n odd).
    """
    from scipy import ndimage

    if not target_voxel_size_nm > 0:
        raise ValueError(f"target_voxel_size_nm must be > 0, got {target_voxel_size_nm}")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 3 or min(data.shape) < 2:
        raise ValueError(f"expected a 3D map, got shape {data.shape}")
    in_voxel = np.broadcast_to(np.asarray(voxel_size_nm, dtype=np.float64), (3,))
    density = np.clip(data - _background_level(data), 0.0, None)
    if not density.any():
        raise ValueError("the map holds no density above its solvent level")

    # Anti-alias: Gaussian low-pass with σ (in input voxels) so the new Nyquist is attenuated.
    ratio = target_voxel_size_nm / in_voxel  # > 1 when downsampling
    sigma_vox = np.where(ratio > 1.0, 0.5 * np.sqrt(np.maximum(ratio ** 2 - 1.0, 0.0)), 0.0)
    if np.any(sigma_vox > 0):
        density = ndimage.gaussian_filter(density, sigma=sigma_vox, mode="constant")

    grid = np.indices(density.shape, dtype=np.float64)  # (3, z, y, x) in input voxels
    total = density.sum()
    if centre == "mass":
        com_vox = np.array([(grid[a] * density).sum() / total for a in range(3)])  # z, y, x
    elif centre == "box":
        com_vox = np.array([s // 2 for s in density.shape], dtype=np.float64)
    else:
        raise ValueError(f"centre must be 'mass' or 'box', got {centre!r}")
    support = density > support_fraction * density.max()
    offsets_nm = (grid[:, support] - com_vox[:, None]) * in_voxel[:, None]
    radius_nm = float(np.sqrt((offsets_nm ** 2).sum(axis=0)).max())
    n = _box_edge(radius_nm + margin_nm, target_voxel_size_nm)
    c = n // 2
    out_offsets_nm = (np.arange(n) - c) * target_voxel_size_nm
    coords = [com_vox[a] + out_offsets_nm / in_voxel[a] for a in range(3)]
    zz, yy, xx = np.meshgrid(*coords, indexing="ij")
    resampled = ndimage.map_coordinates(density, [zz, yy, xx], order=3, mode="constant",
                                        cval=0.0, prefilter=True)
    resampled = np.clip(resampled, 0.0, None)
    if mass_kda is not None:
        if not mass_kda > 0:
            raise ValueError(f"mass_kda must be > 0, got {mass_kda}")
        integral = resampled.sum() * target_voxel_size_nm ** 3
        resampled *= PROTEIN_POTENTIAL_PER_KDA_V_NM3 * mass_kda / integral
    potential = resampled.astype(np.float32)
    com_xyz_nm = tuple(float(com_vox[a] * in_voxel[a]) for a in (2, 1, 0))
    info = PotentialInfo(
        voxel_size_nm=float(target_voxel_size_nm),
        shape=(n, n, n),
        centre_xyz_nm=com_xyz_nm,
        integrated_v_nm3=float(potential.sum(dtype=np.float64)) * target_voxel_size_nm ** 3,
        extra_b_a2=0.0,
    )
    return potential, info

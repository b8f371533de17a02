"""Sphere phantoms: a quick, exact ground truth for tests, benchmarks and the quick start.

Not a simulation of the SHREC protocol (that is :mod:`napari_shrec.core.grandmodel`): each particle
is a ball with its class's equivalent radius, placed without overlap, so class and occupancy masks
are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import SHREC20_TABLE, ClassTable
from .particles import ParticleList
from .progress import CancelToken, ProgressCallback, ProgressReporter
from .rotations import matrix_to_zxz, random_rotations

__all__ = ["SpherePhantom", "sphere_phantom"]


@dataclass
class SpherePhantom:
    """Ground truth of a sphere phantom.

    Attributes:
        particles: one row per ball (x, y, z voxels; uniform random ZXZ angles).
        class_mask: (z, y, x) uint8, our class ids, 0 = background.
        occupancy_mask: (z, y, x) int32, 1-based particle row, 0 = background.
        density: (z, y, x) float32, 1 inside balls, 0 outside.
        n_requested: how many balls were asked for; ``len(particles)`` may be smaller when some
            did not fit.
    """

    particles: ParticleList
    class_mask: np.ndarray
    occupancy_mask: np.ndarray
    density: np.ndarray
    n_requested: int


def sphere_phantom(
    shape_zyx: tuple[int, int, int],
    n_particles: int,
    *,
    seed: int = 0,
    class_table: ClassTable = SHREC20_TABLE,
    radius_scale: float = 1.0,
    max_tries: int = 200,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SpherePhantom:
    """Place ``n_particles`` non-overlapping balls (classes round-robin over ``class_table``).

    Args:
        shape_zyx: volume shape (z, y, x) in voxels.
        n_particles: balls to place; each gets up to ``max_tries`` random positions.
        seed: random seed; the same seed gives identical output.
        radius_scale: multiplies each class's equivalent radius (nm = voxels at 1 nm).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape_zyx)
    occupancy = np.zeros(shape, dtype=np.int32)
    class_mask = np.zeros(shape, dtype=np.uint8)
    classes = [c for c in class_table if c.equivalent_radius_nm is not None]
    if not classes:
        raise ValueError("the class table has no class with a known volume")
    reporter = ProgressReporter(n_particles, progress, cancel)
    reporter.start("placing spheres")
    balls = {cls.name: _ball_offsets(max(1.0, cls.equivalent_radius_nm * radius_scale))
             for cls in classes}
    names: list[str] = []
    centres: list[tuple[float, float, float]] = []
    for i in range(n_particles):
        cls = classes[i % len(classes)]
        r_int, offsets = balls[cls.name]
        for _ in range(max_tries):
            centre = np.array([rng.integers(r_int, s - r_int) if s > 2 * r_int else -1
                               for s in shape])
            if (centre < 0).any():
                break
            voxels = offsets + centre
            z, y, x = voxels.T
            if occupancy[z, y, x].any():
                continue
            row = len(names) + 1
            occupancy[z, y, x] = row
            class_mask[z, y, x] = cls.id
            names.append(cls.name)
            centres.append((float(centre[2]), float(centre[1]), float(centre[0])))
            break
        reporter.advance(f"{len(names)} placed")
    angles = matrix_to_zxz(random_rotations(len(names), rng)) if names else np.zeros((0, 3))
    particles = ParticleList.from_arrays(names, np.asarray(centres).reshape(-1, 3), angles,
                                         voxel_size_nm=1.0)
    density = (occupancy > 0).astype(np.float32)
    return SpherePhantom(particles, class_mask, occupancy, density, n_particles)


def _ball_offsets(radius: float) -> tuple[int, np.ndarray]:
    """(ceil(radius), (n, 3) integer z, y, x offsets of the voxels within ``radius``)."""
    r_int = int(np.ceil(radius))
    grid = np.arange(-r_int, r_int + 1)
    dz, dy, dx = np.meshgrid(grid, grid, grid, indexing="ij")
    ball = dz**2 + dy**2 + dx**2 <= radius**2
    return r_int, np.stack([dz[ball], dy[ball], dx[ball]], axis=1)

"""Training targets: voxel label volumes for the U-Net, from class masks or from particle lists.

A target is a ``uint8`` (z, y, x) volume of *channels*: 0 is background, channel ``k ≥ 1`` is the
class ``class_names[k − 1]`` of the model being trained (the order is the model's, not the class
table's). Three sources:

- :func:`targets_from_class_mask`: a voxel class mask (a simulation's ``class_mask.mrc``) with
  class-table ids, mapped to channels by class name (:func:`class_channel_map`); classes that are
  not among the model's classes become background.
- :func:`sphere_targets`: balls around particle centres, for users who only clicked centres. The
  default radius of a class is :data:`DEFAULT_SPHERE_FRACTION` (0.7) of its equivalent radius
  (the radius of the sphere with the class's volume, ``ParticleClass.equivalent_radius_nm``,
  from paper Table 1: 1s3x 2.9 nm … 4cr2 9.0 nm), in voxels, at least
  :data:`MIN_SPHERE_RADIUS_VOX`; classes without a tabulated volume get
  :data:`FALLBACK_RADIUS_NM`. Less than the full radius keeps touching particles apart and
  keeps the ball inside non-spherical shapes, where a pick scores.
- :func:`shape_targets`: each particle's rotated class map above a threshold, placed at its
  (rounded) centre — the same footprint the simulator writes into the class mask
  (:func:`~napari_shrec.core.grandmodel.rotated_footprint`), for data with known orientations
  and maps.

Where two particles' balls or shapes overlap, a voxel goes to the particle whose centre is nearer
(for balls, relative to each radius), so neither erases the other's centre. Particles of classes
that are not channels are left out (background). Coordinates: particle x, y, z in voxels of the
target volume's frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .classes import SHREC21_TABLE, ClassTable, UnknownClassError, normalize_class_name
from .particles import ParticleList

__all__ = [
    "DEFAULT_SPHERE_FRACTION",
    "MIN_SPHERE_RADIUS_VOX",
    "FALLBACK_RADIUS_NM",
    "channel_of_class",
    "class_channel_map",
    "default_sphere_radii",
    "targets_from_class_mask",
    "sphere_targets",
    "shape_targets",
]

DEFAULT_SPHERE_FRACTION = 0.7
MIN_SPHERE_RADIUS_VOX = 1.5
FALLBACK_RADIUS_NM = 5.0


def channel_of_class(channels: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """{canonical class name: channel} from a class-name sequence (channel k = item k − 1) or a
    mapping; channels must be 1…255 and unique."""
    if isinstance(channels, Mapping):
        mapping = {normalize_class_name(k): int(v) for k, v in channels.items()}
    else:
        if isinstance(channels, str):
            raise ValueError(f"channels must be a sequence of class names, got {channels!r}")
        mapping = {}
        for k, name in enumerate(channels, start=1):
            key = normalize_class_name(name)
            if key in mapping:
                raise ValueError(f"channels name class {name!r} twice")
            mapping[key] = k
    values = list(mapping.values())
    if any(not 1 <= v <= 255 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"channels must be unique integers in 1…255, got {mapping}")
    return mapping


def class_channel_map(class_table: ClassTable, class_names: Sequence[str]) -> dict[int, int]:
    """{class-table id: channel} for a model whose channel k is ``class_names[k − 1]``.

    Raises:
        UnknownClassError: a class name that is not in ``class_table``.
    """
    return {class_table.id_of(name): ch for name, ch in channel_of_class(class_names).items()}


def targets_from_class_mask(class_mask: np.ndarray,
                            class_ids_to_channel: Mapping[int, int]) -> np.ndarray:
    """Map a class mask (class-table ids, 0 background) to channels.

    Args:
        class_mask: (z, y, x) integer (or integral float) ids; may be a memory map (read in
            slabs).
        class_ids_to_channel: {class id: channel} (:func:`class_channel_map`); ids not in it
            become 0.

    Returns:
        uint8 (z, y, x) channels.
    """
    if class_mask.ndim != 3:
        raise ValueError(f"class mask must be (z, y, x), got shape {class_mask.shape}")
    for cid, ch in class_ids_to_channel.items():
        if int(cid) < 0 or not 0 <= int(ch) <= 255:
            raise ValueError(f"invalid class id → channel entry {cid} → {ch}")
    top = max([int(k) for k in class_ids_to_channel] + [0])
    lut = np.zeros(max(top, 255) + 1, dtype=np.uint8)
    for cid, ch in class_ids_to_channel.items():
        lut[int(cid)] = int(ch)
    out = np.empty(class_mask.shape, dtype=np.uint8)
    slab = max(1, (1 << 22) // max(1, class_mask.shape[1] * class_mask.shape[2]))
    for z0 in range(0, class_mask.shape[0], slab):
        block = np.asarray(class_mask[z0:z0 + slab])
        ids = np.rint(block).astype(np.int64) if block.dtype.kind == "f" else \
            block.astype(np.int64)
        ids[(ids < 0) | (ids >= lut.size)] = 0
        out[z0:z0 + slab] = lut[ids]
    return out


def default_sphere_radii(class_names: Sequence[str], voxel_size_nm: float = 1.0, *,
                         fraction: float = DEFAULT_SPHERE_FRACTION,
                         class_table: ClassTable = SHREC21_TABLE) -> dict[str, float]:
    """{class: ball radius in voxels}: ``fraction`` × equivalent radius / voxel size, at least
    :data:`MIN_SPHERE_RADIUS_VOX`; classes without a tabulated volume (or not in the table)
    use :data:`FALLBACK_RADIUS_NM`."""
    if not (voxel_size_nm > 0 and fraction > 0):
        raise ValueError(f"voxel_size_nm and fraction must be > 0, got {voxel_size_nm}, "
                         f"{fraction}")
    radii = {}
    for name in class_names:
        key = normalize_class_name(name)
        try:
            r_nm = class_table.by_name(key).equivalent_radius_nm
        except UnknownClassError:
            r_nm = None
        r_nm = fraction * r_nm if r_nm is not None else FALLBACK_RADIUS_NM
        radii[key] = max(MIN_SPHERE_RADIUS_VOX, r_nm / voxel_size_nm)
    return radii


def _paint(labels: np.ndarray, best: np.ndarray, mask: np.ndarray, cost: np.ndarray,
           start_zyx: Sequence[int], channel: int) -> None:
    """Write ``channel`` where ``mask`` is set and ``cost`` beats ``best`` (box at
    ``start_zyx``, cropped to the volume)."""
    dst, src = [], []
    for axis in range(3):
        a = int(start_zyx[axis])
        b = a + mask.shape[axis]
        lo, hi = max(a, 0), min(b, labels.shape[axis])
        if hi <= lo:
            return
        dst.append(slice(lo, hi))
        src.append(slice(lo - a, hi - a))
    box, sub = tuple(dst), tuple(src)
    m = mask[sub] & (cost[sub] < best[box])
    best[box][m] = cost[sub][m]
    labels[box][m] = channel


def sphere_targets(shape_zyx: Sequence[int], particles: ParticleList,
                   radii_vox_by_class: Mapping[str, float] | None,
                   channels: Sequence[str] | Mapping[str, int], *,
                   voxel_size_nm: float | None = None,
                   fraction: float = DEFAULT_SPHERE_FRACTION) -> np.ndarray:
    """Balls around particle centres.

    Args:
        shape_zyx: the target volume's shape.
        particles: centres (x, y, z voxels, may be fractional) and classes.
        radii_vox_by_class: {class: radius in voxels}; None or missing classes use
            :func:`default_sphere_radii` (at ``voxel_size_nm``, default the list's, else 1 nm).
        channels: class names (channel k = item k − 1) or {class: channel}.

    Returns:
        uint8 (z, y, x): voxel ``v`` gets the channel of the particle minimising
        ``|v − c| / r`` among those with ``|v − c| ≤ r``; 0 elsewhere.
    """
    shape = tuple(int(s) for s in shape_zyx)
    channel_map = channel_of_class(channels)
    vs = voxel_size_nm if voxel_size_nm is not None else (particles.voxel_size_nm or 1.0)
    radii = default_sphere_radii(list(channel_map), vs, fraction=fraction)
    for name, r in (radii_vox_by_class or {}).items():
        if not float(r) > 0:
            raise ValueError(f"sphere radius of class {name!r} must be > 0, got {r!r}")
        radii[normalize_class_name(name)] = float(r)
    labels = np.zeros(shape, dtype=np.uint8)
    if not len(particles):
        return labels
    best = np.full(shape, np.inf, dtype=np.float32)
    names = [normalize_class_name(n) for n in particles.class_names]
    for (z, y, x), name in zip(particles.coords_zyx(), names):
        channel = channel_map.get(name)
        if channel is None:
            continue
        r = radii[name]
        centre = np.array([z, y, x])
        start = np.floor(centre - r).astype(int)
        stop = np.ceil(centre + r).astype(int) + 1
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(start, stop))]
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        cost = (np.sqrt(d2) / r).astype(np.float32)
        _paint(labels, best, cost <= 1.0, cost, start, channel)
    return labels


def shape_targets(shape_zyx: Sequence[int], particles: ParticleList,
                  structure_maps: Mapping[str, object], threshold_v: float, *,
                  channels: Sequence[str] | Mapping[str, int] | None = None,
                  threads: int = 0) -> np.ndarray:
    """Each particle's rotated class map ≥ ``threshold_v`` (plus its centre voxel), at its
    rounded centre: the footprint of :func:`~napari_shrec.core.grandmodel.rotated_footprint`
    (the simulator's class mask, for the same maps, orientations and threshold).

    Args:
        shape_zyx: the target volume's shape.
        particles: centres (rounded to voxels), classes and ZXZ orientations.
        structure_maps: {class: StructureMap or (z, y, x) odd cube in V, centre at n // 2}.
        threshold_v: footprint threshold (V); the simulator's default is 0.03.
        channels: class names / {class: channel}; default: the maps' classes in order.
        threads: worker threads for the rotations (0: all cores).

    Raises:
        ValueError: a particle's class (among the channels) has no map.
    """
    from .grandmodel import _footprint, _output_edge, _spline_coefficients

    shape = tuple(int(s) for s in shape_zyx)
    maps = {normalize_class_name(k): np.asarray(getattr(v, "potential", v), dtype=np.float32)
            for k, v in structure_maps.items()}
    channel_map = channel_of_class(list(maps) if channels is None else channels)
    names = [normalize_class_name(n) for n in particles.class_names]
    rows = [i for i, n in enumerate(names) if n in channel_map]
    missing = sorted({names[i] for i in rows} - set(maps))
    if missing:
        raise ValueError(f"shape_targets: no structure map for class(es) {', '.join(missing)}")
    labels = np.zeros(shape, dtype=np.uint8)
    if not rows:
        return labels
    used = sorted({names[i] for i in rows})
    coefficients = {n: _spline_coefficients(maps[n]) for n in used}
    edges = {n: _output_edge(maps[n], threshold_v) for n in used}
    matrices = particles.rotation_matrices()
    centres = np.rint(particles.coords_zyx()).astype(int)

    def footprint(i: int):
        return _footprint(coefficients[names[i]], matrices[i], threshold_v, edges[names[i]])

    best = np.full(shape, np.inf, dtype=np.float32)
    n_threads = threads if threads > 0 else None
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for i, fp in zip(rows, pool.map(footprint, rows)):
            start = centres[i] + np.asarray(fp.offset_zyx)
            grids = np.ogrid[tuple(slice(o, o + s) for o, s in zip(fp.offset_zyx,
                                                                     fp.mask.shape))]
            cost = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grids)).astype(np.float32)
            _paint(labels, best, fp.mask, np.broadcast_to(cost, fp.mask.shape), start,
                   channel_map[names[i]])
    return labels


"""Pure adapters between napari-shrec's core objects and napari layer-data tuples.

A layer-data tuple is ``(data, kwargs, layer_type)``: what npe2 readers return and what
``viewer._add_layer_from_data(*tup)`` / ``napari.layers.Layer.create(*tup)`` accept. This module
only builds numpy arrays, pandas frames and dicts: importing it imports neither napari nor Qt, so
readers, writers, the CLI and tests can use it anywhere.

Conventions (the same for every layer built here):

- Axis order is (z, y, x); ``data`` of Points layers is (n, 3) positions in **voxels** (z, y, x)
  of the tomogram they belong to; ``scale`` is the voxel size in **nm** per axis (z, y, x) and
  ``units`` is ``("nm", "nm", "nm")``, so napari's world coordinates are nm.
- ``translate`` is in world units (nm): ``translate_zyx_vox * voxel_size_nm``. It places a layer
  in another frame, e.g. SHREC'20's 200-slice grandmodel at z = 156 of the 512³ reconstruction.
  The MRC header origin is NOT added by default (``use_origin=False``): particle lists are
  voxel indices of the array, whatever the header origin says, so adding the origin to the
  image but not to the particles would make picks land in the wrong place. The origin is kept
  in the layer metadata (``origin_nm``) and written back by the MRC writer.
- Class colours come from one :class:`~napari_shrec.core.classes.ClassTable`: Labels use a
  ``DirectLabelColormap``-compatible dict ``{None: default, 0: transparent, id: RGBA}`` passed as
  ``colormap``; Points map the categorical ``class`` feature through
  ``face_color="class"`` + ``face_color_cycle={"colormap": {name: RGBA}, "fallback_color": …}``
  (napari's ``ColorManager`` in CYCLE mode), which keeps colouring points added later from
  ``feature_defaults``.
- Provenance goes to ``metadata``: ``kind`` (``"volume"``, ``"class_mask"``,
  ``"occupancy_mask"``, ``"particles"``), ``voxel_size_nm`` (z, y, x), ``source`` and whatever
  the caller adds.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .core.classes import SHREC21_TABLE, ClassTable, normalize_class_name
from .core.particles import CORE_COLUMNS, ParticleList
from .core.volume import Volume

__all__ = [
    "LayerDataTuple",
    "PARTICLE_SOURCES",
    "UNITS_NM",
    "AXIS_LABELS",
    "DEFAULT_PARTICLE_DIAMETER_NM",
    "contrast_limits_from_sample",
    "as_label_array",
    "class_color",
    "class_colors",
    "class_color_cycle",
    "class_diameter_vox",
    "labels_colormap",
    "volume_to_image_layer",
    "class_mask_to_labels_layer",
    "occupancy_to_labels_layer",
    "particles_to_points_layer",
    "particles_to_features",
    "points_layer_to_particles",
]

log = logging.getLogger(__name__)

LayerDataTuple = tuple[Any, dict[str, Any], str]
"""``(data, kwargs, layer_type)`` as napari readers return it."""

PARTICLE_SOURCES: tuple[str, ...] = ("ground truth", "predicted", "manual")
"""Allowed values of the Points ``source`` feature (a pandas Categorical over these)."""

UNITS_NM: tuple[str, str, str] = ("nm", "nm", "nm")
AXIS_LABELS: tuple[str, str, str] = ("z", "y", "x")
DEFAULT_PARTICLE_DIAMETER_NM = 10.0
"""Display diameter (nm) of a class without a known volume (vesicle, fiducial, unknown)."""

_FALLBACK_RGBA: tuple[float, float, float, float] = (0.6, 0.6, 0.6, 1.0)
_TRANSPARENT: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
_SOURCE_BORDER_COLORS: dict[str, tuple[float, float, float, float]] = {
    "ground truth": (1.0, 1.0, 1.0, 1.0),
    "predicted": (1.0, 0.85, 0.0, 1.0),
    "manual": (0.0, 1.0, 1.0, 1.0),
}
_SAMPLE_TARGET = 1 << 18  # voxels read to estimate contrast limits (≈ 1 MB of float32)
_SAMPLE_MAX_SLICES = 16


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _voxel_size_zyx(voxel_size_nm: float | Sequence[float]) -> tuple[float, float, float]:
    """(z, y, x) voxel size in nm from a scalar or a 3-sequence; ValueError if not positive."""
    values = np.broadcast_to(np.asarray(voxel_size_nm, dtype=float), (3,))
    out = tuple(float(v) for v in values)
    if any(not math.isfinite(v) or v <= 0 for v in out):
        raise ValueError(f"voxel size must be positive and finite (nm), got {voxel_size_nm!r}")
    return out  # type: ignore[return-value]


def _translate_nm(translate_zyx_vox: Sequence[float],
                  voxel_size_zyx: Sequence[float],
                  origin_nm: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    t = np.broadcast_to(np.asarray(translate_zyx_vox, dtype=float), (3,))
    return tuple(float(o + v * s) for o, v, s in zip(origin_nm, t, voxel_size_zyx, strict=True))  # type: ignore[return-value]


def _hashed_rgba(name: str) -> tuple[float, float, float, float]:
    """A stable colour for a class the table does not know (same name → same colour)."""
    import colorsys

    h = (zlib.crc32(normalize_class_name(name).encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.55, 0.95)
    return (r, g, b, 1.0)


def class_color(name: str, class_table: ClassTable | None = None
                ) -> tuple[float, float, float, float]:
    """RGBA in [0, 1] of a class: the table's colour, else a stable hashed colour."""
    table = SHREC21_TABLE if class_table is None else class_table
    if name in table:
        return (*table.by_name(name).color, 1.0)
    return _hashed_rgba(name)


def class_colors(names: Iterable[str], class_table: ClassTable | None = None
                 ) -> dict[str, tuple[float, float, float, float]]:
    """{name: RGBA} for the table's classes plus ``names`` (unknown names get hashed colours)."""
    table = SHREC21_TABLE if class_table is None else class_table
    colors = dict(table.colors_by_name())
    for name in names:
        key = str(name)
        if key not in colors:
            colors[key] = class_color(key, table)
    return colors


def class_color_cycle(categories: Iterable[str], class_table: ClassTable | None = None
                      ) -> dict[str, Any]:
    """A Points ``face_color_cycle`` colouring the ``class`` feature: ``{"colormap": {name:
    RGBA}, "fallback_color": [grey]}`` with the table's colours (default ``SHREC21_TABLE``) plus
    stable hashed colours for ``categories`` the table does not know."""
    return {"colormap": class_colors(categories, class_table),
            "fallback_color": [_FALLBACK_RGBA]}


def class_diameter_vox(name: str, voxel_size_nm: float,
                       class_table: ClassTable | None = None) -> float:
    """Display diameter of a class in voxels: twice the equivalent-sphere radius (nm) over the
    voxel size (nm); :data:`DEFAULT_PARTICLE_DIAMETER_NM` for classes without a known volume."""
    table = SHREC21_TABLE if class_table is None else class_table
    radius_nm = table.by_name(name).equivalent_radius_nm if name in table else None
    diameter_nm = 2.0 * radius_nm if radius_nm else DEFAULT_PARTICLE_DIAMETER_NM
    return float(diameter_nm / float(voxel_size_nm))


def labels_colormap(class_table: ClassTable | None = None,
                    default: tuple[float, float, float, float] = _FALLBACK_RGBA,
                    ) -> dict[int | None, tuple[float, float, float, float]]:
    """A ``DirectLabelColormap``-compatible dict for class masks: ``{None: default (values not in
    the table), 0: transparent (background), class id: class RGBA}``."""
    table = SHREC21_TABLE if class_table is None else class_table
    colormap: dict[int | None, tuple[float, float, float, float]] = {None: tuple(default)}  # type: ignore[dict-item]
    colormap.update(table.colors_by_id())
    colormap[0] = _TRANSPARENT
    return colormap


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def _strided_sample(data: Any, target: int = _SAMPLE_TARGET,
                    max_slices: int = _SAMPLE_MAX_SLICES) -> np.ndarray:
    """A cheap sample of a (z, y, x) array: a few evenly spaced z slices, strided in y and x.

    Only the rows of those slices are touched, so a memory-mapped 512³ file is not read whole."""
    shape = tuple(int(s) for s in data.shape)
    if int(np.prod(shape)) <= target:
        return np.asarray(data)
    if len(shape) < 3:
        step = max(1, int(math.ceil(math.sqrt(np.prod(shape) / target))))
        return np.asarray(data[tuple(slice(None, None, step) for _ in shape)])
    nz, ny, nx = shape[-3:]
    lead = (0,) * (len(shape) - 3)
    n_slices = min(nz, max_slices)
    zs = np.unique(np.linspace(0, nz - 1, n_slices).round().astype(int))
    per_slice = max(1, target // len(zs))
    step = max(1, int(math.ceil(math.sqrt(ny * nx / per_slice))))
    parts = [np.asarray(data[(*lead, int(z), slice(None, None, step), slice(None, None, step))])
             for z in zs]
    return np.stack(parts)


def contrast_limits_from_sample(data: Any, percentiles: tuple[float, float] = (0.5, 99.5)
                                ) -> tuple[float, float]:
    """Contrast limits from a strided sample of ``data`` (see :func:`_strided_sample`): the
    given percentiles of the finite values; min/max if they coincide; (v, v + 1) for a constant.

    Note that napari also uses these as the contrast-limits *range* of the slider (right-click
    the slider to widen it)."""
    sample = _strided_sample(data)
    if np.iscomplexobj(sample):
        sample = np.abs(sample)
    sample = np.asarray(sample, dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return (lo, hi)


def _volume_metadata(volume: Volume, kind: str, extra: Mapping[str, Any] | None,
                     voxel_size_nm: float | Sequence[float] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "kind": kind,
        "voxel_size_nm": tuple(volume.voxel_size_nm),
        "origin_nm": tuple(volume.origin_nm),
    }
    if voxel_size_nm is not None:  # the layer's voxel size is imposed, not the file's own
        meta["voxel_size_nm"] = _voxel_size_zyx(voxel_size_nm)
        if volume.metadata.get("voxel_size_from_header", True):
            meta["header_voxel_size_nm"] = tuple(float(v) for v in volume.voxel_size_nm)
    source = volume.metadata.get("source")
    if source is not None:
        meta["source"] = str(source)
    for key in ("mrc_mode", "is_image_stack", "voxel_size_from_header"):
        if key in volume.metadata:
            meta[key] = volume.metadata[key]
    meta.update(extra or {})
    return meta


_VOXEL_SIZE_RTOL = 1e-3


def _layer_voxel_size(volume: Volume, voxel_size_nm: float | Sequence[float] | None
                      ) -> tuple[float, float, float]:
    """(z, y, x) voxel size (nm) of a volume's layer: ``voxel_size_nm`` when given (a warning
    when the file's header says something else by more than 0.1 %), else the volume's own."""
    if voxel_size_nm is None:
        return _voxel_size_zyx(volume.voxel_size_nm)
    wanted = _voxel_size_zyx(voxel_size_nm)
    if volume.metadata.get("voxel_size_from_header", True):
        own = _voxel_size_zyx(volume.voxel_size_nm)
        if not np.allclose(own, wanted, rtol=_VOXEL_SIZE_RTOL, atol=0.0):
            log.warning("%s: header voxel size %s nm differs from the %s nm used for the layer",
                        volume.metadata.get("source", "volume"),
                        tuple(round(v, 6) for v in own), tuple(round(v, 6) for v in wanted))
    return wanted


def _spatial_kwargs(volume: Volume, translate_zyx_vox: Sequence[float],
                    use_origin: bool,
                    voxel_size_nm: float | Sequence[float] | None = None) -> dict[str, Any]:
    scale = _layer_voxel_size(volume, voxel_size_nm)
    origin = volume.origin_nm if use_origin else (0.0, 0.0, 0.0)
    return {
        "scale": scale,
        "translate": _translate_nm(translate_zyx_vox, scale, origin),
        "units": UNITS_NM,
        "axis_labels": AXIS_LABELS,
    }


def volume_to_image_layer(
    volume: Volume,
    name: str,
    *,
    visible: bool = True,
    translate_zyx_vox: Sequence[float] = (0.0, 0.0, 0.0),
    metadata: Mapping[str, Any] | None = None,
    use_origin: bool = False,
    voxel_size_nm: float | Sequence[float] | None = None,
    colormap: str = "gray",
    contrast_limits: tuple[float, float] | None = None,
    opacity: float = 1.0,
    blending: str = "translucent",
) -> LayerDataTuple:
    """An Image layer-data tuple for a (z, y, x) volume.

    Args:
        volume: the volume; its ``data`` is passed through untouched (a memory map stays one).
        name: layer name.
        visible: whether the layer starts visible.
        translate_zyx_vox: offset in voxels (z, y, x) of this volume in the frame of the viewer
            (e.g. ``(156, 0, 0)`` for a SHREC'20 grandmodel over its 512³ reconstruction).
        metadata: extra provenance merged into the layer metadata.
        use_origin: also add the MRC header origin (nm) to ``translate`` (off by default, see
            the module notes).
        colormap, opacity, blending: napari display options.
        contrast_limits: fixed limits; by default the 0.5–99.5 percentiles of a strided sample
            (a few slices), so opening a memory-mapped 512³ file does not read it whole.
        voxel_size_nm: the layer's voxel size (nm; scalar or (z, y, x)) instead of the
            volume's own, e.g. the dataset's voxel size for every file of a dataset folder (a
            mask header often holds none). A warning is logged when the file's header gives a
            different one (> 0.1 %); ``metadata`` also holds ``header_voxel_size_nm`` when
            the header has one.

    Returns:
        ``(data, kwargs, "image")`` with ``scale`` = voxel size in nm (z, y, x), ``units`` nm.
    """
    data = volume.data
    if contrast_limits is None:
        contrast_limits = contrast_limits_from_sample(data)
    kwargs: dict[str, Any] = {
        "name": name,
        **_spatial_kwargs(volume, translate_zyx_vox, use_origin, voxel_size_nm),
        "contrast_limits": tuple(float(c) for c in contrast_limits),
        "colormap": colormap,
        "visible": bool(visible),
        "opacity": float(opacity),
        "blending": blending,
        "metadata": _volume_metadata(volume, "volume", metadata, voxel_size_nm),
    }
    if volume.metadata.get("is_image_stack"):
        kwargs["axis_labels"] = ("image", "y", "x")
    return (data, kwargs, "image")


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------
def as_label_array(data: Any, *, chunk_voxels: int = 1 << 22) -> np.ndarray:
    """Integer label data for a napari Labels layer.

    Integer arrays (memory maps included) are returned as they are; booleans as a uint8 view;
    floating-point masks (SHREC's masks are float32 MRC files) are rounded and converted slab by
    slab along z into uint16 (uint32 if a value exceeds 65535), so no float64 or int64 copy of
    the whole volume is ever made.

    Raises:
        ValueError: negative or non-finite values in a floating-point mask.
        TypeError: data that is neither numeric nor boolean.
    """
    arr = data
    dtype = np.dtype(arr.dtype)
    if dtype == np.bool_:
        return np.asarray(arr).view(np.uint8)
    if dtype.kind in "iu":
        return arr
    if dtype.kind != "f":
        raise TypeError(f"labels need integer, boolean or float data, got {dtype}")
    shape = tuple(int(s) for s in arr.shape)
    out: np.ndarray = np.empty(shape, dtype=np.uint16)
    if not shape or 0 in shape:
        return out
    per_z = int(np.prod(shape[1:])) or 1
    step = max(1, chunk_voxels // per_z)
    for z0 in range(0, shape[0], step):
        chunk = np.rint(np.asarray(arr[z0:z0 + step]))
        if not np.all(np.isfinite(chunk)):
            raise ValueError("label data holds NaN or infinite values")
        lo, hi = (float(chunk.min()), float(chunk.max())) if chunk.size else (0.0, 0.0)
        if lo < 0:
            raise ValueError(f"label data holds negative values ({lo:g})")
        if hi > np.iinfo(out.dtype).max:
            if hi > np.iinfo(np.uint32).max:
                raise ValueError(f"label value {hi:g} does not fit in uint32")
            out = out.astype(np.uint32)
        out[z0:z0 + step] = chunk
    return out


def class_mask_to_labels_layer(
    volume: Volume,
    name: str,
    *,
    class_table: ClassTable | None = None,
    visible: bool = True,
    translate_zyx_vox: Sequence[float] = (0.0, 0.0, 0.0),
    metadata: Mapping[str, Any] | None = None,
    use_origin: bool = False,
    voxel_size_nm: float | Sequence[float] | None = None,
    opacity: float = 0.5,
) -> LayerDataTuple:
    """A Labels layer-data tuple for a class mask whose values are ``class_table`` ids.

    The colours are the class table's (``colormap`` = a ``DirectLabelColormap`` dict: background
    0 transparent, values not in the table grey); the layer ``features`` table has one row per
    class (``index`` = class id, ``class`` = name) so napari's status bar names the class under
    the cursor; ``metadata["class_names"]`` is ``{id: name}``.

    Args:
        volume: the mask (z, y, x); float data is converted with :func:`as_label_array`.
        name, visible, translate_zyx_vox, metadata, use_origin, voxel_size_nm: as in
            :func:`volume_to_image_layer`.
        class_table: the table the ids refer to (default: ``SHREC21_TABLE``).
        opacity: layer opacity.
    """
    table = SHREC21_TABLE if class_table is None else class_table
    data = as_label_array(volume.data)
    names = {c.id: c.name for c in table}
    features = pd.DataFrame({
        "index": np.asarray([0, *names.keys()], dtype=np.int64),
        "class": ["background", *names.values()],
    })
    meta = _volume_metadata(volume, "class_mask", None, voxel_size_nm)
    meta["class_names"] = dict(names)
    meta.update(metadata or {})
    kwargs: dict[str, Any] = {
        "name": name,
        **_spatial_kwargs(volume, translate_zyx_vox, use_origin, voxel_size_nm),
        "colormap": labels_colormap(table),
        "features": features,
        "visible": bool(visible),
        "opacity": float(opacity),
        "metadata": meta,
    }
    return (data, kwargs, "labels")


def occupancy_to_labels_layer(
    volume: Volume,
    name: str,
    *,
    particles: ParticleList | None = None,
    visible: bool = True,
    translate_zyx_vox: Sequence[float] = (0.0, 0.0, 0.0),
    metadata: Mapping[str, Any] | None = None,
    use_origin: bool = False,
    voxel_size_nm: float | Sequence[float] | None = None,
    opacity: float = 0.5,
) -> LayerDataTuple:
    """A Labels layer-data tuple for an occupancy mask (voxel value = 1-based particle row).

    Colours are napari's default cyclic label colours (one per particle). When ``particles`` is
    given, ``features`` holds ``index`` (particle id = row + 1) and ``class`` per particle, so the
    status bar shows the class of the particle under the cursor. ``voxel_size_nm`` and the
    other keywords: as in :func:`volume_to_image_layer`.
    """
    data = as_label_array(volume.data)
    kwargs: dict[str, Any] = {
        "name": name,
        **_spatial_kwargs(volume, translate_zyx_vox, use_origin, voxel_size_nm),
        "visible": bool(visible),
        "opacity": float(opacity),
        "metadata": _volume_metadata(volume, "occupancy_mask", metadata, voxel_size_nm),
    }
    if particles is not None and len(particles):
        kwargs["features"] = pd.DataFrame({
            "index": np.arange(1, len(particles) + 1, dtype=np.int64),
            "class": [str(n) for n in particles.class_names],
        })
    return (data, kwargs, "labels")


# ---------------------------------------------------------------------------------------------
# points
# ---------------------------------------------------------------------------------------------
_RESERVED_FEATURES = ("class", "source")
_STALE_METADATA = frozenset({"line_numbers"})


def particles_to_features(particles: ParticleList, *, class_table: ClassTable | None = None,
                          source: str = "ground truth") -> pd.DataFrame:
    """The Points ``features`` table of a particle list (one row per particle).

    Columns: ``class`` (pandas Categorical over the table's names, then any other names present,
    in order of appearance), ``score`` (float, NaN if unknown), ``source`` (Categorical over
    :data:`PARTICLE_SOURCES`; a ``source`` column of the list is kept where its values are
    valid, else ``source`` fills), ``phi``, ``theta``, ``psi`` (ZXZ degrees) and the list's
    extra columns (an extra named ``class`` becomes ``class_extra``).
    """
    if source not in PARTICLE_SOURCES:
        raise ValueError(f"source must be one of {PARTICLE_SOURCES}, got {source!r}")
    table = SHREC21_TABLE if class_table is None else class_table
    t = particles.table
    names = [str(n) for n in t["class_name"]]
    categories = list(table.names)
    for n in names:
        if n not in categories:
            categories.append(n)
    n_rows = len(t)
    src = pd.Categorical([source] * n_rows, categories=PARTICLE_SOURCES)
    if "source" in t.columns:
        given = t["source"].astype(str).to_numpy()
        valid = np.isin(given, PARTICLE_SOURCES)
        src = pd.Categorical(np.where(valid, given, source), categories=PARTICLE_SOURCES)
    data: dict[str, Any] = {
        "class": pd.Categorical(names, categories=categories),
        "score": t["score"].to_numpy(dtype=np.float64),
        "source": src,
        "phi": t["phi"].to_numpy(dtype=np.float64),
        "theta": t["theta"].to_numpy(dtype=np.float64),
        "psi": t["psi"].to_numpy(dtype=np.float64),
    }
    for col in particles.extra_columns:
        if col == "source":
            continue
        key = f"{col}_extra" if col in _RESERVED_FEATURES or col in data else col
        data[key] = t[col].to_numpy()
    return pd.DataFrame(data, index=pd.RangeIndex(n_rows))


def _feature_defaults(features: pd.DataFrame, default_class: str) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for col in features.columns:
        series = features[col]
        if col == "class":
            defaults[col] = default_class
        elif col == "source":
            defaults[col] = "manual"
        elif col in ("phi", "theta", "psi"):
            defaults[col] = 0.0
        elif isinstance(series.dtype, pd.CategoricalDtype):
            cats = series.cat.categories
            defaults[col] = cats[0] if len(cats) else None
        elif pd.api.types.is_bool_dtype(series.dtype):
            defaults[col] = False
        elif pd.api.types.is_numeric_dtype(series.dtype):
            defaults[col] = np.nan if pd.api.types.is_float_dtype(series.dtype) else 0
        else:
            defaults[col] = ""
    return defaults


def particles_to_points_layer(
    particles: ParticleList,
    name: str,
    *,
    class_table: ClassTable | None = None,
    source: str = "ground truth",
    voxel_size_nm: float | Sequence[float] | None = None,
    translate_zyx_vox: Sequence[float] = (0.0, 0.0, 0.0),
    visible: bool = True,
    metadata: Mapping[str, Any] | None = None,
    default_class: str | None = None,
    opacity: float = 0.8,
    projection_mode: str = "rescale_spherical",
) -> LayerDataTuple:
    """A Points layer-data tuple for a particle list, coloured by class.

    Args:
        particles: the list; positions in voxels (x, y, z) become ``data`` (n, 3) in (z, y, x).
        name: layer name.
        class_table: colours, sizes and the categories of the ``class`` feature
            (default ``SHREC21_TABLE``); names it does not know get stable hashed colours.
        source: "ground truth", "predicted" or "manual" (the ``source`` feature; points added
            later in napari get "manual" from ``feature_defaults``).
        voxel_size_nm: voxel size in nm (scalar or (z, y, x)); default the list's own, else 1.
        translate_zyx_vox: offset in voxels (z, y, x), e.g. the grandmodel z offset.
        visible, opacity: display options.
        metadata: extra provenance merged into the layer metadata.
        default_class: the class of points added later (default: the first class present, else
            the table's first class).
        projection_mode: napari Points projection mode. The default "rescale_spherical" shows a
            point on the slices its sphere (diameter = ``size``) cuts when the viewer uses thick
            slices, and behaves like "none" with napari's default thin slices.

    Returns:
        ``(data, kwargs, "points")``: ``scale`` = voxel size (nm, z y x), ``units`` nm,
        ``features`` (see :func:`particles_to_features`), ``feature_defaults``,
        ``face_color="class"`` with ``face_color_cycle`` = {"colormap": {name: RGBA},
        "fallback_color": grey}, ``border_color="source"`` with a per-source colour, ``size`` =
        per-point diameter in voxels from the class's equivalent-sphere radius.
    """
    table = SHREC21_TABLE if class_table is None else class_table
    if voxel_size_nm is None:
        voxel_size_nm = particles.voxel_size_nm if particles.voxel_size_nm else 1.0
        voxel_assumed = particles.voxel_size_nm is None
    else:
        voxel_assumed = False
    scale = _voxel_size_zyx(voxel_size_nm)
    features = particles_to_features(particles, class_table=table, source=source)
    names = [str(n) for n in features["class"].astype(object)]
    categories = [str(c) for c in features["class"].cat.categories]
    if default_class is None:
        default_class = names[0] if names else (categories[0] if categories else "unknown")
    elif default_class not in categories:
        features["class"] = features["class"].cat.add_categories([default_class])
        categories.append(default_class)
    # sizes are in data units (voxels); use the x voxel size for the nm → voxel conversion
    diameters = {c: class_diameter_vox(c, scale[2], table) for c in categories}
    data = particles.coords_zyx() if len(particles) else np.zeros((0, 3), dtype=np.float64)
    size: float | np.ndarray
    if len(particles):
        size = np.asarray([diameters[n] for n in names], dtype=np.float64)
    else:
        size = diameters[default_class]
    meta: dict[str, Any] = {
        "kind": "particles",
        "source": source,
        "voxel_size_nm": scale,
        "voxel_size_assumed": voxel_assumed,
        "translate_zyx_vox": tuple(float(v) for v in np.broadcast_to(translate_zyx_vox, (3,))),
    }
    for key, value in particles.metadata.items():
        if key in _STALE_METADATA:  # per-row bookkeeping goes stale once points are edited
            continue
        meta.setdefault(key if key != "source" else "source_file", value)
    meta.update(metadata or {})
    kwargs: dict[str, Any] = {
        "name": name,
        "ndim": 3,
        "scale": scale,
        "translate": _translate_nm(translate_zyx_vox, scale),
        "units": UNITS_NM,
        "axis_labels": AXIS_LABELS,
        "features": features,
        "feature_defaults": _feature_defaults(features, default_class),
        "face_color": "class",
        "face_color_cycle": class_color_cycle(categories, table),
        "border_color": "source",
        "border_color_cycle": {"colormap": dict(_SOURCE_BORDER_COLORS),
                               "fallback_color": [_FALLBACK_RGBA]},
        "border_width": 0.1,
        "border_width_is_relative": True,
        "size": size,
        "symbol": "disc",
        "opacity": float(opacity),
        "projection_mode": projection_mode,
        "visible": bool(visible),
        "metadata": meta,
    }
    return (data, kwargs, "points")


def points_layer_to_particles(
    data: Any,
    features: pd.DataFrame | Mapping[str, Any] | None,
    *,
    voxel_size_nm: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    default_class: str = "unknown",
    include_source: bool = False,
) -> ParticleList:
    """The particle list of a Points layer (the inverse of :func:`particles_to_points_layer`).

    Args:
        data: (n, 3) positions in voxels, (z, y, x) — the layer's ``data`` (data coordinates,
            i.e. without ``translate``); with more than 3 columns the last 3 are used.
        features: the layer's ``features``: ``class`` (or ``class_name``) → class name,
            ``score``, ``phi``, ``theta``, ``psi`` → the same columns; other columns become
            extras (``source`` only with ``include_source``; a feature named like a core column,
            e.g. ``x``, becomes ``x_extra``).
        voxel_size_nm: voxel size of the tomogram (nm), stored on the list.
        metadata: stored on the list.
        default_class: class of points without one (no ``class`` feature, or a missing value).
        include_source: keep the ``source`` feature as an extra column.

    Returns:
        A :class:`ParticleList` with coordinates in voxels (x, y, z).
    """
    coords = np.asarray(data, dtype=np.float64)
    if coords.ndim != 2 or (coords.size and coords.shape[1] < 3):
        raise ValueError(f"points data must be (n, 3) positions (z, y, x), got shape "
                         f"{coords.shape}")
    n = coords.shape[0]
    coords = coords[:, -3:] if n else np.zeros((0, 3))
    if features is None:
        feats = pd.DataFrame(index=pd.RangeIndex(n))
    else:
        feats = pd.DataFrame(features).reset_index(drop=True)
    if len(feats) != n:
        if len(feats.columns) == 0:
            feats = pd.DataFrame(index=pd.RangeIndex(n))
        else:
            raise ValueError(f"{n} points but {len(feats)} rows of features")
    class_col = "class" if "class" in feats.columns else (
        "class_name" if "class_name" in feats.columns else None)
    if class_col is None:
        names = [default_class] * n
    else:
        raw = feats[class_col].astype(object)
        names = [default_class if (v is None or (isinstance(v, float) and math.isnan(v))
                                   or str(v) == "") else str(v) for v in raw]
    table: dict[str, Any] = {
        "class_name": names,
        "x": coords[:, 2],
        "y": coords[:, 1],
        "z": coords[:, 0],
    }
    for col in ("phi", "theta", "psi", "score"):
        if col in feats.columns:
            table[col] = pd.to_numeric(feats[col], errors="coerce").to_numpy(dtype=np.float64)
    skip = {"class", "class_name", "phi", "theta", "psi", "score"}
    if not include_source:
        skip.add("source")
    for col in feats.columns:
        if col in skip:
            continue
        key = str(col)
        if key in CORE_COLUMNS:  # e.g. a stray "x" feature: keep it, renamed
            key = f"{key}_extra"
        values = feats[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        table[key] = values.to_numpy()
    return ParticleList(pd.DataFrame(table), voxel_size_nm=voxel_size_nm,
                        metadata=dict(metadata or {}))

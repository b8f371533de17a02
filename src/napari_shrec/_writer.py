"""npe2 writer contributions: Points → particle lists, Image/Labels → MRC.

Every function here is an npe2 *single-layer* writer, ``writer(path: str, data, meta: dict) ->
list[str]``: ``data`` is the layer's data and ``meta`` its state (``layer.as_layer_data_tuple()``:
``scale``, ``units``, ``features``, ``metadata``, …). They return the paths written.

**Overwriting.** napari asks the user before it calls a writer on an existing path (the Save
dialog's "replace?" question), so these writers pass ``overwrite=True`` to the io functions.
Files are still written to a temporary name and renamed, so a failed save never leaves a
half-written file. Python callers who want the safe default should call
:func:`napari_shrec.io.particles.write_particles` / :func:`napari_shrec.io.mrc.write_mrc`
directly (``overwrite=False``), or pass ``overwrite=False`` to :func:`write_points_layer` /
:func:`write_volume_layer`.

**Units.** The voxel size is read from the layer ``scale`` (z, y, x) converted to nm with the
layer ``units`` where they are lengths (napari-shrec layers are in nm); for Image and Labels a
scale without length units (napari's default "pixel") is taken as nm (a unit that is not a length
is logged as a warning). Points writers record no voxel size at all (no ``rlnImagePixelSize`` in
STAR) when the layer does not know one: a layer in "pixel" units (made in napari), or a list read
from a SHREC txt/CSV file whose 1 nm voxel size the reader assumed
(``metadata["voxel_size_assumed"]``) and whose scale was not changed since. Points are written in
data coordinates (voxels of the tomogram the layer's ``data`` refers to; the layer ``translate``
is a display offset and is not applied).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "write_points_shrec",
    "write_points_star",
    "write_points_csv",
    "write_image_mrc",
    "write_labels_mrc",
    "write_points_layer",
    "write_volume_layer",
    "voxel_size_nm_from_meta",
]

log = logging.getLogger(__name__)

_PIXEL_UNITS = ("", "pixel", "pixels", "px", "dimensionless")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _is_pixel_unit(unit: Any) -> bool:
    return unit is None or str(unit).strip() in _PIXEL_UNITS


def _unit_to_nm_factor(unit: Any) -> float:
    """Factor that converts a length in ``unit`` to nm; 1.0 for None and "pixel"; 1.0 with a
    logged warning for a unit that is not a length (or that pint does not know)."""
    if _is_pixel_unit(unit):
        return 1.0
    text = str(unit).strip()
    try:
        import pint
    except ImportError:
        log.warning("cannot convert the layer unit %r to nm (pint is not installed); taking the "
                    "scale as nm", text)
        return 1.0
    try:
        registry = pint.get_application_registry()
        return float(registry.Quantity(1.0, text).to("nanometer").magnitude)
    except Exception as exc:  # unknown unit, or not a length
        log.warning("the layer unit %r is not a length (%s); taking the scale as nm", text, exc)
        return 1.0


def _points_voxel_size_nm(meta: Mapping[str, Any]) -> float | None:
    """The x voxel size (nm) a Points writer should record, or None when the layer has none:
    units "pixel" (a layer made in napari), or a voxel size the reader assumed (1 nm for SHREC
    txt/CSV files) with the layer scale unchanged since."""
    units = meta.get("units")
    if units is not None and all(u is not None and _is_pixel_unit(u) for u in list(units)[-3:]):
        return None
    md = _layer_metadata(meta)
    voxel_size = voxel_size_nm_from_meta(meta, 3)
    if md.get("voxel_size_assumed") is True:
        assumed = md.get("voxel_size_nm", 1.0)
        try:
            assumed_zyx = np.broadcast_to(np.asarray(assumed, dtype=float), (3,))
        except (TypeError, ValueError):
            assumed_zyx = np.ones(3)
        if np.allclose(voxel_size, assumed_zyx, rtol=1e-9, atol=0.0):
            return None
    return voxel_size[-1]


def voxel_size_nm_from_meta(meta: Mapping[str, Any], ndim: int = 3) -> tuple[float, ...]:
    """Voxel size in nm per axis (last ``ndim`` axes, z y x) from a layer's ``scale`` and
    ``units``; 1 nm per axis when the layer has no scale."""
    scale = meta.get("scale")
    if scale is None:
        return (1.0,) * ndim
    values = [float(s) for s in np.asarray(scale, dtype=float).ravel()][-ndim:]
    units = meta.get("units")
    unit_list: Sequence[Any] = list(units)[-ndim:] if units is not None else [None] * ndim
    if len(unit_list) != len(values):
        unit_list = [None] * len(values)
    out = tuple(v * _unit_to_nm_factor(u) for v, u in zip(values, unit_list, strict=True))
    if any(not math.isfinite(v) or v <= 0 for v in out):
        raise ValueError(f"the layer scale {tuple(values)} is not a positive voxel size")
    return out


def _layer_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    md = meta.get("metadata")
    return dict(md) if isinstance(md, Mapping) else {}


# ---------------------------------------------------------------------------------------------
# points → particle lists
# ---------------------------------------------------------------------------------------------
def write_points_layer(path: str | os.PathLike, data: Any, meta: Mapping[str, Any], *,
                       format: str | None = None, overwrite: bool = True,
                       **format_options: Any) -> list[str]:
    """Write a Points layer as a particle list (format from ``format`` or the suffix).

    Args:
        path: target file (.txt SHREC, .star RELION, .csv).
        data: the layer data, (n, 3) voxels (z, y, x).
        meta: the layer state (``features``, ``scale``, ``units``, ``metadata``). The voxel
            size comes from ``scale``/``units``, or is left unknown (see the module notes).
        format: "shrec", "star" or "csv"; None picks it from the suffix.
        overwrite: replace an existing file (True for napari, which has asked the user).
        **format_options: passed to :func:`napari_shrec.io.particles.write_particles`.

    Returns:
        ``[path]`` as a string.
    """
    from .io.particles import particle_format_from_path, write_particles
    from .layers import points_layer_to_particles

    fmt = format or particle_format_from_path(path)
    voxel_size = _points_voxel_size_nm(meta)
    md = _layer_metadata(meta)
    particles = points_layer_to_particles(
        data, meta.get("features"), voxel_size_nm=voxel_size,
        metadata={"layer": meta.get("name")}, include_source=(fmt == "csv"))
    options = dict(format_options)
    if fmt == "shrec" and "flavour" not in options and md.get("flavour") == "shrec2021":
        options["flavour"] = "shrec2021"
    if fmt == "star" and "tomo_name" not in options and md.get("tomo_name"):
        options["tomo_name"] = str(md["tomo_name"])
    written = write_particles(path, particles, format=fmt, overwrite=overwrite, **options)
    return [str(written)]


def write_points_shrec(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: Points → SHREC ``class x y z phi theta psi`` text file (.txt)."""
    return write_points_layer(path, data, meta, format="shrec", overwrite=True)


def write_points_star(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: Points → RELION 4 STAR particle file (.star, coordinates in voxels)."""
    return write_points_layer(path, data, meta, format="star", overwrite=True, relion_version=4)


def write_points_csv(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: Points → CSV (class_name, x, y, z, phi, theta, psi, score, extras)."""
    return write_points_layer(path, data, meta, format="csv", overwrite=True)


# ---------------------------------------------------------------------------------------------
# image / labels → MRC
# ---------------------------------------------------------------------------------------------
def write_volume_layer(path: str | os.PathLike, data: Any, meta: Mapping[str, Any], *,
                       overwrite: bool = True) -> list[str]:
    """Write an Image or Labels layer (2D or 3D, z y x) to an MRC file.

    The voxel size comes from the layer scale (nm, see the module notes); the header origin from
    ``metadata["origin_nm"]`` (kept by napari-shrec's readers) or 0. Multiscale data writes its
    full-resolution level; data types MRC cannot hold are converted by
    :func:`napari_shrec.io.mrc.write_mrc` (labels → int16/uint16 when they fit, else float32).

    Raises:
        ValueError: RGB data, or data with more than 3 dimensions (message names the path).
    """
    from .core.volume import Volume
    from .io.mrc import write_mrc

    if meta.get("multiscale"):
        data = data[0]
    if meta.get("rgb"):
        raise ValueError(f"{path}: RGB images cannot be written to MRC")
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: MRC holds 2D or 3D (z, y, x) data; this layer has shape "
                         f"{arr.shape}")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
        vy, vx = voxel_size_nm_from_meta(meta, 2)
        voxel_size = (vx, vy, vx)
    else:
        voxel_size = voxel_size_nm_from_meta(meta, 3)
    md = _layer_metadata(meta)
    origin = md.get("origin_nm", (0.0, 0.0, 0.0))
    try:
        origin_nm = tuple(float(v) for v in np.broadcast_to(np.asarray(origin, dtype=float), (3,)))
    except (TypeError, ValueError):
        origin_nm = (0.0, 0.0, 0.0)
    volume = Volume(data=arr, voxel_size_nm=voxel_size, origin_nm=origin_nm)
    written = write_mrc(path, volume, overwrite=overwrite,
                        image_stack=bool(md.get("is_image_stack", False)))
    return [str(Path(written))]


def write_image_mrc(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: Image → MRC (float32 and other MRC modes kept; voxel size from the scale)."""
    return write_volume_layer(path, data, meta, overwrite=True)


def write_labels_mrc(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: Labels → MRC (integer labels as int16/uint16 when they fit, else float32)."""
    return write_volume_layer(path, data, meta, overwrite=True)

"""OME-Zarr volumes (``.zarr``, ``.ome.zarr`` folders) ⇄ lazy (z, y, x) arrays with a voxel size.

OME-Zarr stores a volume in compressed chunks, at several resolutions (a *pyramid*: level 0 is the
full resolution, level k is 2^k times smaller on every axis). Reading is lazy: :func:`open_ome_zarr`
returns a :class:`~napari_shrec.core.volume.Volume` whose ``data`` is a dask array, so slicing
it reads only the chunks that the slice touches, and a tomogram larger than the memory can be
detected block by block (:func:`napari_shrec.core.detect.detect`) or shown in napari.

Metadata (OME-NGFF "multiscales", versions 0.4 and 0.5 read, 0.4 written — the version most
cryo-ET tools and the CryoET Data Portal read): axes ``z, y, x`` (extra axes of size 1, e.g.
``t`` or ``c``, are dropped); the voxel size of each level is the ``scale`` of its
``coordinateTransformations`` (times the multiscale's own, if any) in the axes' unit, converted
to nm ("nanometer", "angstrom", "micrometer", "picometer"; no unit: nm is assumed and the
metadata records ``voxel_size_unit_assumed``).

Writing (:func:`write_ome_zarr`) goes through ``ome_zarr.writer.write_image`` into a temporary
folder beside the target, renamed onto it at the end; an existing target is refused unless
``overwrite=True`` (and even then a folder that is not an OME-Zarr is never replaced).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.progress import CancelToken, ProgressCallback
from ..core.volume import Volume
from ._json import read_json_object

__all__ = [
    "OME_ZARR_SUFFIXES",
    "OmeZarrError",
    "OmeZarrInfo",
    "is_ome_zarr",
    "read_ome_zarr_info",
    "open_ome_zarr",
    "open_ome_zarr_pyramid",
    "write_ome_zarr",
    "default_pyramid_levels",
    "format_ome_zarr_info",
]

OME_ZARR_SUFFIXES: tuple[str, ...] = (".zarr",)  # ".ome.zarr" ends with ".zarr"
DEFAULT_CHUNKS: tuple[int, int, int] = (64, 64, 64)
#: the automatic pyramid stops at the first level whose largest axis is at most this (voxels).
COARSEST_EDGE = 256

_UNIT_TO_NM: dict[str, float] = {
    "nanometer": 1.0, "nm": 1.0,
    "angstrom": 0.1, "ångström": 0.1, "a": 0.1, "å": 0.1,
    "micrometer": 1000.0, "micron": 1000.0, "um": 1000.0, "µm": 1000.0,
    "picometer": 0.001, "pm": 0.001,
    "millimeter": 1e6, "mm": 1e6,
}
_SPATIAL = ("z", "y", "x")


class OmeZarrError(ValueError):
    """An OME-Zarr folder that cannot be read; the message names the folder."""


@dataclass(frozen=True)
class OmeZarrInfo:
    """What the metadata of an OME-Zarr image says (no chunk is read).

    Attributes:
        path: the folder.
        version: OME-NGFF version ("0.4", "0.5", …; "" when the metadata names none).
        shapes_zyx: shape (z, y, x) of each pyramid level, full resolution first.
        voxel_sizes_nm: voxel size (z, y, x) in nm of each level.
        dtype: data type of level 0.
        chunks_zyx: chunk shape (z, y, x) of level 0.
        dataset_paths: the levels' array paths inside the folder.
        unit_assumed: the axes name no unit; nm was assumed.
        name: the image's name in the metadata ("" if none).
        axis_names: the arrays' axes as stored (e.g. ("z", "y", "x") or ("c", "z", "y", "x")).
    """

    path: Path
    version: str
    shapes_zyx: tuple[tuple[int, int, int], ...]
    voxel_sizes_nm: tuple[tuple[float, float, float], ...]
    dtype: str
    chunks_zyx: tuple[int, int, int]
    dataset_paths: tuple[str, ...]
    unit_assumed: bool
    name: str
    axis_names: tuple[str, ...] = _SPATIAL

    @property
    def levels(self) -> int:
        return len(self.shapes_zyx)


# --------------------------------------------------------------------------- metadata


def _image_group(path: Path) -> tuple[Path, dict[str, Any], str] | None:
    """(image folder, its "multiscales" entry, NGFF version) or None: an OME-NGFF 0.4 group
    (``.zattrs``), a 0.5 one (``zarr.json`` attributes ``ome``), or a bioformats2raw layout
    whose first image (``0/``) is one."""
    if not path.is_dir():
        return None
    attrs = read_json_object(path / ".zattrs")
    version = ""
    if attrs is None:
        meta = read_json_object(path / "zarr.json")
        if meta is None:
            return None
        attrs = meta.get("attributes") or {}
        if isinstance(attrs.get("ome"), dict):
            version = str(attrs["ome"].get("version", ""))
            attrs = attrs["ome"]
    multiscales = attrs.get("multiscales")
    if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
        entry = multiscales[0]
        return path, entry, str(entry.get("version", version) or version)
    if "bioformats2raw.layout" in attrs and (path / "0").is_dir():
        return _image_group(path / "0")
    return None


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding an OME-Zarr multiscale image (reads only its small
    JSON metadata files)."""
    return _image_group(Path(path)) is not None


def _scale_of(transforms: Any) -> list[float] | None:
    for t in transforms or ():
        if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t:
            return [float(v) for v in t["scale"]]
    return None


def read_ome_zarr_info(path: str | os.PathLike) -> OmeZarrInfo:
    """The shapes, voxel sizes (nm), dtype and chunks of every level of an OME-Zarr image.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OmeZarrError: it is not an OME-Zarr image, or its metadata cannot be used (message
            names the folder and the cause).
    """
    import zarr

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such OME-Zarr folder: {p}")
    found = _image_group(p)
    if found is None:
        raise OmeZarrError(f"{p}: not an OME-Zarr image (no 'multiscales' metadata in .zattrs "
                           "or zarr.json)")
    folder, entry, version = found
    raw_axes = entry.get("axes") or [{"name": n} for n in ("t", "c", "z", "y", "x")]
    axes = [a if isinstance(a, dict) else {"name": str(a)} for a in raw_axes]
    names = [str(a.get("name", "")).lower() for a in axes]
    if not set(_SPATIAL) <= set(names):
        raise OmeZarrError(f"{p}: axes {names} do not include z, y and x")
    spatial = [names.index(n) for n in _SPATIAL]
    units = {str(axes[i].get("unit", "") or "").lower() for i in spatial}
    unit_assumed = units == {""}
    if len(units) != 1:
        raise OmeZarrError(f"{p}: the z, y, x axes have different units {sorted(units)}")
    unit = units.pop() or "nanometer"
    if unit not in _UNIT_TO_NM:
        raise OmeZarrError(f"{p}: unknown axis unit {unit!r}; known: "
                           f"{', '.join(sorted({k for k in _UNIT_TO_NM if len(k) > 2}))}")
    factor = _UNIT_TO_NM[unit]
    global_scale = _scale_of(entry.get("coordinateTransformations")) or [1.0] * len(axes)
    datasets = entry.get("datasets") or []
    if not datasets:
        raise OmeZarrError(f"{p}: the multiscales metadata lists no datasets")
    shapes, sizes, paths = [], [], []
    dtype, chunks = "", (0, 0, 0)
    for k, ds in enumerate(datasets):
        ds_path = str(ds.get("path", ""))
        try:
            array = zarr.open_array(store=str(folder / ds_path), mode="r")
        except Exception as exc:  # zarr raises several types for a missing/bad array
            raise OmeZarrError(f"{p}: cannot open level {k} ({ds_path!r}): {exc}") from exc
        if array.ndim != len(axes):
            raise OmeZarrError(f"{p}: level {k} has {array.ndim} dimensions, the axes "
                               f"{len(axes)}")
        extra = [array.shape[i] for i in range(array.ndim) if i not in spatial]
        if any(n != 1 for n in extra):
            raise OmeZarrError(f"{p}: only one 3D volume per image can be read; axes "
                               f"{names} have shape {tuple(array.shape)}")
        scale = _scale_of(ds.get("coordinateTransformations")) or [1.0] * len(axes)
        vs = tuple(float(scale[i] * global_scale[i] * factor) for i in spatial)
        if not all(math.isfinite(v) and v > 0 for v in vs):
            raise OmeZarrError(f"{p}: level {k} has a non-positive voxel size {vs} nm")
        shapes.append(tuple(int(array.shape[i]) for i in spatial))
        sizes.append(vs)
        paths.append(ds_path)
        if k == 0:
            dtype = str(array.dtype)
            chunks = tuple(int(array.chunks[i]) for i in spatial)
    return OmeZarrInfo(path=p, version=version, shapes_zyx=tuple(shapes),
                       voxel_sizes_nm=tuple(sizes), dtype=dtype, chunks_zyx=chunks,
                       dataset_paths=tuple(paths), unit_assumed=unit_assumed,
                       name=str(entry.get("name", "") or ""), axis_names=tuple(names))


# --------------------------------------------------------------------------- reading
def open_ome_zarr_pyramid(path: str | os.PathLike) -> list[Volume]:
    """Every level of an OME-Zarr image as a lazy :class:`Volume` (full resolution first):
    ``data`` is a (z, y, x) dask array over the zarr chunks, nothing is read yet.

    Raises:
        FileNotFoundError, OmeZarrError: as :func:`read_ome_zarr_info`.
    """
    import dask.array as da
    import zarr

    info = read_ome_zarr_info(path)
    folder = _image_group(info.path)[0]  # type: ignore[index]
    volumes = []
    for k, (ds_path, vs) in enumerate(zip(info.dataset_paths, info.voxel_sizes_nm)):
        array = zarr.open_array(store=str(folder / ds_path), mode="r")
        # keep z, y, x (in that order); the other axes have size 1
        data = da.from_zarr(array)[tuple(slice(None) if n in _SPATIAL else 0
                                         for n in info.axis_names)]
        order = [n for n in info.axis_names if n in _SPATIAL]
        data = data.transpose([order.index(n) for n in _SPATIAL])
        metadata = {"source": str(info.path), "format": "ome-zarr", "ngff_version": info.version,
                    "level": k, "levels": info.levels, "chunks_zyx": info.chunks_zyx,
                    "voxel_size_from_header": not info.unit_assumed}
        if info.unit_assumed:
            metadata["voxel_size_unit_assumed"] = "nanometer"
        volumes.append(Volume(data=data, voxel_size_nm=vs, metadata=metadata))
    return volumes


def open_ome_zarr(path: str | os.PathLike, level: int = 0) -> Volume:
    """One level of an OME-Zarr image (0: full resolution) as a lazy :class:`Volume`: ``data``
    is a (z, y, x) dask array (slicing reads only the chunks touched), ``voxel_size_nm`` the
    level's voxel size (z, y, x) in nm.

    Raises:
        FileNotFoundError, OmeZarrError: as :func:`read_ome_zarr_info`; ValueError for a level
        the image does not have.
    """
    volumes = open_ome_zarr_pyramid(path)
    if not 0 <= int(level) < len(volumes):
        raise ValueError(f"{path}: level {level} does not exist (the image has levels 0…"
                         f"{len(volumes) - 1})")
    return volumes[int(level)]


# --------------------------------------------------------------------------- writing
def default_pyramid_levels(shape_zyx: Sequence[int]) -> int:
    """Levels (full resolution included) of an automatic pyramid: halve every axis until the
    largest is at most :data:`COARSEST_EDGE` voxels (or an axis would drop below 2)."""
    levels = 1
    shape = [int(n) for n in shape_zyx]
    while max(shape) > COARSEST_EDGE and min(shape) >= 4:
        shape = [math.ceil(n / 2) for n in shape]
        levels += 1
    return levels


def _chunks_zyx(chunks: int | Sequence[int] | None, shape: Sequence[int]) -> tuple[int, ...]:
    raw = DEFAULT_CHUNKS if chunks is None else (
        (int(chunks),) * 3 if np.ndim(chunks) == 0 else tuple(int(c) for c in chunks))
    if len(raw) != 3 or any(c < 1 for c in raw):
        raise ValueError(f"chunks must be a positive integer or 3 positive integers (z, y, x), "
                         f"got {chunks!r}")
    return tuple(min(c, max(1, int(n))) for c, n in zip(raw, shape))


def write_ome_zarr(
    path: str | os.PathLike,
    volume_zyx: Any,
    voxel_size_nm: float | Sequence[float] | None = None,
    *,
    chunks: int | Sequence[int] | None = None,
    pyramid_levels: int | None = None,
    overwrite: bool = False,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write a (z, y, x) volume as an OME-Zarr image (OME-NGFF 0.4, zstd-compressed chunks) with
    a pyramid of 2 × 2 × 2 block means, atomically.

    Args:
        path: target folder (conventionally ``NAME.ome.zarr``).
        volume_zyx: a numpy array, memmap, dask array (written chunk by chunk, never whole in
            memory) or a :class:`Volume` (its voxel size is used when ``voxel_size_nm`` is None).
        voxel_size_nm: voxel edge in nm, a scalar or (z, y, x); default the Volume's, else 1.
        chunks: chunk shape (z, y, x) in voxels, or one edge for all axes (default 64³).
        pyramid_levels: levels including the full resolution (1: none); default
            :func:`default_pyramid_levels`.
        overwrite: replace an existing OME-Zarr at ``path`` (a file or a folder that is not an
            OME-Zarr is never replaced).
        name: the image's name in the metadata (default: the folder name without suffixes).
        progress, cancel: ``progress(done, total, message)`` per written chunk task; cancel
            stops the writing (the target is left untouched).

    Returns:
        ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is not an OME-Zarr.
        ValueError: not a 3D volume, bad voxel size, chunks or levels.
    """
    import dask.array as da
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    target = Path(path)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True (CLI: "
                                  "--overwrite) to replace it")
        if not is_ome_zarr(target):
            raise FileExistsError(f"{target} exists and is not an OME-Zarr image; not replaced")
    data = volume_zyx.data if isinstance(volume_zyx, Volume) else volume_zyx
    if voxel_size_nm is None:
        voxel_size_nm = volume_zyx.voxel_size_nm if isinstance(volume_zyx, Volume) else 1.0
    if not hasattr(data, "ndim") or data.ndim != 3:
        raise ValueError(f"{target}: an OME-Zarr volume must be a 3D (z, y, x) array, got shape "
                         f"{getattr(data, 'shape', None)}")
    vs = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size_nm, dtype=float), (3,)))
    if not all(math.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"{target}: voxel_size_nm must be positive, got {voxel_size_nm!r}")
    shape = tuple(int(n) for n in data.shape)
    chunk = _chunks_zyx(chunks, shape)
    levels = default_pyramid_levels(shape) if pyramid_levels is None else int(pyramid_levels)
    if levels < 1:
        raise ValueError(f"pyramid_levels must be ≥ 1, got {pyramid_levels!r}")
    if levels > 1 and min(shape) < 2 ** (levels - 1):
        raise ValueError(f"{target}: {levels} pyramid levels need every axis ≥ "
                         f"{2 ** (levels - 1)} voxels, the volume is {shape}")
    array = data.rechunk(chunk) if isinstance(data, da.Array) else da.from_array(data,
                                                                                 chunks=chunk)
    label = name if name is not None else target.name.split(".")[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        jobs = write_image(
            array, group,
            scale_factors=[{a: 2 ** k for a in _SPATIAL} for k in range(1, levels)],
            method=Methods.LOCAL_MEAN, fmt=FormatV04(), axes=list(_SPATIAL),
            scale=dict(zip(_SPATIAL, vs)), axes_units=dict.fromkeys(_SPATIAL, "nanometer"),
            storage_options={"chunks": chunk}, name=label, compute=False)
        _compute_with_progress(jobs, progress, cancel, f"writing {target.name}")
        _replace_folder(tmp, target, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _compute_with_progress(jobs: list, progress: ProgressCallback | None,
                           cancel: CancelToken | None, message: str) -> None:
    """``dask.compute(*jobs)`` reporting finished tasks and checking ``cancel`` after each."""
    import dask
    from dask.callbacks import Callback

    class _Report(Callback):
        total = 0
        done = 0

        def _start_state(self, dsk, state):  # noqa: ANN001 - dask's callback signature
            # tasks still to run (literal data already sits in the cache)
            self.total = max(1, len(dsk) - len(state.get("cache", ())))

        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001
            self.done += 1
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress is not None:
                progress(min(self.done, self.total), self.total, message)

    if cancel is not None:
        cancel.raise_if_cancelled()
    with _Report():
        dask.compute(*jobs)


def _replace_folder(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished folder ``tmp`` onto ``target`` (an existing OME-Zarr there is moved
    aside first and deleted only once the new one is in place)."""
    old = None
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{target} appeared while writing; not overwritten")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    os.chmod(target, _folder_mode())


def _folder_mode() -> int:
    """Permission bits of a new folder (0777 minus the umask): mkdtemp makes it 0700."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def format_ome_zarr_info(info: OmeZarrInfo) -> str:
    """Lines for ``napari-shrec info``: shape, dtype, voxel size and chunks, then each level."""
    vz, vy, vx = info.voxel_sizes_nm[0]
    note = " (no unit in the metadata; nm assumed)" if info.unit_assumed else ""
    lines = [f"{info.path}: OME-Zarr {info.version or '?'}, shape (z, y, x) {info.shapes_zyx[0]}, "
             f"{info.dtype}, voxel size (z, y, x) {vz:g} {vy:g} {vx:g} nm{note}, chunks "
             f"{info.chunks_zyx}, {info.levels} level{'s' if info.levels > 1 else ''}"]
    for k, (shape, vs) in enumerate(zip(info.shapes_zyx, info.voxel_sizes_nm)):
        lines.append(f"  level {k} ({info.dataset_paths[k]}): {shape}, voxel size "
                     f"{vs[0]:g} {vs[1]:g} {vs[2]:g} nm")
    return "\n".join(lines)

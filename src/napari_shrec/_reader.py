"""npe2 reader contributions: MRC volumes, OME-Zarr volumes, particle lists and SHREC dataset
folders.

Each ``get_*_reader(path)`` follows npe2's reader contract: it receives a path (str) or a list of
paths and returns a function ``reader(path) -> list[LayerDataTuple]``, or None when it cannot
read the path (so napari tries other readers). Volumes are memory-mapped; layers are built by
:mod:`napari_shrec.layers` (scale = voxel size in nm, z y x; units nm; class colours).

Large volumes open lazily, as multiscale Image layers (a list of arrays, full resolution first;
napari shows the level that fits the screen): an OME-Zarr folder with its stored pyramid (dask
arrays over its chunks), and an MRC file larger than :data:`LAZY_PYRAMID_BYTES` with a pyramid
of 2 × 2 × 2 block means that dask computes only for what is displayed.

Errors while reading a file that a reader claimed are raised with the file named in the message
(napari shows it in a notification).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .layers import LayerDataTuple

# napari imports this module at its first reader query: everything that pulls pandas or scipy
# (.layers, .core, .io.mrc, .io.particles, .io.dataset) is imported inside the functions.

__all__ = [
    "get_mrc_reader",
    "get_ome_zarr_reader",
    "get_particles_reader",
    "get_dataset_reader",
    "read_mrc_layers",
    "read_ome_zarr_layers",
    "LAZY_PYRAMID_BYTES",
    "read_particle_layers",
    "read_dataset_layers",
]

log = logging.getLogger(__name__)

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]

#: MRC files larger than this open as a lazy multiscale layer (1 GiB: a 640³ float32 volume).
LAZY_PYRAMID_BYTES = 1 << 30
#: the dask chunks (z, y, x) over a large MRC's memory map (multiples of 2^levels).
_MRC_CHUNK = (64, 256, 256)
ReaderFunction = Callable[[PathOrPaths], "list[LayerDataTuple]"]


def _as_paths(path: PathOrPaths) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        return [Path(path)]
    return [Path(p) for p in path]


def _all_have_suffix(paths: list[Path], suffixes: Sequence[str]) -> bool:
    return bool(paths) and all(p.suffix.lower() in suffixes for p in paths)


# ---------------------------------------------------------------------------------------------
# MRC volumes
# ---------------------------------------------------------------------------------------------
def get_mrc_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Reader for MRC/CCP4 files (``.mrc .rec .map .st .mrcs .ali .ccp4``), or None."""
    from .io.mrc import MRC_SUFFIXES

    paths = _as_paths(path)
    if not _all_have_suffix(paths, MRC_SUFFIXES) or any(p.is_dir() for p in paths):
        return None
    return read_mrc_layers


def read_mrc_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """One Image layer per MRC file: memory-mapped data (z, y, x), scale = voxel size (nm),
    units nm, name = the file stem.

    Raises:
        FileNotFoundError, MrcReadError: messages name the file.
    """
    from .io.mrc import read_mrc
    from .layers import volume_to_image_layer

    layers: list[LayerDataTuple] = []
    for p in _as_paths(path):
        volume = read_mrc(p, mmap=True)
        layer = volume_to_image_layer(volume, p.stem, metadata={"source": str(p)})
        if volume.data.nbytes > LAZY_PYRAMID_BYTES:
            pyramid = _lazy_pyramid(volume.data)
            layer[1]["metadata"]["lazy_pyramid_levels"] = len(pyramid)
            layer = (pyramid, {**layer[1], "multiscale": True}, layer[2])
        layers.append(layer)
    return layers


def _lazy_pyramid(data: Any) -> list[Any]:
    """Levels of 2 × 2 × 2 block means over a (z, y, x) array, as dask arrays computed only
    where napari looks: full resolution first, halved until the largest axis is ≤ 256 voxels
    (odd edges are trimmed). Integer data is averaged into float32."""
    import dask.array as da
    import numpy as np

    from .io.zarr import default_pyramid_levels

    chunks = tuple(min(c, n) for c, n in zip(_MRC_CHUNK, data.shape))
    levels = [da.from_array(data, chunks=chunks)]
    for _ in range(1, default_pyramid_levels(data.shape)):
        coarse = da.coarsen(np.mean, levels[-1], {0: 2, 1: 2, 2: 2}, trim_excess=True)
        levels.append(coarse.astype(np.float32))
    return levels


# ---------------------------------------------------------------------------------------------
# OME-Zarr volumes
# ---------------------------------------------------------------------------------------------
def get_ome_zarr_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Reader for OME-Zarr image folders (``*.zarr``, ``*.ome.zarr``), or None."""
    from .io.zarr import is_ome_zarr

    paths = _as_paths(path)
    if not paths or not all(p.is_dir() and is_ome_zarr(p) for p in paths):
        return None
    return read_ome_zarr_layers


def read_ome_zarr_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """One Image layer per OME-Zarr folder, multiscale when it holds a pyramid: its levels as
    lazy dask arrays (z, y, x), full resolution first; scale = level-0 voxel size (nm), units
    nm; contrast limits from the coarsest level; name = the folder name without ``.ome.zarr``.

    Raises:
        FileNotFoundError, OmeZarrError: messages name the folder.
    """
    from .io.zarr import open_ome_zarr_pyramid
    from .layers import contrast_limits_from_sample, volume_to_image_layer

    layers: list[LayerDataTuple] = []
    for p in _as_paths(path):
        levels = open_ome_zarr_pyramid(p)
        name = p.name.removesuffix(".zarr").removesuffix(".ome")
        limits = contrast_limits_from_sample(levels[-1].data)
        data, kwargs, kind = volume_to_image_layer(
            levels[0], name, contrast_limits=limits,
            metadata={"source": str(p), "format": "ome-zarr", "levels": len(levels)})
        pyramid = [v.data for v in levels]
        layers.append((pyramid if len(pyramid) > 1 else data,
                       {**kwargs, "multiscale": len(pyramid) > 1}, kind))
    return layers


# ---------------------------------------------------------------------------------------------
# particle lists
# ---------------------------------------------------------------------------------------------
_SNIFF_LINES = 20
_STAR_SNIFF_BYTES = 1 << 16
_STAR_PIXEL_COORDINATES = "_rlnCoordinateX"
_STAR_CENTRED_COORDINATES = "_rlnCenteredCoordinateXAngst"


def _star_head(p: Path) -> str:
    """The first 64 kB of a STAR file as text ('' if unreadable)."""
    try:
        with p.open("rb") as fh:
            return fh.read(_STAR_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _looks_like_particle_file(p: Path) -> bool:
    """A cheap look at the start of the file: could it be a particle list napari can open?

    - ``.star``: the first 64 kB name ``_rlnCoordinateX`` (RELION 3/4 pixel coordinates) and
      not ``_rlnCenteredCoordinateXAngst``. A RELION 5 file with centred coordinates cannot be
      read without the tomogram's shape (and the reader prefers those columns when both are
      present), so it is left to other readers; ``tomograms.star``, optics-only files and other
      STAR files without coordinates are not claimed either;
    - ``.csv``: a header naming ``x``, ``y`` and ``z`` (any case) and ``class``/``class_name``;
    - ``.txt``: the first non-comment line has >= 4 whitespace-separated columns, a first
      column that is not a number (the class label) and finite numbers in columns 2–4, as the
      SHREC reader parses them. An empty file is not claimed.
    """
    suffix = p.suffix.lower()
    if suffix == ".star":
        head = _star_head(p)
        return _STAR_PIXEL_COORDINATES in head and _STAR_CENTRED_COORDINATES not in head
    try:
        with p.open("r", encoding="utf-8-sig", errors="strict") as fh:
            lines = [fh.readline() for _ in range(_SNIFF_LINES)]
    except (OSError, UnicodeDecodeError):
        return False
    content = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not content:
        return False
    first = content[0]
    if suffix == ".csv":
        header = {h.strip().strip('"').lower() for h in first.split(",")}
        return {"x", "y", "z"} <= header and bool({"class", "class_name"} & header)
    fields = first.split()
    if len(fields) < 4 or _number(fields[0]) is not None:
        return False
    return all((v := _number(f)) is not None and math.isfinite(v) for f in fields[1:4])


def _number(token: str) -> float | None:
    """``token`` parsed as the SHREC reader parses numbers, or None."""
    from .io._particles_common import parse_float

    try:
        return parse_float(token)
    except ValueError:
        return None


def get_particles_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Reader for particle lists (SHREC ``.txt``, RELION 3/4 ``.star``, ``.csv``), or None for
    a file that does not look like one (so napari can try other readers), RELION 5 centred
    STAR files included (convert them first: ``napari-shrec convert --tomogram-shape …
    --voxel-size …``)."""
    from .io.particles import PARTICLE_SUFFIXES

    paths = _as_paths(path)
    if not _all_have_suffix(paths, PARTICLE_SUFFIXES):
        return None
    if not all(p.is_file() and _looks_like_particle_file(p) for p in paths):
        return None
    return read_particle_layers


def read_particle_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """One Points layer per particle file: data (z, y, x) voxels, coloured by class, named after
    the file stem. The voxel size is the file's (STAR optics) or 1 nm (recorded in the layer
    metadata as ``voxel_size_assumed``). Sources: ``predicted`` when the list has scores,
    else ``ground truth`` for a ``particle_locations.txt``, else ``manual``.

    Raises:
        FileNotFoundError, ParticleFileError: messages name the file (and line).
    """
    from .core.classes import SHREC21_TABLE
    from .io.particles import read_particles
    from .layers import particles_to_points_layer

    layers: list[LayerDataTuple] = []
    for p in _as_paths(path):
        particles = read_particles(p)
        has_scores = len(particles) > 0 and bool(particles.table["score"].notna().any())
        if has_scores:
            source = "predicted"
        elif p.name == "particle_locations.txt":
            source = "ground truth"
        else:
            source = "manual"
        layers.append(particles_to_points_layer(
            particles, p.stem, class_table=SHREC21_TABLE, source=source,
            metadata={"source_file": str(p), "format": particles.metadata.get("format")},
        ))
    return layers


# ---------------------------------------------------------------------------------------------
# dataset folders
# ---------------------------------------------------------------------------------------------
def get_dataset_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Reader for SHREC dataset folders (``model_0`` …, or a napari-shrec simulation), or None."""
    from .io.dataset import is_dataset_folder

    paths = _as_paths(path)
    if not paths or not all(p.is_dir() and is_dataset_folder(p) for p in paths):
        return None
    return read_dataset_layers


def read_dataset_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """The layers of one or more dataset folders, bottom to top:

    - ``<folder> reconstruction`` (Image, visible) — the 512³ tomogram, if present;
    - ``<folder> grandmodel`` (Image; visible when there is no reconstruction, else hidden) and
      ``<folder> grandmodel noise-free`` (Image, hidden);
    - ``<folder> class mask`` (Labels, hidden, class colours) and ``<folder> occupancy mask``
      (Labels, hidden, one colour per particle);
    - ``<folder> ground truth`` (Points, hidden, coloured by class).

    Layers in the grandmodel frame (grandmodel, masks, ground truth) are translated by
    ``grandmodel_z_offset`` voxels in z (156 for SHREC'20) so they align with the reconstruction.
    Every layer is scaled by the dataset's voxel size (``simulation.json``, else the first MRC
    header that has one, else 1 nm), not by its own file's header: SHREC masks often have no
    voxel size in their header. A header that gives a different one is logged as a warning.

    Raises:
        FileNotFoundError, DatasetError, MrcReadError: messages name the folder or file.
    """
    layers: list[LayerDataTuple] = []
    for folder in _as_paths(path):
        layers.extend(_dataset_layers(folder))
    return layers


def _dataset_layers(folder: Path) -> list[LayerDataTuple]:
    from .io.dataset import load_dataset
    from .layers import (
        class_mask_to_labels_layer,
        occupancy_to_labels_layer,
        particles_to_points_layer,
        volume_to_image_layer,
    )

    ds = load_dataset(folder)
    label = folder.name or str(folder)
    offset = (float(ds.grandmodel_z_offset), 0.0, 0.0)
    # one voxel size for every layer (the ground truth's): SHREC mask headers often hold none,
    # and a layer scaled by its own header would then not lie on the others
    vs = float(ds.voxel_size_nm)
    common: dict[str, Any] = {
        "dataset": str(ds.folder),
        "flavour": ds.flavour,
        "grandmodel_z_offset": int(ds.grandmodel_z_offset),
    }
    layers: list[LayerDataTuple] = []
    has_reconstruction = "reconstruction" in ds.volume_paths
    if has_reconstruction:
        layers.append(volume_to_image_layer(
            ds.read_volume("reconstruction"), f"{label} reconstruction", visible=True,
            voxel_size_nm=vs,
            metadata={**common, "volume": "reconstruction", "frame": "reconstruction"}))
    first_visible = not has_reconstruction
    for name, title in (("grandmodel", "grandmodel"),
                        ("grandmodel_noisefree", "grandmodel noise-free")):
        if name not in ds.volume_paths:
            continue
        layers.append(volume_to_image_layer(
            ds.read_volume(name), f"{label} {title}", visible=first_visible,
            translate_zyx_vox=offset, voxel_size_nm=vs,
            metadata={**common, "volume": name, "frame": "grandmodel"}))
        first_visible = False
    if "class_mask" in ds.volume_paths:
        layers.append(class_mask_to_labels_layer(
            ds.read_class_mask("class_mask"), f"{label} class mask", class_table=ds.class_table,
            visible=False, translate_zyx_vox=offset, voxel_size_nm=vs,
            metadata={**common, "volume": "class_mask", "frame": "grandmodel"}))
    if "occupancy_mask" in ds.volume_paths:
        layers.append(occupancy_to_labels_layer(
            ds.read_volume("occupancy_mask"), f"{label} occupancy mask",
            particles=ds.particles, visible=False, translate_zyx_vox=offset, voxel_size_nm=vs,
            metadata={**common, "volume": "occupancy_mask", "frame": "grandmodel"}))
    if len(ds.particles) or (ds.folder / "particle_locations.txt").is_file():
        layers.append(particles_to_points_layer(
            ds.particles, f"{label} ground truth", class_table=ds.class_table,
            source="ground truth", voxel_size_nm=vs, translate_zyx_vox=offset,
            visible=False, metadata={**common, "frame": "grandmodel"}))
    if not layers:
        log.warning("%s: dataset folder holds no volume or particle list napari can show", folder)
    return layers

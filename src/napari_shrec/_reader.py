"""npe2 reader contributions: MRC volumes, particle lists and SHREC dataset folders.

Each ``get_*_reader(path)`` follows npe2's reader contract: it receives a path (str) or a list of
paths and returns a function ``reader(path) -> list[LayerDataTuple]``, or None when it cannot
read the path (so napari tries other readers). Volumes are memory-mapped; layers are built by
:mod:`napari_shrec.layers` (scale = voxel size in nm, z y x; units nm; class colours).

Errors while reading a file that a reader claimed are raised with the file named in the message
(napari shows it in a notification).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .layers import LayerDataTuple

__all__ = [
    "get_mrc_reader",
    "get_particles_reader",
    "get_dataset_reader",
    "read_mrc_layers",
    "read_particle_layers",
    "read_dataset_layers",
]

log = logging.getLogger(__name__)

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
ReaderFunction = Callable[[PathOrPaths], list[LayerDataTuple]]

_MRC_READER_SUFFIXES = (".mrc", ".rec", ".map", ".st", ".mrcs", ".ali", ".ccp4")
_PARTICLE_READER_SUFFIXES = (".txt", ".star", ".csv")


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
    paths = _as_paths(path)
    if not _all_have_suffix(paths, _MRC_READER_SUFFIXES) or any(p.is_dir() for p in paths):
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
        layers.append(volume_to_image_layer(volume, p.stem, metadata={"source": str(p)}))
    return layers


# ---------------------------------------------------------------------------------------------
# particle lists
# ---------------------------------------------------------------------------------------------
_SNIFF_LINES = 20


def _looks_like_particle_file(p: Path) -> bool:
    """A cheap look at the first lines: could this .txt/.csv be a particle list?

    - ``.star``: always (a STAR file that holds no particles raises a clear error when read);
    - ``.csv``: a header naming ``x``, ``y`` and ``z`` (any case) and ``class``/``class_name``;
    - ``.txt``: the first non-comment line has >= 4 whitespace-separated columns, a first
      column that is not a number (the class label) and numbers in columns 2–4.
    """
    suffix = p.suffix.lower()
    if suffix == ".star":
        return True
    try:
        with p.open("r", encoding="utf-8-sig", errors="strict") as fh:
            lines = [fh.readline() for _ in range(_SNIFF_LINES)]
    except (OSError, UnicodeDecodeError):
        return False
    content = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not content:
        return suffix == ".txt" and p.stat().st_size == 0
    first = content[0]
    if suffix == ".csv":
        header = {h.strip().strip('"').lower() for h in first.split(",")}
        return {"x", "y", "z"} <= header and bool({"class", "class_name"} & header)
    fields = first.split()
    if len(fields) < 4 or _is_number(fields[0]):
        return False
    return all(_is_number(f) for f in fields[1:4])


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def get_particles_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Reader for particle lists (SHREC ``.txt``, RELION ``.star``, ``.csv``), or None for a
    file that does not look like one (so napari can try other readers)."""
    paths = _as_paths(path)
    if not _all_have_suffix(paths, _PARTICLE_READER_SUFFIXES):
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
            metadata={**common, "volume": "reconstruction", "frame": "reconstruction"}))
    first_visible = not has_reconstruction
    for name, title in (("grandmodel", "grandmodel"),
                        ("grandmodel_noisefree", "grandmodel noise-free")):
        if name not in ds.volume_paths:
            continue
        layers.append(volume_to_image_layer(
            ds.read_volume(name), f"{label} {title}", visible=first_visible,
            translate_zyx_vox=offset,
            metadata={**common, "volume": name, "frame": "grandmodel"}))
        first_visible = False
    if "class_mask" in ds.volume_paths:
        layers.append(class_mask_to_labels_layer(
            ds.read_class_mask("class_mask"), f"{label} class mask", class_table=ds.class_table,
            visible=False, translate_zyx_vox=offset,
            metadata={**common, "volume": "class_mask", "frame": "grandmodel"}))
    if "occupancy_mask" in ds.volume_paths:
        layers.append(occupancy_to_labels_layer(
            ds.read_volume("occupancy_mask"), f"{label} occupancy mask",
            particles=ds.particles, visible=False, translate_zyx_vox=offset,
            metadata={**common, "volume": "occupancy_mask", "frame": "grandmodel"}))
    if len(ds.particles) or (ds.folder / "particle_locations.txt").is_file():
        layers.append(particles_to_points_layer(
            ds.particles, f"{label} ground truth", class_table=ds.class_table,
            source="ground truth", voxel_size_nm=ds.voxel_size_nm, translate_zyx_vox=offset,
            visible=False, metadata={**common, "frame": "grandmodel"}))
    if not layers:
        log.warning("%s: dataset folder holds no volume or particle list napari can show", folder)
    return layers

"""Open the tomogram a user names for detection: an MRC file, an OME-Zarr image folder or a
dataset folder (its reconstruction), as the ``detect`` CLI and the Detect widget both accept."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.volume import Volume
from .dataset import ShrecDataset

__all__ = ["OpenedTomogram", "grandmodel_nz", "open_tomogram"]


@dataclass(frozen=True)
class OpenedTomogram:
    """A tomogram opened for detection.

    Attributes:
        volume: the tomogram (z, y, x); memory-mapped (MRC) or lazy (OME-Zarr), never read whole.
        dataset: the dataset folder it came from (None for a bare file or OME-Zarr image).
        z_offset: tomogram z = grandmodel z + this (0 without a dataset).
        grandmodel_nz: z slices of the dataset's grandmodel frame (class or occupancy mask,
            or grandmodel; None when it has none).
    """

    volume: Volume
    dataset: ShrecDataset | None = None
    z_offset: int = 0
    grandmodel_nz: int | None = None


def grandmodel_nz(dataset: ShrecDataset) -> int | None:
    """z slices of a dataset's grandmodel frame: its class mask, occupancy mask or grandmodel
    (the first it has, from the header alone), else None."""
    for name in ("class_mask", "occupancy_mask", "grandmodel"):
        if dataset.has(name):
            return int(dataset.headers[name]["shape_zyx"][0])
    return None


def open_tomogram(path: str | os.PathLike, *, reconstruct_hint: str) -> OpenedTomogram:
    """Open ``path``: an OME-Zarr folder (lazily), a dataset folder (its ``reconstruction.mrc``)
    or an MRC file (memory-mapped).

    Args:
        path: the file or folder.
        reconstruct_hint: how to make a missing reconstruction, for the error message (e.g.
            "run 'napari-shrec reconstruct FOLDER' first").

    Raises:
        FileNotFoundError: no such file, a folder that is neither kind, or a dataset without a
            reconstruction (the message names the path).
    """
    from .dataset import is_dataset_folder, load_dataset
    from .mrc import read_mrc
    from .zarr import is_ome_zarr, open_ome_zarr

    path = Path(path)
    if path.is_dir() and is_ome_zarr(path):
        return OpenedTomogram(open_ome_zarr(path))  # lazy: read block by block
    if path.is_dir():
        if not is_dataset_folder(path):
            raise FileNotFoundError(f"{path}: neither an OME-Zarr image nor a dataset folder (no "
                                    "reconstruction.mrc and particle_locations.txt); choose a "
                                    "tomogram MRC file or OME-Zarr folder")
        ds = load_dataset(path)
        if not ds.has("reconstruction"):
            raise FileNotFoundError(f"{path}: no reconstruction.mrc; {reconstruct_hint}")
        return OpenedTomogram(ds.read_volume("reconstruction"), ds, int(ds.grandmodel_z_offset),
                              grandmodel_nz(ds))
    if not path.is_file():
        raise FileNotFoundError(f"no such tomogram: {path}")
    return OpenedTomogram(read_mrc(path))

"""What to reconstruct: a dataset folder's tilt series or an IMOD-style stack plus ``.tlt``.

:func:`load_tilt_series` gathers the projections, tilt angles, pixel size, per-tilt defocus and
microscope parameters (when a napari-shrec ``simulation.json`` records them), and the frame the
reconstruction should have:

- ``native`` (default for napari-shrec datasets): thickness = the grandmodel's z size, tilt axis at
  its centre slice; the reconstruction overlays the grandmodel voxel for voxel (z offset 0).
- ``shrec2020`` (default for SHREC'20/'21 folders and bare stacks): a cube as wide as the detector
  (512³ for SHREC data) with the tilt axis at its centre slice, so a 200-slice grandmodel sits at
  z 156…355 as in the released data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FRAMES", "TiltSeriesInput", "load_tilt_series", "frame_geometry"]

FRAMES = ("native", "shrec2020")


@dataclass
class TiltSeriesInput:
    """A tilt series ready for :func:`napari_shrec.core.reconstruct.reconstruct`.

    Attributes:
        projections: (tilt, y, x) array (may be memory-mapped).
        tilt_angles_deg: one angle per projection.
        pixel_size_nm: detector pixel size.
        source: where it came from (folder or stack path).
        dataset_folder: the dataset folder, or None for a bare stack.
        grandmodel_nz: the grandmodel's z size when known (napari-shrec / SHREC datasets).
        default_frame: "native" for napari-shrec datasets, else "shrec2020".
        defocus_um: per-tilt defocus when recorded, else None.
        microscope: voltage_kv, cs_mm, amplitude_contrast when recorded.
    """

    projections: np.ndarray
    tilt_angles_deg: np.ndarray
    pixel_size_nm: float
    source: Path
    dataset_folder: Path | None = None
    grandmodel_nz: int | None = None
    default_frame: str = "shrec2020"
    defocus_um: np.ndarray | None = None
    microscope: dict[str, float] = field(default_factory=dict)


def frame_geometry(frame: str, series: TiltSeriesInput) -> tuple[int, float, int]:
    """(thickness, axis_z, grandmodel z offset) of a frame for this tilt series."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    nz = series.grandmodel_nz
    if frame == "native":
        if nz is None:
            raise ValueError(f"{series.source}: the native frame needs the grandmodel's size; "
                             "this input has none (give --thickness or use --frame shrec2020)")
        return nz, float(nz // 2), 0
    thickness = int(series.projections.shape[2])
    axis = float(thickness // 2)
    offset = int(axis) - nz // 2 if nz is not None else 0
    return thickness, axis, offset


def load_tilt_series(source: str | os.PathLike, *, tlt: str | os.PathLike | None = None,
                     noisefree: bool = False) -> TiltSeriesInput:
    """Read a dataset folder's tilt series, or a projection stack (MRC) with its angles.

    Args:
        source: a dataset folder (SHREC'20, SHREC'21, napari-shrec) or an MRC stack.
        tlt: IMOD ``.tlt`` (or SHREC'21 alignment file) for a stack; defaults to the stack's
            name with ``.tlt``, or to the dataset's own angles.
        noisefree: use ``projections_noisefree.mrc`` of a dataset.

    Raises:
        FileNotFoundError / ValueError naming the file that is missing or inconsistent.
    """
    from ..io.dataset import is_dataset_folder, load_dataset, read_alignment_file
    from ..io.mrc import read_mrc
    from ..io.tilt_angles import read_tlt

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")

    def angles_from(file: Path) -> np.ndarray:
        if file.suffix.lower() == ".tlt":
            return read_tlt(file)
        return read_alignment_file(file)

    if path.is_dir():
        if not is_dataset_folder(path):
            raise ValueError(f"{path}: not a dataset folder (no particle_locations.txt / "
                             "simulation.json)")
        dataset = load_dataset(path)
        name = "projections_noisefree" if noisefree else "projections"
        if not dataset.has(name):
            raise FileNotFoundError(f"{path}: no {name}.mrc in this dataset")
        volume = dataset.read_volume(name)
        angles = angles_from(Path(tlt)) if tlt is not None else dataset.tilt_angles_deg
        if angles is None:
            raise ValueError(f"{path}: no tilt angles (no alignment file, simulation.json or "
                             "--tlt)")
        nz = None
        if dataset.has("grandmodel"):
            nz = int(dataset.read_volume("grandmodel").data.shape[0])
        elif dataset.has("class_mask"):
            nz = int(dataset.read_volume("class_mask").data.shape[0])
        simulation = dataset.simulation or {}
        defocus = simulation.get("defocus_um")
        tilt_params = (simulation.get("params") or {}).get("tiltseries") or {}
        microscope = {k: float(tilt_params[k]) for k in ("voltage_kv", "cs_mm",
                                                          "amplitude_contrast")
                      if k in tilt_params}
        series = TiltSeriesInput(
            projections=np.asarray(volume.data), tilt_angles_deg=np.asarray(angles, float),
            pixel_size_nm=float(volume.voxel_size_nm[2]), source=path, dataset_folder=path,
            grandmodel_nz=nz,
            default_frame="native" if dataset.flavour == "napari-shrec" else "shrec2020",
            defocus_um=np.asarray(defocus, float) if defocus else None, microscope=microscope)
    else:
        volume = read_mrc(path)
        if tlt is None:
            candidate = path.with_suffix(".tlt")
            if not candidate.is_file():
                raise FileNotFoundError(f"{path}: give the tilt angles with --tlt (no "
                                        f"{candidate.name} beside the stack)")
            tlt = candidate
        series = TiltSeriesInput(
            projections=np.asarray(volume.data), tilt_angles_deg=angles_from(Path(tlt)),
            pixel_size_nm=float(volume.voxel_size_nm[2]), source=path)
    n = series.projections.shape[0]
    if series.tilt_angles_deg.shape != (n,):
        raise ValueError(f"{series.source}: {n} projections but "
                         f"{series.tilt_angles_deg.size} tilt angles")
    if series.defocus_um is not None and series.defocus_um.shape != (n,):
        series.defocus_um = None
    return series


def reconstruction_metadata(series: TiltSeriesInput, frame: str, info: dict[str, Any],
                            z_offset: int) -> dict[str, Any]:
    """JSON-ready provenance of a reconstruction."""
    return {"source": str(series.source), "frame": frame, "grandmodel_z_offset": z_offset,
            **{k: v for k, v in info.items() if k != "tilt_angles_deg"}}

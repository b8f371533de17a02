"""Dataset folders in the SHREC layout (spec §3), plus napari-shrec's ``simulation.json``.

A dataset folder holds some of::

    grandmodel.mrc  grandmodel_noisefree.mrc  class_mask.mrc  class_bbox.mrc
    occupancy_mask.mrc  occupancy_bbox.mrc  reconstruction.mrc
    projections.mrc  projections_noisefree.mrc  particle_locations.txt
    alignment_simulated.txt (SHREC'21)  simulation.json (napari-shrec)

Three flavours are recognised:

- ``"napari-shrec"``: has ``simulation.json`` (our own simulations); class-mask values are our class
  ids (the json's ``class_ids`` says which), everything shares one frame unless the json says
  otherwise (``grandmodel_z_offset``).
- ``"shrec2020"``: lower-case labels; masks of 200 slices whose slab sits at z = 156…355 of the
  512³ reconstruction; class-mask values in the released SHREC'20 numbering.
- ``"shrec2021"``: upper-case labels; 512³ volumes in one frame; SHREC'21 mask numbering.

Class-mask numberings are never trusted blindly: :meth:`ShrecDataset.mask_id_to_class_name` checks
the expected numbering against the data (the class-mask value at each particle's centre, where the
occupancy mask says that voxel belongs to that particle) and follows the data where they differ.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..core.classes import (
    SHREC20_RELEASED_MASK_IDS,
    SHREC21_RELEASED_MASK_IDS,
    SHREC21_TABLE,
    ClassTable,
    normalize_class_name,
)
from ..core.particles import ParticleList
from ..core.volume import Volume
from ._atomic import write_text_atomic
from ._json import json_default
from .mrc import read_mrc, read_mrc_header, write_mrc

__all__ = [
    "VOLUME_NAMES",
    "PARTICLE_FILE",
    "SIMULATION_FILE",
    "ALIGNMENT_FILE",
    "DatasetError",
    "ShrecDataset",
    "is_dataset_folder",
    "load_dataset",
    "write_dataset",
    "read_alignment_file",
    "FLAVOUR_SCORE_MODE",
    "ScoringGroundTruth",
    "scoring_ground_truth",
]

log = logging.getLogger(__name__)

VOLUME_NAMES: tuple[str, ...] = (
    "grandmodel",
    "grandmodel_noisefree",
    "class_mask",
    "class_bbox",
    "occupancy_mask",
    "occupancy_bbox",
    "reconstruction",
    "projections",
    "projections_noisefree",
)
# volumes in the grandmodel (sample slab) frame; the others are in the reconstruction frame or 2D
GRANDMODEL_FRAME_VOLUMES: tuple[str, ...] = VOLUME_NAMES[:6]
PARTICLE_FILE = "particle_locations.txt"
SIMULATION_FILE = "simulation.json"
ALIGNMENT_FILE = "alignment_simulated.txt"
SHREC20_Z_OFFSET = 156
SHREC20_TILT_ANGLES_DEG = np.arange(-60.0, 60.0 + 1e-9, 3.0)  # [code]: −60:3:60, 41 tilts


class DatasetError(ValueError):
    """A folder that is not a readable dataset; the message names the folder or file."""


def is_dataset_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder with a particle list and at least one known volume, or a
    ``simulation.json``."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / SIMULATION_FILE).is_file():
        return True
    has_volume = any((p / f"{name}.mrc").is_file() for name in VOLUME_NAMES)
    return has_volume and (p / PARTICLE_FILE).is_file()


@dataclass
class ShrecDataset:
    """One tomogram's dataset folder, read lazily (volumes are memory-mapped on request).

    Attributes:
        folder: the folder.
        flavour: "napari-shrec", "shrec2020" or "shrec2021".
        particles: ground truth, class names canonical (lower case), coordinates in voxels of
            the grandmodel frame (x, y, z; SHREC'20: z in 0…199).
        class_table: classes of this dataset (SHREC'21 table, extended with unknown labels).
        volume_paths: {volume name: path} of the MRC files present.
        voxel_size_nm: voxel size (nm) from the first volume's header (1 nm if none).
        grandmodel_z_offset: z voxels from the reconstruction frame to the grandmodel frame
            (reconstruction z = grandmodel z + offset); 156 for SHREC'20, else usually 0.
        simulation: contents of simulation.json, or None.
        headers: {volume name: :func:`~napari_shrec.io.mrc.read_mrc_header` of its file}.
    """

    folder: Path
    flavour: str
    particles: ParticleList
    class_table: ClassTable
    volume_paths: dict[str, Path]
    voxel_size_nm: float
    grandmodel_z_offset: int
    simulation: dict[str, Any] | None = None
    headers: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _expected_mask_ids: dict[int, str] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ volumes
    def has(self, name: str) -> bool:
        return name in self.volume_paths

    def path_of(self, name: str) -> Path:
        if name not in VOLUME_NAMES:
            raise KeyError(f"unknown volume name {name!r}; known: {', '.join(VOLUME_NAMES)}")
        try:
            return self.volume_paths[name]
        except KeyError:
            raise FileNotFoundError(f"{self.folder}: the dataset has no {name}.mrc") from None

    def read_volume(self, name: str, mmap: bool = True) -> Volume:
        """The volume ``name`` (e.g. "reconstruction"), memory-mapped by default."""
        return read_mrc(self.path_of(name), mmap=mmap)

    def read_class_mask(self, name: str = "class_mask") -> Volume:
        """A class mask ("class_mask" or "class_bbox") with values mapped to OUR class ids
        (``self.class_table``), as uint8 (uint16 beyond 255 classes)."""
        if name not in ("class_mask", "class_bbox"):
            raise ValueError(f"{name!r} is not a class mask; use 'class_mask' or 'class_bbox'")
        volume = self.read_volume(name)
        mapping = self.mask_id_to_class_name
        max_mask = max(mapping, default=0)
        dtype = np.uint8 if max(self.class_table.ids, default=0) < 256 else np.uint16
        lut = np.zeros(max(max_mask, 0) + 1, dtype=dtype)
        for mask_id, class_name in mapping.items():
            lut[mask_id] = self.class_table.id_of(class_name)
        raw = volume.data
        mapped = np.empty(raw.shape, dtype=dtype)
        slab = max(1, (1 << 22) // max(1, raw.shape[1] * raw.shape[2]))  # ~4 M voxels at a time
        for z0 in range(0, raw.shape[0], slab):
            block = np.asarray(raw[z0:z0 + slab])
            values = np.rint(block).astype(np.int64) if block.dtype.kind == "f" \
                else block.astype(np.int64)
            unknown = (values < 0) | (values > max_mask)
            if unknown.any():
                bad = sorted(set(np.unique(values[unknown]).tolist()))[:10]
                raise DatasetError(f"{self.path_of(name)}: class-mask values {bad} are not in "
                                   f"the dataset's class numbering {dict(sorted(mapping.items()))}")
            mapped[z0:z0 + slab] = lut[values]
        return Volume(mapped, volume.voxel_size_nm, volume.origin_nm,
                      metadata={**volume.metadata, "class_ids": "napari-shrec",
                                "mask_id_to_class_name": dict(mapping)})

    @cached_property
    def mask_id_to_class_name(self) -> dict[int, str]:
        """{class-mask value: class name}: the flavour's numbering, checked against the data."""
        expected = dict(self._expected_mask_ids)
        if not (self.has("class_mask") and self.has("occupancy_mask")) or not len(self.particles):
            return expected
        inferred = infer_mask_numbering(
            self.read_volume("class_mask").data, self.read_volume("occupancy_mask").data,
            self.particles)
        merged = dict(expected)
        for mask_id, name in inferred.items():
            if expected.get(mask_id) not in (None, name):
                log.warning("%s: class-mask value %d holds %s particles, not %s as the %s "
                            "numbering says; following the data", self.folder, mask_id, name,
                            expected[mask_id], self.flavour)
            merged[mask_id] = name
        return merged

    @cached_property
    def tilt_angles_deg(self) -> np.ndarray | None:
        """Tilt angles (degrees) of the projections: from alignment_simulated.txt, else
        simulation.json, else −60:3:60 for SHREC'20 data with projections; None if unknown."""
        alignment = self.folder / ALIGNMENT_FILE
        if alignment.is_file():
            return read_alignment_file(alignment)
        if self.simulation and "tilt_angles_deg" in self.simulation:
            return np.asarray(self.simulation["tilt_angles_deg"], dtype=np.float64)
        if self.flavour == "shrec2020" and self.has("projections"):
            return SHREC20_TILT_ANGLES_DEG.copy()
        return None

    def particles_in_reconstruction_frame(self) -> ParticleList:
        """Ground truth with z shifted into the reconstruction frame (z + grandmodel_z_offset)."""
        shifted = self.particles.copy()
        shifted.table["z"] = shifted.table["z"] + self.grandmodel_z_offset
        return shifted


def infer_mask_numbering(class_mask: np.ndarray, occupancy_mask: np.ndarray,
                         particles: ParticleList) -> dict[int, str]:
    """Infer {class-mask value: class name} from the data.

    For each particle i whose rounded centre voxel belongs to it in the occupancy mask (value
    i + 1), the class-mask value there votes for the particle's class; each value takes the
    majority name. Reads only those voxels, so it is cheap on memory-mapped volumes.
    """
    if class_mask.shape != occupancy_mask.shape:
        raise DatasetError(f"class mask {class_mask.shape} and occupancy mask "
                           f"{occupancy_mask.shape} differ in shape")
    zyx = np.rint(particles.coords_zyx()).astype(np.int64)
    inside = np.all((zyx >= 0) & (zyx < np.asarray(class_mask.shape)), axis=1)
    rows = np.flatnonzero(inside)
    if rows.size == 0:
        return {}
    z, y, x = zyx[rows].T
    order = np.lexsort((x, y, z))  # sorted access is kinder to memory maps
    z, y, x, rows = z[order], y[order], x[order], rows[order]
    owner = np.rint(np.asarray(occupancy_mask[z, y, x], dtype=np.float64)).astype(np.int64)
    own = owner == rows + 1
    values = np.rint(np.asarray(class_mask[z[own], y[own], x[own]], dtype=np.float64))
    names = particles.class_names[rows[own]]
    votes: dict[int, Counter] = {}
    for value, name in zip(values.astype(np.int64).tolist(), names.tolist()):
        if value > 0:
            votes.setdefault(value, Counter())[normalize_class_name(name)] += 1
    return {value: counter.most_common(1)[0][0] for value, counter in votes.items()}


def read_alignment_file(path: str | os.PathLike) -> np.ndarray:
    """Tilt angles (degrees) from a SHREC'21 ``alignment_simulated.txt``.

    The file has ``#`` header lines, then whitespace-separated rows AlignmentTransX,
    AlignmentTransY, TiltAngle, InPlaneRotation, Magnification[, FileName]; TiltAngle is taken.
    """
    p = Path(path)
    angles: list[float] = []
    for line_no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        columns = stripped.split()
        if len(columns) < 3:
            raise DatasetError(f"{p}, line {line_no}: expected at least 3 columns "
                               f"(TransX TransY TiltAngle …), got {len(columns)}")
        try:
            angles.append(float(columns[2]))
        except ValueError:
            raise DatasetError(f"{p}, line {line_no}: tilt angle {columns[2]!r} is not a "
                               "number") from None
    return np.asarray(angles, dtype=np.float64)


def load_dataset(folder: str | os.PathLike) -> ShrecDataset:
    """Open a dataset folder (SHREC'20, SHREC'21 or napari-shrec); volumes stay on disk.

    Raises:
        FileNotFoundError: the folder does not exist.
        DatasetError: the folder holds no dataset, or its files disagree (message names them).
    """
    from .particles import read_shrec_txt

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no such dataset folder: {root}")
    volume_paths = {name: root / f"{name}.mrc" for name in VOLUME_NAMES
                    if (root / f"{name}.mrc").is_file()}
    simulation = _read_simulation_json(root / SIMULATION_FILE)
    particle_path = root / PARTICLE_FILE
    if not volume_paths and simulation is None:
        raise DatasetError(f"{root}: not a dataset folder (no {PARTICLE_FILE}, no known .mrc "
                           f"volume such as {', '.join(n + '.mrc' for n in VOLUME_NAMES[:3])})")
    raw_particles = read_shrec_txt(particle_path) if particle_path.is_file() else ParticleList()
    labels = [str(n) for n in raw_particles.class_names]

    if simulation is not None:
        flavour = "napari-shrec"
    else:  # the SHREC txt reader tells upper-case (SHREC'21) labels from lower-case ones
        flavour = str(raw_particles.metadata.get("flavour", "shrec2020"))

    class_table = SHREC21_TABLE
    if simulation is not None and simulation.get("class_ids"):
        expected_ids = {int(i): normalize_class_name(n) for n, i in simulation["class_ids"].items()}
    elif flavour == "shrec2020":
        expected_ids = dict(SHREC20_RELEASED_MASK_IDS)
    elif flavour == "shrec2021":
        expected_ids = dict(SHREC21_RELEASED_MASK_IDS)
    else:
        expected_ids = {c.id: c.name for c in SHREC21_TABLE}
    class_table = class_table.extended_with(list(expected_ids.values()) + labels)

    headers = {name: read_mrc_header(path) for name, path in volume_paths.items()}
    voxel_size_nm = _dataset_voxel_size(root, headers, simulation)
    table = raw_particles.table.copy()
    table["class_name"] = [class_table.canonical_name(n) for n in labels]
    particles = ParticleList(table, voxel_size_nm=voxel_size_nm,
                             metadata={**raw_particles.metadata, "flavour": flavour})
    z_offset = _grandmodel_z_offset(root, flavour, headers, simulation)
    _check_shapes(root, headers)
    return ShrecDataset(
        folder=root,
        flavour=flavour,
        particles=particles,
        class_table=class_table,
        volume_paths=volume_paths,
        voxel_size_nm=voxel_size_nm,
        grandmodel_z_offset=z_offset,
        simulation=simulation,
        headers=headers,
        _expected_mask_ids=expected_ids,
    )


def _read_simulation_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return data


def _dataset_voxel_size(root: Path, headers: dict[str, dict],
                        simulation: dict[str, Any] | None) -> float:
    if simulation is not None and "voxel_size_nm" in simulation:
        return float(simulation["voxel_size_nm"])
    for header in headers.values():
        if header["voxel_size_from_header"]:
            return float(header["voxel_size_nm"][2])
    return 1.0


def _grandmodel_z_offset(root: Path, flavour: str, headers: dict[str, dict],
                         simulation: dict[str, Any] | None) -> int:
    if simulation is not None and "grandmodel_z_offset" in simulation:
        return int(simulation["grandmodel_z_offset"])
    grand = next((headers[n] for n in GRANDMODEL_FRAME_VOLUMES if n in headers), None)
    recon = headers.get("reconstruction")
    if grand is not None and recon is not None:
        nz_grand, nz_recon = grand["shape_zyx"][0], recon["shape_zyx"][0]
        if nz_recon != nz_grand:  # slab centred in the reconstruction, as SHREC'20 has it
            return (nz_recon - nz_grand) // 2
        return 0
    return SHREC20_Z_OFFSET if flavour == "shrec2020" else 0


def _check_shapes(root: Path, headers: dict[str, dict]) -> None:
    shapes = {n: headers[n]["shape_zyx"] for n in GRANDMODEL_FRAME_VOLUMES if n in headers}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{n}.mrc {s}" for n, s in shapes.items())
        raise DatasetError(f"{root}: grandmodel-frame volumes differ in shape (z, y, x): {listing}")


def write_dataset(folder: str | os.PathLike, *, particles: ParticleList,
                  volumes: dict[str, Volume | np.ndarray], simulation: dict[str, Any] | None = None,
                  voxel_size_nm: float | None = None, grandmodel_z_offset: int = 0,
                  overwrite: bool = False) -> Path:
    """Write a napari-shrec dataset folder: volumes, particle_locations.txt and simulation.json.

    Class masks in ``volumes`` must hold our class ids (``SHREC21_TABLE`` numbering, recorded in
    simulation.json as ``class_ids``); occupancy masks the 1-based particle row. The voxel size
    (nm) is ``voxel_size_nm`` if given, else that of the :class:`Volume` arguments or of the
    particle list, else 1 nm; ValueError if these disagree. Every target is checked before
    anything is written: with ``overwrite=False`` an existing file stops the whole write, so a
    folder is never left half old, half new. Each file is written atomically.
    """
    from .. import __version__
    from ._atomic import check_overwrite
    from .particles import write_shrec_txt

    root = Path(folder)
    unknown = set(volumes) - set(VOLUME_NAMES)
    if unknown:
        raise ValueError(f"unknown volume names {sorted(unknown)}; known: {', '.join(VOLUME_NAMES)}")
    voxel_size = _consistent_voxel_size(voxel_size_nm, particles, volumes)
    targets = [root / f"{name}.mrc" for name in volumes] + [root / PARTICLE_FILE,
                                                            root / SIMULATION_FILE]
    for target in targets:
        check_overwrite(target, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    table = SHREC21_TABLE.extended_with(particles.class_names.tolist())
    for name, volume in volumes.items():
        write_mrc(root / f"{name}.mrc", volume, overwrite=overwrite, voxel_size_nm=voxel_size,
                  image_stack=name.startswith("projections"))
    write_shrec_txt(root / PARTICLE_FILE, particles, flavour="shrec2020", overwrite=overwrite)
    record: dict[str, Any] = {
        "format": "napari-shrec dataset",
        "format_version": 1,
        "napari_shrec_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "voxel_size_nm": voxel_size,
        "grandmodel_z_offset": int(grandmodel_z_offset),
        "class_ids": {c.name: c.id for c in table},
    }
    record.update(simulation or {})
    write_text_atomic(root / SIMULATION_FILE, json.dumps(record, indent=2, default=json_default)
                      + "\n", overwrite=overwrite)
    return root


def _consistent_voxel_size(given: float | None, particles: ParticleList,
                           volumes: dict[str, Volume | np.ndarray]) -> float:
    """One isotropic voxel size (nm) for a dataset, from the argument or the inputs."""
    found: dict[str, float] = {}
    for name, volume in volumes.items():
        if isinstance(volume, Volume):
            found[f"{name}.mrc"] = volume.isotropic_voxel_size_nm
    if particles.voxel_size_nm is not None:
        found[PARTICLE_FILE] = float(particles.voxel_size_nm)
    if given is not None:
        return float(given)
    values = sorted(set(round(v, 9) for v in found.values()))
    if len(values) > 1:
        listing = ", ".join(f"{k} {v:g} nm" for k, v in found.items())
        raise ValueError(f"the dataset's inputs disagree on the voxel size ({listing}); pass "
                         "voxel_size_nm")
    return float(values[0]) if values else 1.0


_MODEL_DIR = re.compile(r"model_(\d+)$")


def find_dataset_folders(root: str | os.PathLike) -> list[Path]:
    """Dataset folders directly under ``root`` (e.g. SHREC's model_0 … model_9), sorted by model
    number then name; ``root`` itself if it is one."""
    base = Path(root)
    if is_dataset_folder(base):
        return [base]
    found = [p for p in base.iterdir() if p.is_dir() and is_dataset_folder(p)] if base.is_dir() \
        else []

    def key(p: Path) -> tuple[int, str]:
        m = _MODEL_DIR.search(p.name)
        return (int(m.group(1)) if m else 1 << 30, p.name)

    return sorted(found, key=key)


#: The scorer's mode for each dataset flavour (what "auto" means in the CLI and the widget).
FLAVOUR_SCORE_MODE: dict[str, str] = {
    "napari-shrec": "native",
    "shrec2020": "shrec2020",
    "shrec2021": "shrec2021",
}


@dataclass
class ScoringGroundTruth:
    """What the scorer needs from a dataset folder (one loader for the CLI and the widget).

    Attributes:
        particles: ground truth in the grandmodel (occupancy-mask) frame.
        occupancy_mask: (z, y, x) memory-mapped particle ids.
        class_table: the dataset's class table when its ground truth has classes beyond the
            SHREC tables, else None (the scorer then uses its mode's default table).
        default_mode: the scoring mode of the dataset's flavour.
        z_offset: the dataset's grandmodel z offset (reconstruction z = grandmodel z + offset);
            None for a ground truth given as two files (no dataset, no known offset).
        description: one line naming the folder, flavour, particle count and mask shape.
    """

    particles: ParticleList
    occupancy_mask: np.ndarray
    class_table: ClassTable | None
    default_mode: str
    z_offset: int | None
    description: str


def scoring_ground_truth(dataset: ShrecDataset) -> ScoringGroundTruth:
    """The ground truth of a dataset, ready for :func:`napari_shrec.core.score.score_submission`.

    Raises:
        FileNotFoundError: the dataset has no occupancy_mask.mrc (message names the folder).
    """
    if not dataset.has("occupancy_mask"):
        raise FileNotFoundError(f"{dataset.folder}: no occupancy_mask.mrc in this dataset "
                                "folder; the scorer needs it")
    mask = dataset.read_volume("occupancy_mask").data
    labels = [str(n) for n in dataset.particles.class_names]
    beyond_shrec = any(label not in SHREC21_TABLE for label in labels)
    return ScoringGroundTruth(
        particles=dataset.particles,
        occupancy_mask=mask,
        class_table=dataset.class_table if beyond_shrec else None,
        default_mode=FLAVOUR_SCORE_MODE[dataset.flavour],
        z_offset=int(dataset.grandmodel_z_offset),
        description=(f"{dataset.folder} ({dataset.flavour}, {len(dataset.particles)} particles, "
                     f"mask {tuple(mask.shape)})"),
    )

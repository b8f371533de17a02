"""Autosave sidecars of annotation layers: a crash or a closed window loses nothing.

Every annotation layer is written, a moment after each change, to two files in the user cache
(never next to the tomogram: dataset folders are often read-only or shared)::

    <cache>/annotations/<tomogram stem>-<hash of the tomogram's identity>/
        <layer name>-<hash of the layer name>.csv    the particles (CSV, see below)
        <layer name>-<hash of the layer name>.json   what to rebuild the layer with

``<cache>`` is :func:`napari_shrec.core.structure_sources.default_cache_dir`
(``$NAPARI_SHREC_CACHE_DIR`` or the platform's user cache folder). The tomogram's identity is its file path (resolved) when
it has one, else ``layer:<layer name>``; two tomograms with the same file name in different
folders, and two annotation layers on the same tomogram, never share a file.

The CSV is napari-shrec's particle CSV (:mod:`napari_shrec.io.csv_particles`):
``class_name, x, y, z, phi, theta, psi, score, source`` with coordinates in **voxels of the
tomogram** (x, y, z, 0-based voxel centres), the layer's data coordinates. The JSON holds
``format`` ("napari-shrec annotation autosave"), ``version`` (1), ``layer_name``,
``tomogram`` (the identity), ``saved`` (UTC ISO time), ``n_points``, ``voxel_size_nm``
(z, y, x), ``scale`` and ``translate`` of the layer (world units, nm), and the class of the
next point (``current_class``). Both files are written atomically (temporary name, then
rename): an interrupted autosave leaves the previous one intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.particles import ParticleList
from ._atomic import write_text_atomic
from .csv_particles import read_particles_csv, write_particles_csv

__all__ = [
    "AUTOSAVE_FORMAT",
    "AUTOSAVE_VERSION",
    "AutosaveRecord",
    "autosave_dir",
    "autosave_folder",
    "autosave_paths",
    "write_autosave",
    "list_autosaves",
    "read_autosave",
    "remove_autosave",
    "tomogram_identity",
]

AUTOSAVE_FORMAT = "napari-shrec annotation autosave"
AUTOSAVE_VERSION = 1
_SUBDIR = "annotations"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def autosave_dir() -> Path:
    """``<cache>/annotations``: where autosaves go (``$NAPARI_SHREC_CACHE_DIR`` is honoured)."""
    from ..core.structure_sources import default_cache_dir

    return default_cache_dir() / _SUBDIR


def tomogram_identity(path: str | os.PathLike | None, layer_name: str | None = None) -> str:
    """The identity of a tomogram for autosaves: its resolved file path, or ``layer:<name>``
    when it has no file (a volume computed in napari).

    Raises:
        ValueError: neither a path nor a layer name.
    """
    if path:
        return str(Path(path).expanduser().resolve())
    if layer_name:
        return f"layer:{layer_name}"
    raise ValueError("a tomogram identity needs a file path or a layer name")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def _safe(text: str, fallback: str) -> str:
    cleaned = _UNSAFE.sub("_", text).strip("._")[:60]
    return cleaned or fallback


def autosave_folder(tomogram: str, directory: str | os.PathLike | None = None) -> Path:
    """The folder holding the autosaves of one tomogram (``tomogram``: its identity, see
    :func:`tomogram_identity`)."""
    root = Path(directory) if directory is not None else autosave_dir()
    stem = tomogram[len("layer:"):] if tomogram.startswith("layer:") else Path(tomogram).stem
    return root / f"{_safe(stem, 'tomogram')}-{_short_hash(tomogram)}"


def autosave_paths(tomogram: str, layer_name: str,
                   directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(csv, json)`` autosave paths of the annotation layer ``layer_name`` on ``tomogram``."""
    base = f"{_safe(layer_name, 'annotations')}-{_short_hash(layer_name)}"
    folder = autosave_folder(tomogram, directory)
    return folder / f"{base}.csv", folder / f"{base}.json"


@dataclass(frozen=True)
class AutosaveRecord:
    """One autosaved annotation layer: its files and what the JSON says."""

    csv_path: Path
    json_path: Path
    layer_name: str
    tomogram: str
    saved: str
    n_points: int
    info: dict[str, Any]


def write_autosave(particles: ParticleList, tomogram: str, layer_name: str, *,
                   info: dict[str, Any] | None = None,
                   directory: str | os.PathLike | None = None) -> AutosaveRecord:
    """Write (replace) the autosave of one annotation layer, atomically.

    Args:
        particles: the layer as a particle list (voxels of the tomogram, x y z), with a
            ``source`` extra column.
        tomogram: the tomogram's identity (:func:`tomogram_identity`).
        layer_name: the annotation layer's name.
        info: more JSON-ready keys for the JSON file (``scale``, ``translate``, …).
        directory: the autosave root (default :func:`autosave_dir`).

    Returns:
        The record of what was written.
    """
    csv_path, json_path = autosave_paths(tomogram, layer_name, directory)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_particles_csv(csv_path, particles, overwrite=True)
    saved = datetime.now(timezone.utc).isoformat(timespec="seconds")
    payload: dict[str, Any] = {
        "format": AUTOSAVE_FORMAT,
        "version": AUTOSAVE_VERSION,
        **(info or {}),
        "layer_name": str(layer_name),
        "tomogram": str(tomogram),
        "saved": saved,
        "n_points": int(len(particles)),
        "voxel_size_nm": particles.voxel_size_nm,
        "csv": csv_path.name,
    }
    write_text_atomic(json_path, json.dumps(payload, indent=1, default=str) + "\n",
                      overwrite=True)
    return AutosaveRecord(csv_path, json_path, str(layer_name), str(tomogram), saved,
                          int(len(particles)), payload)


def _record(json_path: Path) -> AutosaveRecord | None:
    try:
        payload = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("format") != AUTOSAVE_FORMAT:
        return None
    csv_path = json_path.with_name(str(payload.get("csv") or json_path.with_suffix(".csv").name))
    if not csv_path.is_file():
        return None
    return AutosaveRecord(csv_path, json_path, str(payload.get("layer_name", csv_path.stem)),
                          str(payload.get("tomogram", "")), str(payload.get("saved", "")),
                          int(payload.get("n_points", 0) or 0), payload)


def list_autosaves(tomogram: str, directory: str | os.PathLike | None = None
                   ) -> list[AutosaveRecord]:
    """The autosaved annotation layers of a tomogram (its identity), sorted by layer name.
    Files that are not readable autosaves are skipped."""
    folder = autosave_folder(tomogram, directory)
    if not folder.is_dir():
        return []
    records = [r for p in sorted(folder.glob("*.json")) if (r := _record(p)) is not None
               and r.tomogram == tomogram]
    return sorted(records, key=lambda r: r.layer_name)


def read_autosave(record: AutosaveRecord | str | os.PathLike) -> ParticleList:
    """The particle list of an autosave (a record, or the path of its CSV or JSON file).

    Raises:
        FileNotFoundError, ParticleFileError: a missing or damaged file (named).
    """
    if isinstance(record, AutosaveRecord):
        path = record.csv_path
        voxel = record.info.get("voxel_size_nm")
    else:
        path = Path(record)
        voxel = None
        if path.suffix.lower() == ".json":
            rec = _record(path)
            if rec is None:
                raise FileNotFoundError(f"{path}: not a readable annotation autosave")
            path, voxel = rec.csv_path, rec.info.get("voxel_size_nm")
    particles = read_particles_csv(path)
    if voxel is not None:
        particles.voxel_size_nm = float(voxel)
    return particles


def remove_autosave(tomogram: str, layer_name: str,
                    directory: str | os.PathLike | None = None) -> bool:
    """Delete the autosave of one layer; returns whether there was one."""
    found = False
    for path in autosave_paths(tomogram, layer_name, directory):
        if path.exists():
            path.unlink()
            found = True
    return found

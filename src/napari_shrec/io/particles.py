"""Particle lists on disk: SHREC ``particle_locations.txt``, RELION STAR and CSV.

This module is the front door: :func:`read_particles` / :func:`write_particles` pick the format
from the file suffix (or ``format=``) and call the format modules:

========  ==========  =====================================================================
format    suffix      module
========  ==========  =====================================================================
"shrec"   ``.txt``    :mod:`napari_shrec.io.shrec_txt` — ``class x y z [phi theta psi]``
"star"    ``.star``   :mod:`napari_shrec.io.star` — RELION 3.1/4 and RELION 5 particle files
"csv"     ``.csv``    :mod:`napari_shrec.io.csv_particles` — header row, all columns
========  ==========  =====================================================================

Coordinates in every :class:`~napari_shrec.core.particles.ParticleList` are voxels of the
tomogram, in file order x, y, z (x = fastest MRC axis; array index ``[z, y, x]``; 0-based voxel
centres). Angles are ZXZ Euler angles in degrees (:mod:`napari_shrec.core.rotations`).

Every reader stores in ``particles.metadata``: ``source`` (the path as a string), ``format``
("shrec", "star" or "csv") and ``line_numbers`` (the 1-based source line of each row), plus
format-specific keys (``flavour`` for SHREC txt and STAR).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.classes import ClassTable
from ..core.particles import ParticleList
from ._particles_common import ParticleFileError, existing_file
from .csv_particles import read_particles_csv, write_particles_csv
from .shrec_txt import read_shrec_txt, write_shrec_txt
from .star import read_star, write_star

__all__ = [
    "PARTICLE_FORMATS",
    "PARTICLE_SUFFIXES",
    "ParticleFileError",
    "particle_format_from_path",
    "read_particles",
    "read_particles_csv",
    "read_shrec_txt",
    "read_star",
    "write_particles",
    "write_particles_csv",
    "write_shrec_txt",
    "write_star",
]

PARTICLE_SUFFIXES: tuple[str, ...] = (".txt", ".star", ".csv")
PARTICLE_FORMATS: tuple[str, ...] = ("shrec", "star", "csv")
_FORMAT_BY_SUFFIX: dict[str, str] = {".txt": "shrec", ".star": "star", ".csv": "csv"}


def particle_format_from_path(path: str | os.PathLike) -> str:
    """"shrec", "star" or "csv" from the file suffix (case-insensitive).

    Raises:
        ParticleFileError: the suffix is not one of :data:`PARTICLE_SUFFIXES` (names the file).
    """
    suffix = Path(path).suffix.lower()
    try:
        return _FORMAT_BY_SUFFIX[suffix]
    except KeyError:
        raise ParticleFileError(
            f"{path}: unknown particle file suffix {suffix or '(none)'!r}; expected one of "
            f"{', '.join(PARTICLE_SUFFIXES)}, or pass format= one of {', '.join(PARTICLE_FORMATS)}"
        ) from None


def _check_format(path: str | os.PathLike, format: str | None) -> str:
    if format is None:
        return particle_format_from_path(path)
    if format not in PARTICLE_FORMATS:
        raise ParticleFileError(
            f"{path}: unknown particle format {format!r}; expected one of "
            f"{', '.join(PARTICLE_FORMATS)}"
        )
    return format


def read_particles(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    voxel_size_nm: float | None = None,
    tomogram_shape_xyz: Sequence[int] | None = None,
    class_table: ClassTable | None = None,
) -> ParticleList:
    """Read a particle list (SHREC txt, RELION STAR or CSV).

    Args:
        path: the file.
        format: "shrec", "star" or "csv"; None picks it from the suffix (.txt, .star, .csv).
        voxel_size_nm: voxel size of the tomogram in nm. STAR: used to convert Å (RELION 5,
            origins) and overrides the optics block. SHREC txt and CSV hold none: it is set on
            the returned list.
        tomogram_shape_xyz: tomogram size (nx, ny, nz) in voxels; needed for RELION 5 STAR
            files, ignored otherwise.
        class_table: STAR only: ``rlnClassNumber`` → class name (default ``SHREC21_TABLE``).

    Raises:
        FileNotFoundError: the file does not exist.
        ParticleFileError: unknown suffix or format, or a file that cannot be parsed (the
            message names the file and, where it applies, the line).
    """
    fmt = _check_format(path, format)
    existing_file(path)
    if fmt == "star":
        return read_star(path, voxel_size_nm=voxel_size_nm,
                         tomogram_shape_xyz=tomogram_shape_xyz, class_table=class_table)
    particles = read_shrec_txt(path) if fmt == "shrec" else read_particles_csv(path)
    if voxel_size_nm is not None:
        particles.voxel_size_nm = float(voxel_size_nm)
    return particles


def write_particles(
    path: str | os.PathLike,
    particles: ParticleList,
    *,
    format: str | None = None,
    overwrite: bool = False,
    **format_options: Any,
) -> Path:
    """Write a particle list, atomically; refuses to replace a file unless ``overwrite=True``.

    Args:
        path: target file.
        particles: the list.
        format: "shrec", "star" or "csv"; None picks it from the suffix.
        overwrite: replace an existing file (else FileExistsError naming the path).
        **format_options: passed to the format's writer: ``flavour`` for
            :func:`write_shrec_txt`; ``relion_version``, ``voxel_size_nm``,
            ``tomogram_shape_xyz``, ``tomo_name``, ``class_table`` for :func:`write_star`;
            none for :func:`write_particles_csv`.

    Returns:
        The path written.
    """
    fmt = _check_format(path, format)
    if fmt == "shrec":
        return write_shrec_txt(path, particles, overwrite=overwrite, **format_options)
    if fmt == "star":
        return write_star(path, particles, overwrite=overwrite, **format_options)
    return write_particles_csv(path, particles, overwrite=overwrite, **format_options)

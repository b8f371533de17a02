"""Tilt-angle files: IMOD ``.tlt`` (one angle per line, degrees) and SHREC'21's
``alignment_simulated.txt`` (six ``#`` header lines, then AlignmentTransX AlignmentTransY
TiltAngle InPlaneRotation Magnification FileName per projection)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._atomic import write_text_atomic

__all__ = ["read_tlt", "write_tlt", "write_alignment_file", "TiltFileError"]


class TiltFileError(ValueError):
    """A tilt-angle file that cannot be read; the message names the file and line."""


def read_tlt(path: str | os.PathLike) -> np.ndarray:
    """Angles (degrees) from an IMOD ``.tlt`` file: one number per non-empty line."""
    p = Path(path)
    angles: list[float] = []
    for line_no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            angles.append(float(stripped.split()[0]))
        except ValueError:
            raise TiltFileError(f"{p}, line {line_no}: {stripped!r} is not a tilt angle") \
                from None
    if not angles:
        raise TiltFileError(f"{p}: holds no tilt angles")
    return np.asarray(angles, dtype=np.float64)


def write_tlt(path: str | os.PathLike, angles_deg: Sequence[float], *,
              overwrite: bool = False) -> Path:
    """Write an IMOD ``.tlt`` file (two decimals, as IMOD writes them)."""
    text = "".join(f"{float(a):.2f}\n" for a in angles_deg)
    return write_text_atomic(path, text, overwrite=overwrite)


def write_alignment_file(path: str | os.PathLike, angles_deg: Sequence[float], *,
                         projection_file: str = "projections.mrc",
                         overwrite: bool = False) -> Path:
    """Write a SHREC'21-style ``alignment_simulated.txt`` with zero shifts and rotation,
    unit magnification, and ``projection_file`` as FileName on every row."""
    header = [
        "# napari-shrec simulated alignment (perfect: no shifts, no in-plane rotation)",
        "# one row per projection, in the order of the projection stack",
        "# AlignmentTransX, AlignmentTransY in pixels; TiltAngle, InPlaneRotation in degrees",
        "# Magnification relative to nominal",
        "# FileName: the projection stack",
        "AlignmentTransX AlignmentTransY TiltAngle InPlaneRotation Magnification FileName",
    ]
    rows = [f"0.0 0.0 {float(a):.4f} 0.0 1.0 {projection_file}" for a in angles_deg]
    header[-1] = "# " + header[-1]
    return write_text_atomic(path, "\n".join(header + rows) + "\n", overwrite=overwrite)

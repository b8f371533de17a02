"""SHREC ``particle_locations.txt`` and SHREC submission files ⇄ :class:`ParticleList`.

One particle a line, whitespace-separated::

    class x y z [phi theta psi] [anything else, ignored]

``x, y, z`` are voxel coordinates of the tomogram (x = fastest MRC axis, array index ``[z, y, x]``,
0-based voxel centres); ``phi, theta, psi`` are ZXZ Euler angles in degrees (see
:mod:`napari_shrec.core.rotations`). Lines with 4–6 columns get angles 0; columns after the 7th are
ignored, as the organizers' scorer ignores everything after ``class x y z``. Blank lines and lines
whose first non-blank character is ``#`` are skipped.

Labels are kept exactly as written (SHREC'20 writes ``1s3x``, SHREC'21 ``1S3X``); the reader only
records the flavour. Scores and extra columns are not part of this format and are not written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..core.particles import ParticleList
from ._atomic import write_text_atomic
from ._particles_common import ParticleFileError, existing_file, parse_float, read_text, where

__all__ = ["SHREC_FLAVOURS", "format_shrec_number", "read_shrec_txt", "write_shrec_txt"]

SHREC_FLAVOURS: tuple[str, ...] = ("shrec2020", "shrec2021")
# SHREC'21 writes PDB ids upper case but keeps these two class names lower case.
_SHREC21_LOWER_CASE_NAMES = frozenset({"vesicle", "fiducial"})
_COLUMN_NAMES = ("class", "x", "y", "z", "phi", "theta", "psi")


def read_shrec_txt(path: str | os.PathLike) -> ParticleList:
    """Read a SHREC ``particle_locations.txt`` or a SHREC submission file.

    Args:
        path: the text file.

    Returns:
        A :class:`ParticleList` with coordinates in voxels (x, y, z), ZXZ angles in degrees (0
        where the line has fewer than 7 columns) and score NaN. ``metadata`` holds ``source``,
        ``format`` ("shrec"), ``flavour`` ("shrec2021" when any label has an upper-case letter,
        else "shrec2020") and ``line_numbers`` (1-based source line of each row).

    Raises:
        FileNotFoundError: the file does not exist.
        ParticleFileError: a line with fewer than 4 columns, or a non-numeric or non-finite
            coordinate; the message names the file and the line. Columns 5–7 are read as angles
            only when all three are finite numbers; otherwise (a submission's own extra
            columns, which the SHREC scorer ignores) the angles are 0 and the line is listed in
            ``metadata["lines_without_angles"]``.
    """
    p = existing_file(path)
    names: list[str] = []
    values: list[tuple[float, float, float, float, float, float]] = []
    line_numbers: list[int] = []
    not_angles: list[int] = []
    for line_no, line in enumerate(read_text(p).splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 4:
            raise ParticleFileError(
                f"{where(p, line_no)}: expected at least 4 columns (class x y z), got {len(fields)}"
            )
        numbers: list[float] = []
        for col in range(1, 4):
            token = fields[col]
            try:
                value = parse_float(token)
            except ValueError:
                raise ParticleFileError(
                    f"{where(p, line_no)}: column {col + 1} ({_COLUMN_NAMES[col]}) must be a "
                    f"number, got {token!r}"
                ) from None
            if not math.isfinite(value):
                raise ParticleFileError(
                    f"{where(p, line_no)}: column {col + 1} ({_COLUMN_NAMES[col]}) must be "
                    f"finite, got {token!r}"
                )
            numbers.append(value)
        angles = _angles_or_none(fields[4:7]) if len(fields) >= 7 else None
        if angles is None:
            if len(fields) >= 7:
                not_angles.append(line_no)
            angles = (0.0, 0.0, 0.0)
        numbers.extend(angles)
        names.append(fields[0])
        values.append(tuple(numbers))  # type: ignore[arg-type]
        line_numbers.append(line_no)

    arr = np.asarray(values, dtype=np.float64).reshape(len(values), 6)
    table = pd.DataFrame(
        {
            "class_name": pd.Series(names, dtype=object),
            "x": arr[:, 0],
            "y": arr[:, 1],
            "z": arr[:, 2],
            "phi": arr[:, 3],
            "theta": arr[:, 4],
            "psi": arr[:, 5],
        }
    )
    flavour = "shrec2021" if any(n != n.lower() for n in names) else "shrec2020"
    metadata = {
        "source": str(p),
        "format": "shrec",
        "flavour": flavour,
        "line_numbers": line_numbers,
    }
    if not_angles:
        metadata["lines_without_angles"] = not_angles
    return ParticleList(table, metadata=metadata)


def _angles_or_none(tokens: list[str]) -> tuple[float, float, float] | None:
    """Columns 5–7 as finite angles, or None when any is not a finite number (a submission's own
    extra columns, which the organizers' scorer ignores)."""
    try:
        values = tuple(parse_float(t) for t in tokens)
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return values  # type: ignore[return-value]


def write_shrec_txt(
    path: str | os.PathLike,
    particles: ParticleList,
    *,
    flavour: Literal["shrec2020", "shrec2021"] = "shrec2020",
    overwrite: bool = False,
) -> Path:
    """Write a SHREC ``particle_locations.txt``: ``class x y z phi theta psi`` per line.

    Labels are written lower case for ``flavour="shrec2020"`` and upper case for
    ``"shrec2021"`` (except ``vesicle`` and ``fiducial``, lower case in SHREC'21 too).
    Coordinates (voxels) and ZXZ angles (degrees) are written exactly: integral values as integers
    (``255``), others with Python's shortest round-trip ``repr`` (``-147.05``), so reading the file
    back gives the same float64 values bit for bit. Scores and extra columns are not written. No
    header line is written (the organizers' scorer would read it as a particle).

    Args:
        path: target file; FileExistsError if it exists and ``overwrite`` is False.
        particles: the list to write.
        flavour: "shrec2020" or "shrec2021" (label case).
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: unknown flavour; a label that is empty, contains whitespace or starts with
            ``#``; a non-finite coordinate or angle.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    if flavour not in SHREC_FLAVOURS:
        raise ValueError(f"flavour must be one of {SHREC_FLAVOURS}, got {flavour!r}")
    target = Path(path)
    table = particles.table
    numbers = table[["x", "y", "z", "phi", "theta", "psi"]].to_numpy(dtype=np.float64)
    lines: list[str] = []
    for row, (label, vals) in enumerate(zip(table["class_name"], numbers, strict=True)):
        label = str(label)
        if not label or any(ch.isspace() for ch in label) or label.startswith("#"):
            raise ValueError(
                f"{target}: particle {row + 1}: class label {label!r} cannot be written to a SHREC "
                "text file (empty, contains whitespace or starts with '#')"
            )
        if not np.all(np.isfinite(vals)):
            raise ValueError(
                f"{target}: particle {row + 1}: coordinates and angles must be finite, got "
                f"{vals.tolist()}"
            )
        fields = [_label_for_flavour(label, flavour)]
        fields.extend(format_shrec_number(v) for v in vals)
        lines.append(" ".join(fields))
    text = "".join(line + "\n" for line in lines)
    return write_text_atomic(target, text, overwrite=overwrite)


def format_shrec_number(value: float) -> str:
    """Shortest text that reads back as exactly ``value``: ``255`` for 255.0, ``-0`` for -0.0,
    ``repr`` (e.g. ``-147.05``, ``1e+20``) otherwise."""
    v = float(value)
    if v == 0.0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if v.is_integer() and abs(v) < 2.0**53:
        return str(int(v))
    return repr(v)


def _label_for_flavour(label: str, flavour: str) -> str:
    if flavour == "shrec2020":
        return label.lower()
    if label.lower() in _SHREC21_LOWER_CASE_NAMES:
        return label.lower()
    return label.upper()

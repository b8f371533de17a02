"""Particle lists as comma-separated values (CSV) ⇄ :class:`ParticleList`.

A header row is required. Written columns: ``class_name, x, y, z, phi, theta, psi, score``, then
the list's extra columns in their order. Coordinates are voxels (x, y, z; x = fastest MRC axis;
0-based voxel centres), angles ZXZ degrees; floats are written with Python's shortest round-trip
``repr`` so a round trip is exact. A NaN score is an empty field.

Accepted on reading (column names are matched exactly after stripping surrounding spaces):

- ``class_name``, or ``class`` when there is no ``class_name`` column (required);
- ``x``, ``y``, ``z``, or ``X``, ``Y``, ``Z`` when the lower-case one is absent (required);
- ``phi``, ``theta``, ``psi`` (each optional, default 0) and ``score`` (optional, default NaN; an
  empty field or ``nan`` is NaN);
- every other column is kept as an extra column: booleans when every value is ``True``/``False``,
  int64 when every value is an integer, float64 when every value is a number or empty (empty →
  NaN), else text.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.particles import ParticleList
from ._atomic import write_with
from ._particles_common import ParticleFileError, existing_file, parse_float, read_text, where

__all__ = ["read_particles_csv", "write_particles_csv"]

_ALIASES: dict[str, tuple[str, ...]] = {
    "class_name": ("class_name", "class"),
    "x": ("x", "X"),
    "y": ("y", "Y"),
    "z": ("z", "Z"),
    "phi": ("phi",),
    "theta": ("theta",),
    "psi": ("psi",),
    "score": ("score",),
}
_REQUIRED = ("class_name", "x", "y", "z")
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


def read_particles_csv(path: str | os.PathLike) -> ParticleList:
    """Read a particle list from a CSV file with a header row.

    Args:
        path: the CSV file (comma-separated, UTF-8).

    Returns:
        A :class:`ParticleList`; ``metadata`` holds ``source``, ``format`` ("csv"), ``columns``
        (the header as written) and ``line_numbers`` (1-based source line of each row; the header
        is line 1). An empty file gives an empty list.

    Raises:
        FileNotFoundError: the file does not exist.
        ParticleFileError: no usable header, a row with the wrong number of fields, a
            non-numeric or non-finite coordinate or angle, a non-numeric score, an empty class
            name; the message names the file and the line.
    """
    p = existing_file(path)
    text = read_text(p)
    metadata: dict[str, Any] = {"source": str(p), "format": "csv", "line_numbers": []}
    reader = csv.reader(io.StringIO(text, newline=""))

    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    prev_end = 0
    try:
        for record in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if not record or all(not f.strip() for f in record):
                continue
            if header is None:
                header, header_line = [f.strip() for f in record], start
                continue
            rows.append(record)
            line_numbers.append(start)
    except csv.Error as exc:
        raise ParticleFileError(f"{where(p, reader.line_num)}: {exc}") from None

    if header is None:
        metadata["columns"] = []
        return ParticleList(None, metadata=metadata)
    mapping = _header_mapping(p, header, header_line)
    metadata["columns"] = list(header)
    metadata["line_numbers"] = line_numbers

    n_fields = len(header)
    for record, line_no in zip(rows, line_numbers, strict=True):
        if len(record) != n_fields:
            raise ParticleFileError(
                f"{where(p, line_no)}: expected {n_fields} fields (as in the header), "
                f"got {len(record)}"
            )

    data: dict[str, Any] = {}
    cls_idx = mapping["class_name"]
    names = [r[cls_idx] for r in rows]
    for name, line_no in zip(names, line_numbers, strict=True):
        if not name.strip():
            raise ParticleFileError(f"{where(p, line_no)}: empty class name")
    data["class_name"] = pd.Series(names, dtype=object)
    for col in ("x", "y", "z", "phi", "theta", "psi", "score"):
        if col not in mapping:
            continue
        idx = mapping[col]
        data[col] = _numeric_column(p, col, header[idx], [r[idx] for r in rows], line_numbers,
                                    allow_nan=(col == "score"))
    used = set(mapping.values())
    for idx, name in enumerate(header):
        if idx not in used:
            data[name] = _infer_extra([r[idx] for r in rows])
    table = pd.DataFrame(data)
    try:
        return ParticleList(table, metadata=metadata)
    except ValueError as exc:
        raise ParticleFileError(f"{p}: {exc}") from None


def write_particles_csv(
    path: str | os.PathLike, particles: ParticleList, *, overwrite: bool = False
) -> Path:
    """Write a particle list to CSV: ``class_name, x, y, z, phi, theta, psi, score`` + extras.

    Floats are written with Python's shortest round-trip ``repr``; NaN as an empty field.

    Args:
        path: target file; FileExistsError if it exists and ``overwrite`` is False.
        particles: the list to write (coordinates in voxels, angles ZXZ degrees).
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    table = particles.table

    def _write(tmp: Path) -> None:
        table.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")

    return write_with(path, _write, overwrite)


# ---------------------------------------------------------------------------------------- helpers
def _header_mapping(path: Path, header: list[str], header_line: int) -> dict[str, int]:
    """Core column → header index; ParticleFileError for duplicates or missing required columns."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ParticleFileError(f"{where(path, header_line)}: duplicate column {name!r}")
        seen.add(name)
    mapping: dict[str, int] = {}
    for col, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in header:
                mapping[col] = header.index(alias)
                break
    missing = [c for c in _REQUIRED if c not in mapping]
    if missing:
        raise ParticleFileError(
            f"{where(path, header_line)}: a header row naming the columns class_name (or class), "
            f"x, y, z (or X, Y, Z) is required; missing {', '.join(missing)} in header {header}"
        )
    return mapping


def _numeric_column(path: Path, col: str, header_name: str, values: list[str],
                    line_numbers: list[int], *, allow_nan: bool) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, (token, line_no) in enumerate(zip(values, line_numbers, strict=True)):
        if allow_nan and not token.strip():
            out[i] = np.nan
            continue
        try:
            value = parse_float(token)
        except ValueError:
            raise ParticleFileError(
                f"{where(path, line_no)}: column {header_name!r} must be a number, got {token!r}"
            ) from None
        if not allow_nan and not math.isfinite(value):
            raise ParticleFileError(
                f"{where(path, line_no)}: column {header_name!r} must be finite, got {token!r}"
            )
        out[i] = value
    return out


def _infer_extra(values: list[str]) -> pd.Series:
    """bool, int64, float64 (empty → NaN) or text, the first that fits every value."""
    if values and all(v in ("True", "False") for v in values):
        return pd.Series([v == "True" for v in values], dtype=bool)
    if values and all(_INT_RE.match(v) for v in values):
        ints = [int(v) for v in values]
        if all(-(2**63) <= i < 2**63 for i in ints):
            return pd.Series(ints, dtype=np.int64)
    floats: list[float] = []
    try:
        for v in values:
            floats.append(np.nan if not v.strip() else parse_float(v))
    except ValueError:
        return pd.Series(values, dtype=str) if values else pd.Series([], dtype=object)
    return pd.Series(floats, dtype=np.float64)

"""RELION STAR particle files (RELION 3.1/4 and RELION 5 tomography) ⇄ :class:`ParticleList`.

Reading and writing go through the ``starfile`` library. Two flavours:

- RELION 3.1/4 (``relion_version=3`` or ``4``): ``rlnCoordinateX/Y/Z`` in pixels of the tomogram,
  written as our x, y, z voxel coordinates unchanged (0-based voxel centres).
- RELION 5 (``relion_version=5``): ``rlnCenteredCoordinateX/Y/ZAngst`` in Å from the tomogram
  centre: ``(coordinate_px − size_px / 2) × pixel_size_Å`` with ``size_px`` the tomogram size along
  that axis and a float division (256.0 for 512, 100.5 for 201).

Orientations are RELION ZYZ angles (``rlnAngleRot/Tilt/Psi``) converted from and to our ZXZ
angles by :func:`~napari_shrec.core.rotations.zxz_to_relion` and
:func:`~napari_shrec.core.rotations.relion_to_zxz` (through rotation matrices). Class names
travel in a column ``napariShrecClassName`` beside ``rlnClassNumber``; scores in
``rlnAutopickFigureOfMerit``. See ``docs/formats.md``.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from ..core.classes import SHREC21_TABLE, ClassTable, UnknownClassError
from ..core.particles import CORE_COLUMNS, ParticleList
from ..core.rotations import relion_to_zxz, zxz_to_relion
from ._atomic import write_with
from ._particles_common import ParticleFileError, existing_file, read_text, where

__all__ = [
    "CLASS_NAME_COLUMN",
    "DEFAULT_TOMO_NAME",
    "RELION_VERSIONS",
    "STAR_CONSUMED_COLUMNS",
    "read_star",
    "write_star",
]

RELION_VERSIONS: tuple[int, ...] = (3, 4, 5)
CLASS_NAME_COLUMN = "napariShrecClassName"
DEFAULT_TOMO_NAME = "tomogram"
_AXES = ("X", "Y", "Z")
_COORD_COLUMNS = tuple(f"rlnCoordinate{a}" for a in _AXES)
_CENTRED_COLUMNS = tuple(f"rlnCenteredCoordinate{a}Angst" for a in _AXES)
_ORIGIN_ANGST_COLUMNS = tuple(f"rlnOrigin{a}Angst" for a in _AXES)
_ORIGIN_PX_COLUMNS = tuple(f"rlnOrigin{a}" for a in _AXES)  # RELION <= 3.0, pixels
_ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_SCORE_COLUMN = "rlnAutopickFigureOfMerit"
_PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnTomoTiltSeriesPixelSize")
_STRING_COLUMNS = [CLASS_NAME_COLUMN, "rlnTomoName", "rlnOpticsGroupName"]

#: Particle-table columns the reader turns into core columns (or applies) and does not keep as
#: extras. ``rlnTomoName`` is NOT among them: it is kept as an extra column and written back.
STAR_CONSUMED_COLUMNS: frozenset[str] = frozenset(
    _COORD_COLUMNS
    + _CENTRED_COLUMNS
    + _ORIGIN_ANGST_COLUMNS
    + _ORIGIN_PX_COLUMNS
    + _ANGLE_COLUMNS
    + (_SCORE_COLUMN, "rlnClassNumber", CLASS_NAME_COLUMN, "rlnOpticsGroup")
)


# ============================================================================================ write
def write_star(
    path: str | os.PathLike,
    particles: ParticleList,
    *,
    relion_version: int = 4,
    voxel_size_nm: float | None = None,
    tomogram_shape_xyz: Sequence[int] | None = None,
    tomo_name: str | None = None,
    class_table: ClassTable | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a RELION STAR particle file (``data_optics`` + ``data_particles``), atomically.

    Particle columns, in order: ``rlnTomoName``; ``rlnCoordinateX/Y/Z`` (RELION 3/4, voxels) or
    ``rlnCenteredCoordinateX/Y/ZAngst`` (RELION 5, Å from the tomogram centre); ``rlnAngleRot``,
    ``rlnAngleTilt``, ``rlnAnglePsi`` (degrees, RELION ZYZ); ``rlnClassNumber`` (class id in
    ``class_table``, 0 for a name not in the table); ``rlnOpticsGroup`` (1);
    ``rlnAutopickFigureOfMerit`` (the score; only when some score is not NaN, NaN written
    ``nan``); ``napariShrecClassName`` (the class name as in the list); then the extra columns
    under their own names. Floats are written with Python's shortest round-trip ``repr``.

    Args:
        path: target file; FileExistsError if it exists and ``overwrite`` is False.
        particles: the list (coordinates in voxels x, y, z; ZXZ angles in degrees).
        relion_version: 3 or 4 (same output) or 5.
        voxel_size_nm: voxel size of the tomogram in nm; default ``particles.voxel_size_nm``.
            Written as ``rlnImagePixelSize`` (Å) in ``data_optics`` when known; required for 5.
        tomogram_shape_xyz: tomogram size in voxels (nx, ny, nz); required for RELION 5.
        tomo_name: ``rlnTomoName`` of every row. Default: the list's ``rlnTomoName`` extra
            column when it has one, else ``"tomogram"``.
        class_table: class name → ``rlnClassNumber``; default ``SHREC21_TABLE`` (all SHREC'20
            and SHREC'21 classes; names match case-insensitively).
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: unsupported ``relion_version``; RELION 5 without ``voxel_size_nm`` or
            ``tomogram_shape_xyz`` (the message names the missing parameter); an extra column
            whose name clashes with a written column or contains whitespace.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    if relion_version not in RELION_VERSIONS:
        raise ValueError(f"relion_version must be one of {RELION_VERSIONS}, got {relion_version!r}")
    table_cls = SHREC21_TABLE if class_table is None else class_table
    vs_nm = particles.voxel_size_nm if voxel_size_nm is None else float(voxel_size_nm)
    if vs_nm is not None and not (math.isfinite(vs_nm) and vs_nm > 0):
        raise ValueError(f"voxel_size_nm must be a positive number, got {vs_nm!r}")
    tab = particles.table
    n = len(particles)

    cols: dict[str, Any] = {}
    if tomo_name is not None:
        cols["rlnTomoName"] = pd.Series([str(tomo_name)] * n, dtype=object)
    elif "rlnTomoName" in tab.columns:
        cols["rlnTomoName"] = tab["rlnTomoName"].astype(str).astype(object).to_numpy()
    else:
        cols["rlnTomoName"] = pd.Series([DEFAULT_TOMO_NAME] * n, dtype=object)

    xyz = particles.coords_xyz()
    if relion_version == 5:
        if vs_nm is None:
            raise ValueError(
                f"{path}: write_star(relion_version=5) needs voxel_size_nm (the particle list has "
                "no voxel size) to write rlnCenteredCoordinateX/Y/ZAngst"
            )
        if tomogram_shape_xyz is None:
            raise ValueError(
                f"{path}: write_star(relion_version=5) needs tomogram_shape_xyz (nx, ny, nz in "
                "voxels) to write rlnCenteredCoordinateX/Y/ZAngst"
            )
        shape = _shape_xyz(tomogram_shape_xyz)
        centred = (xyz - shape / 2.0) * (vs_nm * 10.0)
        for i, col in enumerate(_CENTRED_COLUMNS):
            cols[col] = centred[:, i]
    else:
        for i, col in enumerate(_COORD_COLUMNS):
            cols[col] = xyz[:, i]

    relion = zxz_to_relion(particles.angles_zxz_deg()) if n else np.zeros((0, 3))
    for i, col in enumerate(_ANGLE_COLUMNS):
        cols[col] = relion[:, i]
    names = [str(c) for c in tab["class_name"]]
    cols["rlnClassNumber"] = np.array([_class_number(nm, table_cls) for nm in names],
                                      dtype=np.int64)
    cols["rlnOpticsGroup"] = np.ones(n, dtype=np.int64)
    scores = particles.scores()
    if n and not np.all(np.isnan(scores)):
        cols[_SCORE_COLUMN] = scores
    cols[CLASS_NAME_COLUMN] = pd.Series(names, dtype=object)
    for col in particles.extra_columns:
        if col == "rlnTomoName":
            continue
        if col in cols:
            raise ValueError(
                f"{path}: extra column {col!r} clashes with a column write_star writes itself"
            )
        if not col or any(ch.isspace() for ch in str(col)):
            raise ValueError(f"{path}: extra column name {col!r} cannot be a STAR label")
        cols[str(col)] = tab[col].to_numpy()
    particle_block = pd.DataFrame({k: _as_array(v) for k, v in cols.items()})

    optics: dict[str, list[Any]] = {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]}
    if vs_nm is not None:
        optics["rlnImagePixelSize"] = [vs_nm * 10.0]
    blocks = {"optics": pd.DataFrame(optics), "particles": particle_block}

    def _write(tmp: Path) -> None:
        # float_format=None: pandas writes floats with repr (shortest exact round trip)
        starfile.write(blocks, tmp, float_format=None, na_rep="nan", sep="\t")

    return write_with(path, _write, overwrite)


# ============================================================================================= read
def read_star(
    path: str | os.PathLike,
    *,
    voxel_size_nm: float | None = None,
    tomogram_shape_xyz: Sequence[int] | None = None,
    class_table: ClassTable | None = None,
) -> ParticleList:
    """Read a RELION STAR particle file (RELION 3.0, 3.1/4 or 5 tomography).

    The particle table is the ``data_particles`` loop, else the first loop with coordinate
    columns. RELION 5 (``rlnCenteredCoordinateX/Y/ZAngst``, preferred when present) becomes
    voxels by ``centred_Å / pixel_size_Å + size_px / 2``; RELION 3/4 ``rlnCoordinateX/Y/Z`` are
    taken as voxels unchanged. ``rlnOriginX/Y/ZAngst`` (and RELION 3.0 ``rlnOriginX/Y/Z`` in
    pixels) are subtracted: position = coordinate − origin_Å / pixel_size_Å.

    Args:
        path: the STAR file.
        voxel_size_nm: voxel size of the tomogram in nm. Default: ``rlnImagePixelSize``, else
            ``rlnTomoTiltSeriesPixelSize`` of ``data_optics`` (Å / 10). Needed for RELION 5
            files and for non-zero origins.
        tomogram_shape_xyz: tomogram size (nx, ny, nz) in voxels; needed for RELION 5 files.
        class_table: ``rlnClassNumber`` → class name when there is no ``napariShrecClassName``
            column (default ``SHREC21_TABLE``; a number not in the table becomes its string).

    Returns:
        A :class:`ParticleList` in voxels with ZXZ angles in degrees, ``score`` from
        ``rlnAutopickFigureOfMerit`` (else NaN), and every particle column not listed in
        :data:`STAR_CONSUMED_COLUMNS` kept as an extra column (``rlnTomoName`` included).
        ``metadata``: ``source``, ``format`` ("star"), ``flavour`` ("relion4" or "relion5"),
        ``relion_version`` (4 or 5), ``star_block``, ``line_numbers``, ``tomo_names``.

    Raises:
        FileNotFoundError: the file does not exist.
        ParticleFileError: not a readable STAR file, no particle table, a row with the wrong
            number of values, a non-numeric or non-finite coordinate or angle (file and line),
            a missing voxel size or tomogram size for RELION 5 (names the parameter).
    """
    p = existing_file(path)
    text = read_text(p)
    table_cls = SHREC21_TABLE if class_table is None else class_table
    metadata: dict[str, Any] = {"source": str(p), "format": "star", "line_numbers": []}
    if not text.strip():
        metadata.update(flavour=None, relion_version=None, star_block=None, tomo_names=[])
        return ParticleList(None, voxel_size_nm=voxel_size_nm, metadata=metadata)

    loops = _scan_loops(p, text.splitlines())
    try:
        blocks = starfile.read(p, always_dict=True, parse_as_string=list(_STRING_COLUMNS))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError) as exc:
        # starfile and pandas raise many kinds of error on a malformed file
        raise ParticleFileError(f"{p}: not a readable STAR file: {exc}") from None

    block_name, df = _particle_block(p, blocks)
    line_numbers = _row_lines(loops.get(block_name), len(df))
    metadata.update(star_block=block_name, line_numbers=line_numbers)
    n = len(df)

    optics = blocks.get("optics")
    if isinstance(optics, dict):
        optics = pd.DataFrame([optics])
    vs_nm: float | None = None if voxel_size_nm is None else float(voxel_size_nm)
    if vs_nm is None:
        pixel_a = _optics_pixel_size_A(p, optics, df)
        vs_nm = None if pixel_a is None else pixel_a / 10.0

    centred = all(c in df.columns for c in _CENTRED_COLUMNS)
    if centred:
        if tomogram_shape_xyz is None:
            raise ParticleFileError(
                f"{p}: RELION 5 centred coordinates (rlnCenteredCoordinateX/Y/ZAngst) need the "
                "tomogram size: pass tomogram_shape_xyz=(nx, ny, nz) in voxels"
            )
        # Files napari-shrec wrote hold the tomogram's voxel size in rlnImagePixelSize. In
        # RELION's own files that is the subtomogram pixel (and rlnTomoTiltSeriesPixelSize the
        # unbinned tilt-series pixel): neither need be the voxel size of the tomogram the
        # coordinates are wanted in, so there the caller must say it.
        written_by_us = CLASS_NAME_COLUMN in df.columns
        if voxel_size_nm is None and not (written_by_us and vs_nm is not None):
            raise ParticleFileError(
                f"{p}: RELION 5 centred coordinates (rlnCenteredCoordinateX/Y/ZAngst) need the "
                "voxel size of the tomogram they refer to: pass voxel_size_nm (CLI: "
                "--voxel-size); the optics block's pixel sizes describe subtomograms or the "
                "tilt series, not necessarily that tomogram"
            )
        shape = _shape_xyz(tomogram_shape_xyz)
        pixel_a = vs_nm * 10.0
        centred_a = np.stack(
            [_float_column(p, df, c, line_numbers) for c in _CENTRED_COLUMNS], axis=1
        ).reshape(n, 3)
        xyz = centred_a / pixel_a + shape / 2.0
        metadata.update(flavour="relion5", relion_version=5)
    else:
        missing = [c for c in _COORD_COLUMNS if c not in df.columns]
        if missing:
            raise ParticleFileError(
                f"{p}: the particle table data_{block_name} has no coordinates: missing "
                f"{', '.join(missing)} (and no rlnCenteredCoordinateX/Y/ZAngst)"
            )
        xyz = np.stack(
            [_float_column(p, df, c, line_numbers) for c in _COORD_COLUMNS], axis=1
        ).reshape(n, 3)
        metadata.update(flavour="relion4", relion_version=4)

    xyz = xyz - _origin_shift_px(p, df, line_numbers, vs_nm)

    rot_tilt_psi = np.stack(
        [
            _float_column(p, df, c, line_numbers) if c in df.columns else np.zeros(n)
            for c in _ANGLE_COLUMNS
        ],
        axis=1,
    ).reshape(n, 3)
    angles = relion_to_zxz(rot_tilt_psi) if n else np.zeros((0, 3))

    if _SCORE_COLUMN in df.columns:
        scores = _float_column(p, df, _SCORE_COLUMN, line_numbers, finite=False)
    else:
        scores = np.full(n, np.nan)

    names = _class_names(p, df, line_numbers, table_cls)

    data: dict[str, Any] = {
        "class_name": pd.Series(names, dtype=object),
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "phi": angles[:, 0],
        "theta": angles[:, 1],
        "psi": angles[:, 2],
        "score": scores,
    }
    for col in df.columns:
        if col in STAR_CONSUMED_COLUMNS:
            continue
        if col in CORE_COLUMNS:
            raise ParticleFileError(
                f"{p}: column {col!r} of data_{block_name} clashes with a particle-list column"
            )
        data[col] = df[col].reset_index(drop=True)
    if "rlnTomoName" in df.columns:
        metadata["tomo_names"] = sorted({str(t) for t in df["rlnTomoName"]})
    else:
        metadata["tomo_names"] = []
    return ParticleList(pd.DataFrame(data), voxel_size_nm=vs_nm, metadata=metadata)


# ========================================================================================= helpers
def _as_array(values: Any) -> Any:
    return values.to_numpy() if isinstance(values, pd.Series) else values


def _shape_xyz(shape: Sequence[int]) -> np.ndarray:
    arr = np.asarray(shape, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(
            f"tomogram_shape_xyz must be three positive sizes (nx, ny, nz), got {shape}"
        )
    return arr


def _class_number(name: str, table: ClassTable) -> int:
    try:
        return table.id_of(name)
    except UnknownClassError:
        return 0


def _particle_block(path: Path, blocks: dict[str, Any]) -> tuple[str, pd.DataFrame]:
    """The particle table: ``data_particles``, else the first loop with coordinate columns."""
    block = blocks.get("particles")
    if isinstance(block, pd.DataFrame):
        return "particles", block.reset_index(drop=True)
    for name, candidate in blocks.items():
        if isinstance(candidate, pd.DataFrame) and (
            _COORD_COLUMNS[0] in candidate.columns or _CENTRED_COLUMNS[0] in candidate.columns
        ):
            return name, candidate.reset_index(drop=True)
    raise ParticleFileError(
        f"{path}: no particle table (a data_particles loop, or a loop with rlnCoordinateX/Y/Z or "
        "rlnCenteredCoordinateX/Y/ZAngst)"
    )


def _optics_pixel_size_A(path: Path, optics: pd.DataFrame | None,
                         particles: pd.DataFrame) -> float | None:
    """The one pixel size (Å) of the optics groups the particles use, or None."""
    if not isinstance(optics, pd.DataFrame) or optics.empty:
        return None
    rows = optics
    if "rlnOpticsGroup" in optics.columns and "rlnOpticsGroup" in particles.columns:
        used = set(pd.to_numeric(particles["rlnOpticsGroup"], errors="coerce").dropna())
        if used:
            rows = optics[pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce").isin(used)]
    for col in _PIXEL_SIZE_COLUMNS:
        if col not in rows.columns:
            continue
        vals = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=np.float64)
        vals = np.unique(vals[np.isfinite(vals) & (vals > 0)])
        if len(vals) == 1:
            return float(vals[0])
        if len(vals) > 1:
            raise ParticleFileError(
                f"{path}: the optics groups have different {col} ({', '.join(map(str, vals))} Å); "
                "pass voxel_size_nm"
            )
    return None


def _float_column(path: Path, df: pd.DataFrame, col: str, line_numbers: list[int], *,
                  finite: bool = True) -> np.ndarray:
    """Column as float64; ParticleFileError naming file and line for a bad value."""
    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals) if finite else (np.isnan(vals) & ~raw.isna().to_numpy())
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        what = "a finite number" if finite else "a number"
        raise ParticleFileError(
            f"{where(path, _line(line_numbers, i))}: {col} must be {what}, got {raw.iloc[i]!r}"
        )
    return vals


def _origin_shift_px(path: Path, df: pd.DataFrame, line_numbers: list[int],
                     vs_nm: float | None) -> np.ndarray:
    """(n, 3) origins in voxels, to subtract from the coordinates."""
    n = len(df)
    shift = np.zeros((n, 3))
    for i, col in enumerate(_ORIGIN_PX_COLUMNS):
        if col in df.columns:
            shift[:, i] += _float_column(path, df, col, line_numbers)
    origin_a = np.zeros((n, 3))
    for i, col in enumerate(_ORIGIN_ANGST_COLUMNS):
        if col in df.columns:
            origin_a[:, i] = _float_column(path, df, col, line_numbers)
    if np.any(origin_a != 0):
        if vs_nm is None:
            raise ParticleFileError(
                f"{path}: rlnOriginX/Y/ZAngst need the voxel size to become voxels: pass "
                "voxel_size_nm (data_optics has no rlnImagePixelSize or "
                "rlnTomoTiltSeriesPixelSize)"
            )
        shift += origin_a / (vs_nm * 10.0)
    return shift


def _class_names(path: Path, df: pd.DataFrame, line_numbers: list[int],
                 table: ClassTable) -> list[str]:
    """``napariShrecClassName``, else ``rlnClassNumber`` via the table, else "unknown"."""
    n = len(df)
    names: list[str | None] = [None] * n
    if CLASS_NAME_COLUMN in df.columns:
        for i, v in enumerate(df[CLASS_NAME_COLUMN]):
            if isinstance(v, str) and v:
                names[i] = v
            elif v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v):
                names[i] = str(v)
    if "rlnClassNumber" in df.columns and any(nm is None for nm in names):
        numbers = _float_column(path, df, "rlnClassNumber", line_numbers)
        for i, num in enumerate(numbers):
            if names[i] is None:
                names[i] = _name_for_number(num, table)
    return [nm if nm is not None else "unknown" for nm in names]


def _name_for_number(num: float, table: ClassTable) -> str:
    if float(num).is_integer():
        try:
            return table.name_of(int(num))
        except UnknownClassError:
            return str(int(num))
    return repr(float(num))


def _line(line_numbers: list[int], i: int) -> int | None:
    return line_numbers[i] if i < len(line_numbers) else None


# -------------------------------------------------------------------- loop scanning (line numbers)
class _Loop:
    """Header and data rows (1-based line numbers) of one ``loop_`` in a STAR file."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.rows: list[int] = []


def _scan_loops(path: Path, lines: list[str]) -> dict[str, _Loop]:
    """Find every loop block and its data lines, as ``starfile`` parses them.

    Checks that every data row has as many values as the loop header names columns, so a ragged
    row is reported with its line (pandas would pad short rows silently).
    """
    loops: dict[str, _Loop] = {}
    i, n = 0, len(lines)
    while i < n:
        s = lines[i].strip()
        if not s.startswith("data_"):
            i += 1
            continue
        name = s[5:]
        i += 1
        while i < n and not lines[i].strip().startswith(("loop_", "_", "data_")):
            i += 1
        if i >= n or not lines[i].strip().startswith("loop_"):
            continue  # a simple (key value) block or an empty one
        i += 1
        columns: list[str] = []
        while i < n and lines[i].strip().startswith("_"):
            columns.append(lines[i].split()[0][1:])
            i += 1
        loop = _Loop(columns)
        while i < n and not lines[i].strip().startswith("data_"):
            s = lines[i].strip()
            if s and not s.startswith("#"):
                n_values = _count_values(path, s, i + 1)
                if n_values != len(columns):
                    raise ParticleFileError(
                        f"{where(path, i + 1)}: expected {len(columns)} values (the loop of "
                        f"data_{name} names {len(columns)} columns), got {n_values}"
                    )
                loop.rows.append(i + 1)
            i += 1
        loops[name] = loop
    return loops


def _count_values(path: Path, line: str, line_no: int) -> int:
    if '"' not in line and "'" not in line:
        return len(line.split("#", 1)[0].split())
    try:
        return len(shlex.split(line.replace("'", '"'), comments=True))
    except ValueError as exc:
        raise ParticleFileError(f"{where(path, line_no)}: {exc}") from None


def _row_lines(loop: _Loop | None, n_rows: int) -> list[int]:
    """Line numbers of the particle rows; if the scan disagrees with starfile, its best guess."""
    if loop is not None and len(loop.rows) == n_rows:
        return list(loop.rows)
    start = loop.rows[0] if loop is not None and loop.rows else 1
    return list(range(start, start + n_rows))

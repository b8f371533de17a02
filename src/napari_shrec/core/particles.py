"""A particle list: one row per particle with class, position, orientation, score and extras.

Positions are in **voxels** of the tomogram the list belongs to, as floats, in file order x, y, z
(x = fastest MRC axis; array index ``[z, y, x]``). Orientations are three ZXZ Euler angles in
degrees, ``phi, theta, psi``, in the convention documented in :mod:`napari_shrec.core.rotations`
(intrinsic, active, right-handed: ``R = Rz(phi)·Rx(theta)·Rz(psi)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from .rotations import matrix_to_zxz, zxz_to_matrix

__all__ = ["ParticleList", "CORE_COLUMNS"]

CORE_COLUMNS: tuple[str, ...] = ("class_name", "x", "y", "z", "phi", "theta", "psi", "score")
_FLOAT_COLUMNS = ("x", "y", "z", "phi", "theta", "psi", "score")


class ParticleList:
    """An ordered list of particles backed by a :class:`pandas.DataFrame`.

    Columns always present (in this order): ``class_name`` (str), ``x``, ``y``, ``z`` (voxels,
    float64), ``phi``, ``theta``, ``psi`` (ZXZ degrees, float64; 0 when unknown), ``score``
    (float64; NaN when unknown). Any further columns are free extras and travel through the
    formats that can hold them (CSV, STAR).

    Attributes:
        table: the DataFrame (a fresh RangeIndex: row i is particle i, 1-based id i + 1).
        voxel_size_nm: voxel size of the tomogram the coordinates refer to, if known.
        metadata: free provenance (source file, flavour, …).
    """

    def __init__(
        self,
        table: pd.DataFrame | None = None,
        *,
        voxel_size_nm: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.table = _normalise_table(table if table is not None else pd.DataFrame())
        self.voxel_size_nm = None if voxel_size_nm is None else float(voxel_size_nm)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        class_names: Sequence[str] | NDArray,
        coords_xyz: ArrayLike,
        angles_zxz_deg: ArrayLike | None = None,
        scores: ArrayLike | None = None,
        extra: dict[str, ArrayLike] | None = None,
        *,
        voxel_size_nm: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ParticleList:
        """Build a list from arrays: ``coords_xyz`` (n, 3) in voxels, angles (n, 3) ZXZ degrees."""
        names = [str(c) for c in class_names]
        n = len(names)
        coords = np.asarray(coords_xyz, dtype=np.float64).reshape(n, 3) if n else np.zeros((0, 3))
        data: dict[str, Any] = {
            "class_name": names,
            "x": coords[:, 0],
            "y": coords[:, 1],
            "z": coords[:, 2],
        }
        if angles_zxz_deg is not None:
            angles = np.asarray(angles_zxz_deg, dtype=np.float64).reshape(n, 3)
            data.update(phi=angles[:, 0], theta=angles[:, 1], psi=angles[:, 2])
        if scores is not None:
            data["score"] = np.asarray(scores, dtype=np.float64).reshape(n)
        for key, values in (extra or {}).items():
            if key in CORE_COLUMNS:
                raise ValueError(f"extra column {key!r} clashes with a core column")
            data[key] = np.asarray(values).reshape(n)
        return cls(pd.DataFrame(data), voxel_size_nm=voxel_size_nm, metadata=metadata)

    @classmethod
    def empty(cls, *, voxel_size_nm: float | None = None) -> ParticleList:
        return cls(pd.DataFrame(), voxel_size_nm=voxel_size_nm)

    @classmethod
    def concat(cls, lists: Iterable[ParticleList]) -> ParticleList:
        """Concatenate lists (voxel size kept when all agree, else dropped)."""
        items = list(lists)
        if not items:
            return cls.empty()
        sizes = {p.voxel_size_nm for p in items}
        table = pd.concat([p.table for p in items], ignore_index=True)
        return cls(table, voxel_size_nm=sizes.pop() if len(sizes) == 1 else None)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        counts = self.class_counts()
        return f"ParticleList(n={len(self)}, classes={dict(counts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParticleList):
            return NotImplemented
        return self.voxel_size_nm == other.voxel_size_nm and self.table.equals(other.table)

    @property
    def class_names(self) -> NDArray[np.str_]:
        return self.table["class_name"].to_numpy(dtype=str)

    @property
    def extra_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in CORE_COLUMNS]

    def coords_xyz(self) -> NDArray[np.float64]:
        """(n, 3) positions in voxels, columns x, y, z (file order)."""
        return self.table[["x", "y", "z"]].to_numpy(dtype=np.float64)

    def coords_zyx(self) -> NDArray[np.float64]:
        """(n, 3) positions in voxels, columns z, y, x (array order, napari order)."""
        return self.table[["z", "y", "x"]].to_numpy(dtype=np.float64)

    def angles_zxz_deg(self) -> NDArray[np.float64]:
        """(n, 3) ZXZ Euler angles (phi, theta, psi) in degrees."""
        return self.table[["phi", "theta", "psi"]].to_numpy(dtype=np.float64)

    def rotation_matrices(self) -> NDArray[np.float64]:
        """(n, 3, 3) active rotations acting on (x, y, z) column vectors."""
        return zxz_to_matrix(self.angles_zxz_deg()) if len(self) else np.zeros((0, 3, 3))

    def scores(self) -> NDArray[np.float64]:
        return self.table["score"].to_numpy(dtype=np.float64)

    def class_counts(self) -> pd.Series:
        return self.table["class_name"].value_counts(sort=False)

    # ------------------------------------------------------------------ derived lists
    def subset(self, mask_or_index: ArrayLike) -> ParticleList:
        """A new list of the selected rows (boolean mask or integer positions), renumbered."""
        sel = np.asarray(mask_or_index)
        positions = np.flatnonzero(sel) if sel.dtype == bool else sel.astype(np.int64).ravel()
        rows = self.table.iloc[positions]
        metadata = dict(self.metadata)
        lines = metadata.get("line_numbers")
        if lines is not None and len(lines) == len(self):
            metadata["line_numbers"] = [lines[i] for i in positions.tolist()]
        return ParticleList(rows, voxel_size_nm=self.voxel_size_nm, metadata=metadata)

    def with_rotations(self, matrices: ArrayLike) -> ParticleList:
        """A copy with orientations set from (n, 3, 3) active rotation matrices."""
        angles = matrix_to_zxz(np.asarray(matrices).reshape(len(self), 3, 3))
        table = self.table.copy()
        table[["phi", "theta", "psi"]] = angles
        return ParticleList(table, voxel_size_nm=self.voxel_size_nm, metadata=dict(self.metadata))

    def copy(self) -> ParticleList:
        return ParticleList(
            self.table.copy(), voxel_size_nm=self.voxel_size_nm, metadata=dict(self.metadata)
        )


def _normalise_table(table: pd.DataFrame) -> pd.DataFrame:
    """Ensure core columns exist with the right dtypes and come first; reset the index."""
    table = table.reset_index(drop=True).copy()
    n = len(table)
    for col in ("class_name", "x", "y", "z"):
        if col not in table.columns:
            if n:
                raise ValueError(f"particle table is missing the required column {col!r}")
            table[col] = pd.Series([], dtype=object if col == "class_name" else np.float64)
    for col in ("phi", "theta", "psi"):
        if col not in table.columns:
            table[col] = 0.0
    if "score" not in table.columns:
        table["score"] = np.nan
    table["class_name"] = table["class_name"].astype(str).astype(object)
    for col in _FLOAT_COLUMNS:
        try:
            table[col] = pd.to_numeric(table[col], errors="raise").astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"particle column {col!r} must be numeric: {exc}") from None
    extras = [c for c in table.columns if c not in CORE_COLUMNS]
    return table[list(CORE_COLUMNS) + extras]

"""The one class table of napari-shrec: SHREC'20 proteins (paper Table 1) plus SHREC'21 extras.

Every layer, file format and metric looks classes up here, so a class has one id, one name and one
colour everywhere. Ids follow the paper's order by molecular weight (1 = 1s3x … 12 = 4d8q); the
released SHREC'20 class masks use another numbering, given as :data:`SHREC20_RELEASED_MASK_IDS`.

Units: molecular weight in kDa, volume in nm³, surface area in nm², radii in nm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ParticleClass",
    "ClassTable",
    "SHREC20_CLASSES",
    "SHREC21_EXTRA_CLASSES",
    "SHREC20_TABLE",
    "SHREC21_TABLE",
    "SHREC20_RELEASED_MASK_IDS",
    "SHREC21_RELEASED_MASK_IDS",
    "SIZE_GROUPS",
    "UnknownClassError",
    "normalize_class_name",
]

SIZE_GROUPS: tuple[str, ...] = ("small", "medium", "large")


class UnknownClassError(KeyError):
    """A class label that is not in the class table."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ParticleClass:
    """One particle class.

    Attributes:
        id: this project's class id (1-based; 0 is background in class masks).
        name: canonical label as written in particle lists (lower-case PDB id, e.g. ``"1s3x"``).
        description: human-readable protein name.
        weight_kda: molecular weight of the biological assembly in kDa.
        volume_nm3: volume of the density map at the SHREC threshold in nm³ (None if unknown).
        area_nm2: surface area in nm² (None if unknown).
        sphericity: Ψ = π^(1/3)·(6V)^(2/3)/A (None if unknown).
        effective_radius_nm: r_eff = 3V/A in nm, as in paper Table 1 (None if unknown).
        size_group: "small" (< 200 kDa), "medium" (200–600 kDa) or "large" (> 600 kDa);
            None for classes that are not proteins (vesicle, fiducial).
        color: RGB in [0, 1], fixed per class, used for points and class-mask labels alike.
        scored: False for classes the SHREC'21 evaluator leaves out (4V94, vesicle).
        test_count: number of particles of this class in SHREC'20 model_9 (paper Table 2).
    """

    id: int
    name: str
    description: str
    weight_kda: float | None
    volume_nm3: float | None
    area_nm2: float | None
    sphericity: float | None
    effective_radius_nm: float | None
    size_group: str | None
    color: tuple[float, float, float]
    scored: bool = True
    test_count: int | None = None

    @property
    def equivalent_radius_nm(self) -> float | None:
        """Radius in nm of the sphere with the class's volume: (3V / 4π)^(1/3).

        This is the natural display and picking radius (r_eff = 3V/A is smaller for
        non-spherical shapes)."""
        if self.volume_nm3 is None:
            return None
        return (3.0 * self.volume_nm3 / (4.0 * math.pi)) ** (1.0 / 3.0)

    @property
    def color_hex(self) -> str:
        r, g, b = (round(c * 255) for c in self.color)
        return f"#{r:02x}{g:02x}{b:02x}"


def normalize_class_name(name: str) -> str:
    """Canonical spelling of a class label: stripped and lower-case ("1S3X " → "1s3x")."""
    return str(name).strip().lower()


def _rgb(hex_color: str) -> tuple[float, float, float]:
    h = hex_color.lstrip("#")
    return (int(h[0:2], 16) / 255.0, int(h[2:4], 16) / 255.0, int(h[4:6], 16) / 255.0)


def _size_group(weight_kda: float) -> str:
    if weight_kda < 200.0:
        return "small"
    if weight_kda <= 600.0:
        return "medium"
    return "large"


# (id, pdb, description, kDa, volume nm³, area nm², sphericity, r_eff nm, test count, colour)
# Colours: a fixed qualitative palette, distinct on dark and light backgrounds.
_SHREC20_ROWS: tuple[tuple, ...] = (
    (1, "1s3x", "Hsp70 ATPase", 42.75, 104.1, 122.0, 0.877, 2.56, 233, "#e6194b"),
    (2, "3qm1", "LJ0536 S106A", 62.62, 139.1, 144.9, 0.896, 2.88, 241, "#3cb44b"),
    (3, "3gl1", "Ssb1, Hsp70", 84.61, 207.0, 202.6, 0.835, 3.065, 229, "#ffe119"),
    (4, "3h84", "GET3", 158.08, 375.3, 399.0, 0.631, 2.822, 240, "#4363d8"),
    (5, "2cg9", "Hsp90-Sba1", 188.73, 394.2, 380.5, 0.683, 3.108, 228, "#f58231"),
    (6, "3d2f", "Sse1p, Hsp70", 236.11, 521.9, 497.9, 0.63, 3.145, 214, "#911eb4"),
    (7, "1u6g", "Cand1-Cul1-Roc1", 238.82, 498.5, 488.0, 0.623, 3.065, 217, "#42d4f4"),
    (8, "3cf3", "P97/vcp", 541.74, 1123.0, 805.7, 0.648, 4.181, 238, "#f032e6"),
    (9, "1bxn", "Rubisco", 559.96, 978.9, 614.4, 0.776, 4.78, 245, "#bfef45"),
    (10, "1qvr", "ClpB", 593.36, 1255.0, 1159.0, 0.485, 3.248, 226, "#fabed4"),
    (11, "4cr2", "26S proteasome", 1309.28, 3085.0, 1971.0, 0.52, 4.696, 231, "#469990"),
    (12, "4d8q", "TRiC/CCT", 1952.74, 2152.0, 1331.0, 0.606, 4.85, 240, "#dcbeff"),
)

SHREC20_CLASSES: tuple[ParticleClass, ...] = tuple(
    ParticleClass(
        id=row[0],
        name=row[1],
        description=row[2],
        weight_kda=row[3],
        volume_nm3=row[4],
        area_nm2=row[5],
        sphericity=row[6],
        effective_radius_nm=row[7],
        size_group=_size_group(row[3]),
        color=_rgb(row[9]),
        test_count=row[8],
    )
    for row in _SHREC20_ROWS
)

# SHREC'21 adds a ribosome (4V94, not scored), the mitochondrial ribosome 5MRC, membrane vesicles
# (not scored) and gold fiducials (scored). Their shape statistics are not tabulated in the
# SHREC'21 paper, so they are None here; weights are the assemblies' approximate masses.
SHREC21_EXTRA_CLASSES: tuple[ParticleClass, ...] = (
    ParticleClass(13, "4v94", "80S ribosome (not scored in SHREC'21)", 3300.0, None, None, None,
                  None, "large", _rgb("#9a6324"), scored=False),
    ParticleClass(14, "5mrc", "mitochondrial ribosome", 2700.0, None, None, None, None, "large",
                  _rgb("#800000")),
    ParticleClass(15, "vesicle", "membrane vesicle (not scored in SHREC'21)", None, None, None,
                  None, None, None, _rgb("#aaffc3"), scored=False),
    ParticleClass(16, "fiducial", "gold fiducial marker", None, None, None, None, None, None,
                  _rgb("#ffd8b1")),
)


# colours for classes outside the built-in table (stable order, distinct from the ones above)
_FALLBACK_PALETTE: tuple[str, ...] = (
    "#808000", "#000075", "#a9a9a9", "#ff7f50", "#6a5acd", "#2e8b57", "#d2691e", "#1e90ff",
    "#c71585", "#7fffd4", "#b8860b", "#4b0082",
)


class ClassTable:
    """An ordered, immutable table of particle classes with lookups by id and by name.

    Name lookups are case-insensitive (SHREC'21 writes "1S3X", SHREC'20 "1s3x").
    """

    def __init__(self, classes: Iterable[ParticleClass]):
        self._classes: tuple[ParticleClass, ...] = tuple(classes)
        self._by_id: dict[int, ParticleClass] = {}
        self._by_name: dict[str, ParticleClass] = {}
        for cls in self._classes:
            if cls.id <= 0:
                raise ValueError(f"class {cls.name!r}: id must be >= 1 (0 is background)")
            if cls.id in self._by_id:
                raise ValueError(f"duplicate class id {cls.id}")
            key = normalize_class_name(cls.name)
            if key in self._by_name:
                raise ValueError(f"duplicate class name {cls.name!r}")
            self._by_id[cls.id] = cls
            self._by_name[key] = cls

    def __iter__(self) -> Iterator[ParticleClass]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name_or_id: object) -> bool:
        if isinstance(name_or_id, (int,)) and not isinstance(name_or_id, bool):
            return name_or_id in self._by_id
        if isinstance(name_or_id, str):
            return normalize_class_name(name_or_id) in self._by_name
        return False

    def __repr__(self) -> str:
        return f"ClassTable({[c.name for c in self._classes]})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._classes)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self._classes)

    def by_name(self, name: str) -> ParticleClass:
        """The class with this label (case-insensitive); :class:`UnknownClassError` if absent."""
        try:
            return self._by_name[normalize_class_name(name)]
        except KeyError:
            raise UnknownClassError(
                f"unknown class {name!r}; known classes: {', '.join(self.names)}"
            ) from None

    def by_id(self, class_id: int) -> ParticleClass:
        """The class with this id; :class:`UnknownClassError` if absent."""
        try:
            return self._by_id[int(class_id)]
        except KeyError:
            raise UnknownClassError(
                f"unknown class id {class_id}; known ids: {', '.join(map(str, self.ids))}"
            ) from None

    def id_of(self, name: str) -> int:
        return self.by_name(name).id

    def name_of(self, class_id: int) -> str:
        return self.by_id(class_id).name

    def canonical_name(self, name: str) -> str:
        """The table's spelling of a label (SHREC'21 "1S3X" → "1s3x")."""
        return self.by_name(name).name

    def colors_by_id(self) -> dict[int, tuple[float, float, float, float]]:
        """{class id: RGBA} with 0 (background) transparent, for a napari Labels colormap."""
        colors: dict[int, tuple[float, float, float, float]] = {0: (0.0, 0.0, 0.0, 0.0)}
        for cls in self._classes:
            colors[cls.id] = (*cls.color, 1.0)
        return colors

    def colors_by_name(self) -> dict[str, tuple[float, float, float, float]]:
        """{class name: RGBA}, for a napari Points colormap keyed by the ``class`` feature."""
        return {cls.name: (*cls.color, 1.0) for cls in self._classes}

    def extended_with(self, names: Iterable[str]) -> ClassTable:
        """This table plus a new class for every name it does not know (ids after the last id).

        New classes get a colour from a fixed fallback palette chosen by their position, and no
        shape statistics; use this for datasets with classes beyond SHREC's."""
        new_classes = list(self._classes)
        next_id = max(self.ids, default=0) + 1
        seen = set(self._by_name)
        for raw in names:
            key = normalize_class_name(raw)
            if not key or key in seen:
                continue
            seen.add(key)
            color = _rgb(_FALLBACK_PALETTE[(next_id - 1) % len(_FALLBACK_PALETTE)])
            new_classes.append(
                ParticleClass(next_id, key, key, None, None, None, None, None, None, color)
            )
            next_id += 1
        return self if len(new_classes) == len(self._classes) else ClassTable(new_classes)

    def in_size_group(self, group: str) -> tuple[ParticleClass, ...]:
        if group not in SIZE_GROUPS:
            raise ValueError(f"size group must be one of {SIZE_GROUPS}, got {group!r}")
        return tuple(c for c in self._classes if c.size_group == group)

    def by_weight(self) -> tuple[ParticleClass, ...]:
        """Classes ordered by molecular weight (the paper's order), unknown weights last."""
        return tuple(
            sorted(self._classes, key=lambda c: (c.weight_kda is None, c.weight_kda or 0.0, c.id))
        )


SHREC20_TABLE = ClassTable(SHREC20_CLASSES)
SHREC21_TABLE = ClassTable(SHREC20_CLASSES + SHREC21_EXTRA_CLASSES)

# Class-mask numbering of the released SHREC'20 data (spec §3, from the organizers' code):
# mask value → class name. Map by name, never assume this order equals our ids.
SHREC20_RELEASED_MASK_IDS: Mapping[int, str] = MappingProxyType(
    {
        1: "3cf3",
        2: "1s3x",
        3: "1u6g",
        4: "4cr2",
        5: "1qvr",
        6: "3h84",
        7: "2cg9",
        8: "3qm1",
        9: "3gl1",
        10: "3d2f",
        11: "4d8q",
        12: "1bxn",
    }
)

# Class-mask numbering of the released SHREC'21 data (its README: classes by decreasing size).
# Readers verify it against the occupancy mask and the particle list before trusting it.
SHREC21_RELEASED_MASK_IDS: Mapping[int, str] = MappingProxyType(
    {
        1: "4v94",
        2: "4cr2",
        3: "1qvr",
        4: "1bxn",
        5: "3cf3",
        6: "1u6g",
        7: "3d2f",
        8: "2cg9",
        9: "3h84",
        10: "3gl1",
        11: "3qm1",
        12: "1s3x",
        13: "5mrc",
        14: "vesicle",
        15: "fiducial",
    }
)

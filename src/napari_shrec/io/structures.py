"""Write a set of structure maps as a folder: one ``<name>.mrc`` per class plus ``structures.json``.

Each MRC holds the potential in volts (float32, z, y, x) with its voxel size in the header.
``structures.json`` records, per map, the file name, units, shape statistics, provenance
(including whether it is a surrogate) and the class's paper Table 1 values for comparison. A folder
written here can be given back as a structure source: its maps are recognised as napari-shrec
potentials (no rescaling) and keep their provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.classes import SHREC20_TABLE, ClassTable
from ..core.structures import STRUCTURES_JSON, StructureMap
from ._atomic import check_overwrite, write_text_atomic
from .mrc import write_mrc

__all__ = ["write_structure_maps", "table1_comparison"]


def table1_comparison(structure_map: StructureMap, class_table: ClassTable = SHREC20_TABLE
                      ) -> dict[str, Any] | None:
    """Table 1 values of the map's class and the ratios ours / Table 1 (None if not tabulated)."""
    if structure_map.name not in class_table:
        return None
    cls = class_table.by_name(structure_map.name)
    metrics = structure_map.metrics
    record: dict[str, Any] = {"weight_kda": cls.weight_kda, "volume_nm3": cls.volume_nm3,
                              "area_nm2": cls.area_nm2, "sphericity": cls.sphericity,
                              "effective_radius_nm": cls.effective_radius_nm}
    if cls.volume_nm3:
        record["volume_ratio"] = metrics.volume_nm3 / cls.volume_nm3
    if cls.area_nm2:
        record["area_ratio"] = metrics.area_nm2 / cls.area_nm2
    if cls.sphericity:
        record["sphericity_difference"] = metrics.sphericity - cls.sphericity
    return record


def write_structure_maps(
    maps: Mapping[str, StructureMap],
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    class_table: ClassTable = SHREC20_TABLE,
) -> list[Path]:
    """Write every map to ``folder/<name>.mrc`` and an index ``folder/structures.json``.

    All targets are checked before anything is written, so a refused overwrite leaves the folder
    as it was. Returns the written paths (maps, then the index).
    """
    from .. import __version__

    folder = Path(folder)
    targets = {name: folder / f"{name}.mrc" for name in maps}
    index_path = folder / STRUCTURES_JSON
    for path in [*targets.values(), index_path]:
        check_overwrite(path, overwrite)
    written: list[Path] = []
    records: dict[str, Any] = {}
    for name, structure_map in maps.items():
        written.append(write_mrc(targets[name], structure_map.potential,
                                 voxel_size_nm=structure_map.voxel_size_nm, overwrite=overwrite))
        provenance = {k: v for k, v in structure_map.provenance.items() if k != "cache"}
        records[name] = {"file": targets[name].name, "units": "V",
                         "voxel_size_nm": structure_map.voxel_size_nm,
                         "shape_zyx": list(structure_map.potential.shape),
                         "surrogate": structure_map.is_surrogate,
                         "metrics": structure_map.metrics.to_dict(),
                         "table1": table1_comparison(structure_map, class_table),
                         "provenance": provenance}
    index = {"napari_shrec_version": __version__, "maps": records}
    written.append(write_text_atomic(index_path, json.dumps(index, indent=1) + "\n",
                                     overwrite=overwrite))
    return written
